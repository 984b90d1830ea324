// TCP from inside a network namespace, for the firewall's packet test.
//   node tcp-probe.ts listen PORT...            listens on every address; prints "listening"
//   node tcp-probe.ts connect HOST PORT MS      prints {"outcome":"connected"|"timeout"|"refused"|...}
// A dropped SYN shows as "timeout"; "refused" would mean something answered with a reset.

import { connect, createServer } from 'node:net';

const [mode, ...args] = process.argv.slice(2);

if (mode === 'listen') {
  let pending = args.length;
  for (const port of args) {
    createServer((socket) => socket.end()).listen({ port: Number(port), host: '::' }, () => {
      if (--pending === 0) process.stdout.write('listening\n');
    });
  }
  // The test kills this process; stdin closing covers a test that dies first.
  process.stdin.on('end', () => process.exit(0)).resume();
} else if (mode === 'connect') {
  const [host, port, ms] = args;
  const socket = connect({ host: host ?? '', port: Number(port) });
  const finish = (outcome: string) => {
    process.stdout.write(`${JSON.stringify({ outcome })}\n`);
    socket.destroy();
    process.exit(0);
  };
  socket.setTimeout(Number(ms), () => finish('timeout'));
  socket.on('connect', () => finish('connected'));
  socket.on('error', (error: NodeJS.ErrnoException) =>
    finish(error.code === 'ECONNREFUSED' ? 'refused' : (error.code ?? 'error')),
  );
} else {
  process.stderr.write('usage: tcp-probe.ts listen PORT... | connect HOST PORT TIMEOUT_MS\n');
  process.exit(2);
}
