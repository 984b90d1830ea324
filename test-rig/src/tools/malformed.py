#!/usr/bin/env python3
"""malformed.py ADDRESS: sends the packets a kernel answers with an ICMP error before any firewall
input hook sees them — an IPv4 header with a broken option (ICMP parameter problem) and an IPv6
hop-by-hop header with an unknown option whose type says "send ICMP" (0x80) — one of each, to
prove the gateway's output chain keeps it silent. Raw sockets need root; Node has none, hence Python.
"""
import socket
import struct
import sys


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def source_for(destination: str) -> str:
    probe = socket.socket(socket.AF_INET6 if ":" in destination else socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect((destination, 9))
    address = probe.getsockname()[0]
    probe.close()
    return address


def ipv4_bad_option(destination: str) -> None:
    source = socket.inet_aton(source_for(destination))
    target = socket.inet_aton(destination)
    # Option 0x44 (timestamp) with a length of 2: shorter than its own header, so invalid.
    options = bytes([0x44, 0x02, 0x00, 0x00])
    udp = struct.pack("!HHHH", 40000, 9, 8, 0)
    header_length = 20 + len(options)
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | header_length // 4, 0, header_length + len(udp), 0x1234, 0, 64,
                         socket.IPPROTO_UDP, 0, source, target) + options
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    raw.sendto(header + udp, (destination, 0))
    raw.close()


def ipv6_unknown_hop_by_hop(destination: str) -> None:
    # A UDP datagram carrying a hop-by-hop header (sticky IPV6_HOPOPTS; needs CAP_NET_RAW) with
    # option type 0x80: "unknown: discard the packet and send an ICMP parameter problem".
    hop_by_hop = bytes([0, 0, 0x80, 4, 0, 0, 0, 0])  # the kernel fills in the next-header byte
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_HOPOPTS, hop_by_hop)
    udp.sendto(b"x" * 8, (destination, 9))
    udp.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: malformed.py ADDRESS")
    address = sys.argv[1]
    if ":" in address:
        ipv6_unknown_hop_by_hop(address)
    else:
        ipv4_bad_option(address)
