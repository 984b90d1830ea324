// TCP from inside a network namespace, for the firewall's packet test.
//   node tcp-probe.ts listen PORT...            listens on every address; prints "listening"
//   node tcp-probe.ts echo PORT...              the same, echoing what it reads
//   node tcp-probe.ts connect HOST PORT MS      prints {"outcome":"connected"|"timeout"|"refused"|...}
//   node tcp-probe.ts session HOST PORT MS      connects to an echo port, prints "echoing" after
//                                               the first echo, then pings every 50 ms until an
//                                               echo takes longer than MS: prints {"outcome":"stalled"}
// A dropped SYN shows as "timeout"; "refused" would mean something answered with a reset.

import { connect, createServer } from 'node:net';

const [mode, ...args] = process.argv.slice(2);

if (mode === 'listen' || mode === 'echo') {
  let pending = args.length;
  for (const port of args) {
    createServer((socket) => {
      if (mode === 'listen') socket.end();
      else socket.on('error', () => socket.destroy()).pipe(socket);
    }).listen({ port: Number(port), host: '::' }, () => {
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
} else if (mode === 'session') {
  const [host, port, ms] = args;
  const socket = connect({ host: host ?? '', port: Number(port) });
  let echoes = 0;
  let deadline: NodeJS.Timeout | undefined;
  const finish = (outcome: string) => {
    process.stdout.write(`${JSON.stringify({ outcome, echoes })}\n`);
    socket.destroy();
    process.exit(0);
  };
  const ping = () => {
    socket.write('x');
    deadline = setTimeout(() => finish('stalled'), Number(ms));
  };
  socket.on('connect', ping);
  socket.on('data', () => {
    clearTimeout(deadline);
    if (echoes++ === 0) process.stdout.write('echoing\n');
    setTimeout(ping, 50);
  });
  socket.on('error', (error: NodeJS.ErrnoException) => finish(error.code ?? 'error'));
  process.stdin.on('end', () => process.exit(0)).resume();
} else {
  process.stderr.write(
    'usage: tcp-probe.ts listen PORT... | echo PORT... | connect HOST PORT TIMEOUT_MS | session HOST PORT TIMEOUT_MS\n',
  );
  process.exit(2);
}
