// The "protected service":
//   tcp-server.ts PORT[,PORT...] [--address ::] [--banner TEXT] [--lifetime-ms N]
// Answers every connection with one banner line, then closes it. Prints {"listening":true,...} once
// every port listens and one {"connection":ADDR,"port":N} line per connection. Exits by itself after
// its lifetime (default 10 minutes), or on SIGTERM/SIGINT.

import { createServer, type Server } from 'node:net';
import { emit, fail, intArg, options } from './args.ts';

const USAGE = 'tcp-server.ts PORT[,PORT...] [--address ADDR] [--banner TEXT] [--lifetime-ms N]';
const DEFAULT_LIFETIME_MS = 600_000;
const MAX_LIFETIME_MS = 3_600_000;
const MAX_PORTS = 1024;

const [portsText, ...rest] = process.argv.slice(2);
const portTexts = (portsText ?? '').split(',');
if (portTexts.length > MAX_PORTS) fail(USAGE, `at most ${MAX_PORTS} ports`);
const ports = portTexts.map((text) => intArg(USAGE, 'PORT', text, 0, 65535));
const opts = options(USAGE, rest, ['address', 'banner', 'lifetime-ms']);
const address = opts.get('address') ?? '::';
const banner = opts.get('banner') ?? 'umbra-test-service ready';
const lifetimeMs = intArg(
  USAGE,
  '--lifetime-ms',
  opts.get('lifetime-ms') ?? String(DEFAULT_LIFETIME_MS),
  1,
  MAX_LIFETIME_MS,
);

function listen(port: number): Promise<{ server: Server; port: number }> {
  const server = createServer({ noDelay: true }, (socket) => {
    emit({ connection: socket.remoteAddress, port: socket.localPort });
    socket.on('error', () => socket.destroy());
    socket.end(`${banner}\n`);
  });
  return new Promise((resolve) => {
    server.once('error', (error: NodeJS.ErrnoException) => {
      process.stderr.write(
        `tcp-server: cannot listen on [${address}]:${port}: ${error.code ?? error.message}\n`,
      );
      process.exit(1);
    });
    // '::' with ipv6Only false takes IPv4 connections too, as ::ffff:a.b.c.d.
    server.listen({ host: address, port, ipv6Only: false }, () => {
      const bound = server.address();
      resolve({ server, port: typeof bound === 'object' && bound ? bound.port : port });
    });
  });
}

const servers = await Promise.all(ports.map(listen));
emit({ listening: true, address, ports: servers.map((entry) => entry.port) });

const stop = () => {
  for (const { server } of servers) server.close();
  process.exit(0);
};
setTimeout(stop, lifetimeMs).unref();
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
