// udp-sender ADDRESS PORT: sends each line of stdin (hex) as one UDP datagram to ADDRESS:PORT,
// printing {"sent":N,"atEpochMs":T} per datagram. A long-lived sender inside a namespace, so a
// benchmark can send knocks on a schedule without paying a process start for each.
import { createSocket } from 'node:dgram';
import { isIP } from 'node:net';
import { createInterface } from 'node:readline';
import { emit, epochMs, fail, intArg } from './args.ts';

const USAGE = 'udp-sender.ts ADDRESS PORT  (hex datagrams on stdin, one per line)';
const [address, portText] = process.argv.slice(2);
if (!address || !isIP(address)) fail(USAGE, 'ADDRESS must be an IP address');
const port = intArg(USAGE, 'PORT', portText, 1, 65535);
const socket = createSocket(isIP(address) === 6 ? 'udp6' : 'udp4');
let sent = 0;
const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const bytes = Buffer.from(line.trim(), 'hex');
  if (bytes.length === 0) return;
  socket.send(bytes, port, address, (error) => {
    if (error) process.stderr.write(`udp-sender: ${error.message}\n`);
    else emit({ sent: ++sent, atEpochMs: epochMs() });
  });
});
lines.on('close', () => socket.close());
emit({ ready: true });
