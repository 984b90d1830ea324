// IP addresses between text and the raw bytes a knock carries (4 bytes IPv4, 16 bytes IPv6).
//
// The gateway compares a knock's claimed source with the captured packet's source as text, so the
// text must be canonical: dotted quad for IPv4, RFC 5952 for IPv6 (lower-case hex, no leading
// zeros, the first longest run of two or more zero groups as "::", no dotted IPv4 tail).

const IPV4_BYTES = 4;
const IPV6_BYTES = 16;
const IPV6_GROUPS = 8;
const IPV4_MAPPED_PREFIX = Buffer.from('00000000000000000000ffff', 'hex');

const IPV4_OCTET = /^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]\d|\d)$/;
const IPV6_GROUP = /^[0-9a-fA-F]{1,4}$/;

function parseIpv4(text: string, out: Buffer, offset: number): boolean {
  const parts = text.split('.');
  if (parts.length !== IPV4_BYTES) return false;
  for (let i = 0; i < IPV4_BYTES; i++) {
    if (!IPV4_OCTET.test(parts[i]!)) return false;
    out[offset + i] = Number(parts[i]);
  }
  return true;
}

/** Fills `out` with groups from `parts`; a last part may be a dotted IPv4 address worth two groups. */
function parseGroups(parts: string[], out: Buffer, offset: number): number {
  let at = offset;
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    if (i === parts.length - 1 && part.includes('.')) {
      if (at + IPV4_BYTES > IPV6_BYTES || !parseIpv4(part, out, at)) return -1;
      at += IPV4_BYTES;
    } else {
      if (at + 2 > IPV6_BYTES || !IPV6_GROUP.test(part)) return -1;
      out.writeUInt16BE(Number.parseInt(part, 16), at);
      at += 2;
    }
  }
  return at - offset;
}

function parseIpv6(text: string): Buffer | null {
  const out = Buffer.alloc(IPV6_BYTES);
  const halves = text.split('::');
  if (halves.length > 2) return null;
  if (halves.length === 1) {
    return parseGroups(text.split(':'), out, 0) === IPV6_BYTES ? out : null;
  }
  const head = halves[0] === '' ? [] : halves[0]!.split(':');
  const tail = halves[1] === '' ? [] : halves[1]!.split(':');
  // The dotted tail may only end the address, never sit before "::".
  if (head.some((part) => part.includes('.'))) return null;
  const tailBytes = Buffer.alloc(IPV6_BYTES);
  const headLength = parseGroups(head, out, 0);
  const tailLength = parseGroups(tail, tailBytes, 0);
  // "::" stands for at least one zero group.
  if (headLength < 0 || tailLength < 0 || headLength + tailLength > IPV6_BYTES - 2) return null;
  tailBytes.copy(out, IPV6_BYTES - tailLength, 0, tailLength);
  return out;
}

/** 4 bytes for a dotted quad, 16 for IPv6 text; null for anything else (host names, zone ids, prefixes). */
export function ipAddressToBytes(text: string): Buffer | null {
  if (typeof text !== 'string') return null;
  if (!text.includes(':')) {
    const out = Buffer.alloc(IPV4_BYTES);
    return parseIpv4(text, out, 0) ? out : null;
  }
  return parseIpv6(text);
}

/** Canonical text for 4 or 16 address bytes; null for any other length. */
export function ipAddressFromBytes(bytes: Uint8Array): string | null {
  if (bytes.length === IPV4_BYTES) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  if (bytes.length !== IPV6_BYTES) return null;
  const groups: number[] = [];
  for (let i = 0; i < IPV6_GROUPS; i++) groups.push((bytes[2 * i]! << 8) | bytes[2 * i + 1]!);
  let bestStart = -1;
  let bestLength = 1; // RFC 5952 §4.2.2: a single zero group is not shortened
  for (let i = 0; i < IPV6_GROUPS; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let end = i;
    while (end < IPV6_GROUPS && groups[end] === 0) end++;
    if (end - i > bestLength) {
      bestStart = i;
      bestLength = end - i;
    }
    i = end;
  }
  const hex = (from: number, to: number) =>
    groups
      .slice(from, to)
      .map((g) => g.toString(16))
      .join(':');
  if (bestStart < 0) return hex(0, IPV6_GROUPS);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLength, IPV6_GROUPS)}`;
}

/** True for ::ffff:a.b.c.d, an IPv4 address in IPv6 clothing. */
export function isIpv4Mapped(bytes: Uint8Array): boolean {
  return (
    bytes.length === IPV6_BYTES && IPV4_MAPPED_PREFIX.equals(bytes.subarray(0, IPV4_MAPPED_PREFIX.length))
  );
}
