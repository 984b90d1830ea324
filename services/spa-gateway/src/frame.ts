// Pulls the source address and UDP payload out of a captured frame, without copying.
//
// The capture hands us one reused buffer per packet, so this returns views into it: the caller
// must finish with them (or copy) before the next packet arrives. Anything that is not a plain
// IPv4/IPv6 UDP datagram — fragments, IPv6 extension headers, truncated captures — is dropped:
// a knock is one small datagram and never needs them. So is a source no real sender can have
// (unspecified, loopback, multicast, broadcast, IPv4-mapped IPv6): the kernel would drop such a
// packet, but the capture sees it first, and a pinhole must never be opened for a forged address.

import { ipAddressFromBytes } from '@umbra/protocol';

export type LinkType = 'ethernet' | 'linux-sll' | 'raw';

export interface Datagram {
  /** Source address as text (dotted quad or RFC 5952 IPv6). */
  source: string;
  family: 4 | 6;
  /** The UDP payload, a view into the capture buffer. */
  payload: Buffer;
  /** When the kernel received it (ms since the epoch), if the capture knows. */
  receivedAtMs?: number;
}

const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_IPV6 = 0x86dd;
const ETHERTYPE_VLAN = 0x8100;
const ETHERTYPE_QINQ = 0x88a8;
const ETHERNET_HEADER = 14;
const VLAN_TAG = 4;
const SLL_HEADER = 16;
const IPPROTO_UDP = 17;
const UDP_HEADER = 8;
const IPV6_HEADER = 40;

/** Offset of the IP header and its ethertype, or -1 when the frame carries no IP. */
function networkOffset(frame: Buffer, length: number, link: LinkType): number {
  if (link === 'raw') return 0;
  let offset: number;
  let type: number;
  if (link === 'ethernet') {
    if (length < ETHERNET_HEADER) return -1;
    type = frame.readUInt16BE(12);
    offset = ETHERNET_HEADER;
    // At most two tags (802.1ad outer, 802.1Q inner); a deeper stack is not a knock.
    for (let tags = 0; (type === ETHERTYPE_VLAN || type === ETHERTYPE_QINQ) && tags < 2; tags++) {
      if (length < offset + VLAN_TAG) return -1;
      type = frame.readUInt16BE(offset + 2);
      offset += VLAN_TAG;
    }
  } else {
    if (length < SLL_HEADER) return -1;
    type = frame.readUInt16BE(14);
    offset = SLL_HEADER;
  }
  return type === ETHERTYPE_IPV4 || type === ETHERTYPE_IPV6 ? offset : -1;
}

export function parseDatagram(frame: Buffer, length: number, link: LinkType): Datagram | null {
  const ip = networkOffset(frame, length, link);
  if (ip < 0 || length < ip + 1) return null;
  const version = frame[ip]! >> 4;
  if (version === 4) {
    if (length < ip + 20) return null;
    const headerLength = (frame[ip]! & 0x0f) * 4;
    const totalLength = frame.readUInt16BE(ip + 2);
    const fragment = frame.readUInt16BE(ip + 6) & 0x3fff; // MF flag or a fragment offset
    if (headerLength < 20 || fragment !== 0 || frame[ip + 9] !== IPPROTO_UDP) return null;
    if (!isUsableIpv4Source(frame, ip + 12)) return null;
    const udp = ip + headerLength;
    const end = Math.min(ip + totalLength, length);
    if (end < udp + UDP_HEADER) return null;
    const udpLength = frame.readUInt16BE(udp + 4);
    if (udpLength < UDP_HEADER || udp + udpLength > end) return null;
    return {
      family: 4,
      source: `${frame[ip + 12]}.${frame[ip + 13]}.${frame[ip + 14]}.${frame[ip + 15]}`,
      payload: frame.subarray(udp + UDP_HEADER, udp + udpLength),
    };
  }
  if (version === 6) {
    if (length < ip + IPV6_HEADER || frame[ip + 6] !== IPPROTO_UDP) return null;
    if (!isUsableIpv6Source(frame, ip + 8)) return null;
    const udp = ip + IPV6_HEADER;
    const end = Math.min(udp + frame.readUInt16BE(ip + 4), length);
    if (end < udp + UDP_HEADER) return null;
    const udpLength = frame.readUInt16BE(udp + 4);
    if (udpLength < UDP_HEADER || udp + udpLength > end) return null;
    return {
      family: 6,
      source: ipAddressFromBytes(frame.subarray(ip + 8, ip + 24))!,
      payload: frame.subarray(udp + UDP_HEADER, udp + udpLength),
    };
  }
  return null;
}

/** Not 0.0.0.0/8, 127.0.0.0/8, multicast or reserved (224.0.0.0/3, broadcast included). */
function isUsableIpv4Source(frame: Buffer, at: number): boolean {
  const first = frame[at]!;
  return first !== 0 && first !== 127 && first < 224;
}

/** Not ::, ::1, ::ffff:0:0/96 (mapped IPv4) or ff00::/8 (multicast). */
function isUsableIpv6Source(frame: Buffer, at: number): boolean {
  if (frame[at] === 0xff) return false;
  for (let i = 0; i < 10; i++) if (frame[at + i] !== 0) return true;
  // The first 80 bits are zero: ::, ::1 and ::ffff:a.b.c.d all live here, and no real host does.
  return false;
}
