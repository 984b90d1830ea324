import { parseTpmAddress, type TpmAddress, type Transport } from './transport.ts';
import { DeviceTransport } from './transports/device.ts';
import { SwtpmTransport } from './transports/swtpm.ts';

/** A transport for `device:/dev/tpmrm0`, `swtpm:HOST:PORT` or `swtpm-unix:PATH` (or a parsed address). */
export function openTransport(address: string | TpmAddress): Transport {
  const a = typeof address === 'string' ? parseTpmAddress(address) : address;
  switch (a.kind) {
    case 'device':
      return new DeviceTransport(a.path);
    case 'swtpm':
      return new SwtpmTransport({ host: a.host, port: a.port });
    case 'swtpm-unix':
      return new SwtpmTransport({ path: a.path });
  }
}
