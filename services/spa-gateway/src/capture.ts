// Where knocks come from. The gateway never opens a socket on the SPA port: it watches the wire
// with libpcap, which sees packets before the firewall drops them, so the port stays invisible.
// A Linux implementation over the `pcap` addon and an in-memory one for tests share one interface,
// as node-serialport's bindings do.

import { createRequire } from 'node:module';
import { type Datagram, type LinkType, parseDatagram } from './frame.ts';

export type DatagramHandler = (datagram: Datagram) => void;

export interface KnockCapture {
  /** Calls `onDatagram` for each UDP datagram to the SPA port. The payload is only valid during the call. */
  start(onDatagram: DatagramHandler): void;
  close(): void;
  /** Packets the kernel dropped because we did not read fast enough (libpcap's ps_drop). */
  dropped(): number;
}

/** Enough for the largest knock (512 bytes) behind Ethernet, two VLAN tags and an IPv6 header. */
const SNAP_LENGTH = 14 + 8 + 40 + 8 + 512 + 64;
/**
 * The kernel ring that absorbs bursts while a knock is being verified. It is resident memory
 * (mapped into the process), so it is sized to the budget: 4 MiB holds ~5,000 frames, 50 ms of a
 * 100k packets/s flood — fifty times the ~1 ms a knock takes on a cold CPU.
 */
const BUFFER_BYTES = 4 * 1024 * 1024;

export interface PcapCaptureOptions {
  interface: string;
  port: number;
  /** Told about anything that went wrong handling one packet; the capture goes on. */
  onError?: (error: unknown) => void;
}

interface PcapSession {
  link_type: string;
  on(event: 'packet', listener: (packet: { buf: Buffer; header: Buffer }) => void): void;
  close(): void;
  stats(): { ps_recv: number; ps_drop: number; ps_ifdrop: number };
}

export class PcapCapture implements KnockCapture {
  private session: PcapSession | null = null;
  private readonly options: PcapCaptureOptions;

  constructor(options: PcapCaptureOptions) {
    this.options = options;
  }

  private onError(error: unknown): void {
    try {
      this.options.onError?.(error);
    } catch {
      // Reporting failed too; dropping the packet is all that is left.
    }
  }

  /**
   * The BPF program: the kernel hands us nothing but UDP to the SPA port. Not restricted with
   * `inbound`: with it, libpcap 1.10 missed the first IPv4 knock from a new neighbour in our tests,
   * and the gateway never sends to the SPA port itself, so there is nothing outbound to exclude.
   */
  static filterFor(port: number): string {
    return `udp dst port ${port}`;
  }

  start(onDatagram: DatagramHandler): void {
    const pcap = loadPcap();
    const session = pcap.createSession(this.options.interface, {
      filter: PcapCapture.filterFor(this.options.port),
      snap_length: SNAP_LENGTH,
      buffer_size: BUFFER_BYTES,
      // Immediate mode: libpcap's default 1000 ms buffer timeout added a median 582 ms per knock.
      buffer_timeout: 0,
      promiscuous: false,
    }) as PcapSession;
    const link = linkTypeOf(session.link_type, this.options.interface);
    session.on('packet', (packet) => {
      // A throw here would reach node-pcap's FatalException and end the process: never let one out.
      try {
        const header = packet.header;
        const length = Math.min(header.readUInt32LE(8), packet.buf.length);
        const datagram = parseDatagram(packet.buf, length, link);
        if (!datagram) return;
        // The kernel's receive timestamp: lets the log say how long a knock took to become a pinhole.
        datagram.receivedAtMs = header.readUInt32LE(0) * 1000 + header.readUInt32LE(4) / 1000;
        onDatagram(datagram);
      } catch (error) {
        this.onError(error);
      }
    });
    this.session = session;
  }

  dropped(): number {
    if (!this.session) return 0;
    const stats = this.session.stats();
    return stats.ps_drop + stats.ps_ifdrop;
  }

  close(): void {
    this.session?.close();
    this.session = null;
  }
}

function linkTypeOf(name: string, iface: string): LinkType {
  switch (name) {
    case 'LINKTYPE_ETHERNET':
      return 'ethernet';
    case 'LINKTYPE_LINUX_SLL':
      return 'linux-sll';
    case 'LINKTYPE_RAW':
      return 'raw';
    default:
      throw new Error(`interface ${iface}: link type ${name} is not supported; use an Ethernet interface`);
  }
}

interface PcapModule {
  createSession(device: string, options: object): unknown;
}

let pcapModule: PcapModule | null = null;

/** Loads the addon lazily so `keygen` and `pinholes` work on a box without libpcap. */
export function loadPcap(): PcapModule {
  if (pcapModule) return pcapModule;
  try {
    pcapModule = createRequire(import.meta.url)('pcap') as PcapModule;
  } catch (error) {
    throw new Error(
      `cannot load libpcap (${(error as Error).message.split('\n')[0]}): install Debian's libpcap0.8 and rebuild with scripts/setup.sh`,
    );
  }
  return pcapModule;
}

/** Test double: datagrams are injected by the test. */
export class MemoryCapture implements KnockCapture {
  private handler: DatagramHandler | null = null;

  start(onDatagram: DatagramHandler): void {
    this.handler = onDatagram;
  }

  inject(source: string, payload: Uint8Array): void {
    if (!this.handler) throw new Error('MemoryCapture: inject before start');
    const family = source.includes(':') ? 6 : 4;
    this.handler({ source, family, payload: Buffer.from(payload) });
  }

  dropped(): number {
    return 0;
  }

  close(): void {
    this.handler = null;
  }
}
