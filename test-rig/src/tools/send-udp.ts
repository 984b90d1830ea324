// send-udp ADDRESS PORT HEX: sends HEX as one UDP datagram and exits. Used to replay captured knocks.
import { createSocket } from 'node:dgram';
import { isIP } from 'node:net';

const [address, port, hex] = process.argv.slice(2);
if (!address || !port || !hex || !isIP(address)) {
  process.stderr.write('usage: send-udp ADDRESS PORT HEX\n');
  process.exit(2);
}
const socket = createSocket(isIP(address) === 6 ? 'udp6' : 'udp4');
socket.send(Buffer.from(hex, 'hex'), Number(port), address, (error) => {
  socket.close();
  if (error) {
    process.stderr.write(`send-udp: ${error.message}\n`);
    process.exitCode = 1;
  }
});
