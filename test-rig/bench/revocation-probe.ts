// A live PostgreSQL session through `umbra connect`, for the revocation benchmark (revocation.ts runs
// it in the client host). It speaks just enough of PostgreSQL's protocol to log in (the backend
// trusts the gateway) and to run `select 1` every QUERY_INTERVAL_MS, so the session is provably live
// up to the revocation; and it notes, to the microsecond, when the connection was closed under it.
//
// Stdin, one JSON object a line:  {"open":ID,"port":PORT}
// Stdout:  {"opened":ID,"ms":T}  {"closed":ID,"at":EPOCH_MS,"queries":N,"how":"end"|"error"}
//          {"failed":ID,"error":TEXT}
// Bounded: every session ends by itself after SESSION_LIMIT_MS; the probe exits when stdin closes.

import { connect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';

const QUERY_INTERVAL_MS = 100;
const LOGIN_TIMEOUT_MS = 15_000;
const SESSION_LIMIT_MS = 60_000;
const PROTOCOL_3_0 = 196_608;

const epochMs = () => performance.timeOrigin + performance.now();
const emit = (value: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(value)}\n`);

function startupMessage(): Buffer {
  const params = Buffer.from('user\0postgres\0database\0postgres\0\0');
  const message = Buffer.alloc(8 + params.length);
  message.writeInt32BE(message.length, 0);
  message.writeInt32BE(PROTOCOL_3_0, 4);
  params.copy(message, 8);
  return message;
}

function query(sql: string): Buffer {
  const text = Buffer.from(`${sql}\0`);
  const message = Buffer.alloc(5 + text.length);
  message.write('Q', 0);
  message.writeInt32BE(4 + text.length, 1);
  text.copy(message, 5);
  return message;
}

const SELECT_1 = query('select 1');

function session(id: number, port: number): void {
  const started = performance.now();
  const socket: Socket = connect({ host: '127.0.0.1', port });
  socket.setNoDelay(true);
  let buffered = Buffer.alloc(0);
  let ready = 0;
  let answered = 0;
  let done = false;
  let ticker: NodeJS.Timeout | undefined;
  const login = setTimeout(() => fail('no ReadyForQuery within 15 s'), LOGIN_TIMEOUT_MS);
  const limit = setTimeout(() => socket.destroy(), SESSION_LIMIT_MS);
  const finish = (how: 'end' | 'error') => {
    if (done) return;
    done = true;
    const at = epochMs();
    clearTimeout(login);
    clearTimeout(limit);
    clearInterval(ticker);
    if (ready === 0) emit({ failed: id, error: `closed (${how}) before the login completed` });
    else emit({ closed: id, at, queries: answered, how });
    socket.destroy();
  };
  function fail(error: string) {
    if (done) return;
    done = true;
    clearTimeout(login);
    clearTimeout(limit);
    clearInterval(ticker);
    emit({ failed: id, error });
    socket.destroy();
  }
  socket.on('connect', () => socket.write(startupMessage()));
  socket.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 5) {
      const length = buffered.readInt32BE(1);
      if (buffered.length < 1 + length) break;
      const type = String.fromCharCode(buffered[0]!);
      const body = buffered.subarray(5, 1 + length);
      buffered = buffered.subarray(1 + length);
      if (type === 'E') return fail(`PostgreSQL error: ${body.toString('utf8').replace(/\0/g, ' ').trim()}`);
      if (type !== 'Z') continue;
      ready++;
      if (ready === 1) {
        clearTimeout(login);
        emit({ opened: id, ms: Math.round(performance.now() - started) });
        ticker = setInterval(() => socket.writable && socket.write(SELECT_1), QUERY_INTERVAL_MS);
      } else answered++;
    }
  });
  // The server's side closing shows as 'end' (FIN) or an error (RST); either is the cut.
  socket.on('end', () => finish('end'));
  socket.on('error', () => finish('error'));
  socket.on('close', () => finish('end'));
}

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  try {
    const command = JSON.parse(line) as { open: number; port: number };
    session(command.open, command.port);
  } catch (error) {
    emit({ failed: -1, error: (error as Error).message });
  }
});
lines.on('close', () => process.exit(0));
