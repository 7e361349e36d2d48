"""Packet builders for BPF_PROG_TEST_RUN: Ethernet, IPv4, IPv6, UDP and TCP
frames as plain bytes, with correct lengths and checksums, so nobody has to
hand-craft hex.

Our own small module rather than scapy or dpkt: test_run needs only a few
well-formed frames, and this keeps `import bpfmagic` fast and dependency
free. Anything bytes-like works as test_run data, so a scapy packet can be
passed as ``bytes(pkt)``.

>>> frame = udp_packet("10.0.0.1", "10.0.0.2", sport=1234, dport=53, payload=b"hi")
>>> describe(frame)
'IPv4 10.0.0.1 -> 10.0.0.2 UDP 1234 -> 53 payload 2 bytes'
"""

from __future__ import annotations

import ipaddress
import struct

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_ARP = 0x0806
IPPROTO_TCP = 6
IPPROTO_UDP = 17

DEFAULT_SRC_MAC = "02:00:00:00:00:01"  # locally administered, unicast
DEFAULT_DST_MAC = "02:00:00:00:00:02"

TCP_FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40, "C": 0x80}


def mac(address: str | bytes) -> bytes:
    """'02:00:00:00:00:01' (or '-' separated, or 6 bytes) -> 6 bytes."""
    if isinstance(address, (bytes, bytearray)):
        if len(address) != 6:
            raise ValueError(f"a MAC address has 6 bytes, not {len(address)}")
        return bytes(address)
    parts = address.replace("-", ":").split(":")
    if len(parts) != 6:
        raise ValueError(f"bad MAC address {address!r}: write six hex bytes, e.g. 02:00:00:00:00:01")
    return bytes(int(p, 16) for p in parts)


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's
    complement sum of 16-bit big-endian words, odd length padded with zero."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet(payload: bytes = b"", dst: str | bytes = DEFAULT_DST_MAC, src: str | bytes = DEFAULT_SRC_MAC, ethertype: int = ETH_P_IP) -> bytes:
    """Ethernet II header + payload (no FCS: the kernel never sees one)."""
    return mac(dst) + mac(src) + struct.pack("!H", ethertype) + bytes(payload)


def ipv4(
    payload: bytes = b"",
    src: str = "10.0.0.1",
    dst: str = "10.0.0.2",
    proto: int = IPPROTO_UDP,
    ttl: int = 64,
    ident: int = 0,
    tos: int = 0,
    dont_fragment: bool = True,
) -> bytes:
    """IPv4 header (20 bytes, no options) with its header checksum, + payload."""
    flags_frag = 0x4000 if dont_fragment else 0
    header = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(payload), ident, flags_frag, ttl, proto, 0, _ip4(src), _ip4(dst))
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + bytes(payload)


def ipv6(
    payload: bytes = b"",
    src: str = "fd00::1",
    dst: str = "fd00::2",
    next_header: int = IPPROTO_UDP,
    hop_limit: int = 64,
    traffic_class: int = 0,
    flow_label: int = 0,
) -> bytes:
    """IPv6 header (40 bytes, no extension headers) + payload."""
    first = (6 << 28) | (traffic_class << 20) | flow_label
    return struct.pack("!IHBB16s16s", first, len(payload), next_header, hop_limit, _ip6(src), _ip6(dst)) + bytes(payload)


def udp(payload: bytes = b"", sport: int = 1234, dport: int = 80, src: str | None = None, dst: str | None = None) -> bytes:
    """UDP header + payload. With the IP addresses (src, dst) the checksum is
    filled in (over the pseudo-header); without them it is 0 ("none", IPv4 only)."""
    header = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
    segment = header + bytes(payload)
    if src is not None and dst is not None:
        csum = checksum(_pseudo_header(src, dst, IPPROTO_UDP, len(segment)) + segment)
        segment = segment[:6] + struct.pack("!H", csum or 0xFFFF) + segment[8:]  # 0 means "no checksum"
    return segment


def tcp(
    payload: bytes = b"",
    sport: int = 1234,
    dport: int = 80,
    seq: int = 0,
    ack: int = 0,
    flags: str | int = "S",
    window: int = 65535,
    urgent: int = 0,
    src: str | None = None,
    dst: str | None = None,
) -> bytes:
    """TCP header (20 bytes, no options) + payload; flags as letters ("SA",
    "PA", ...) or an int. With src and dst the checksum is filled in."""
    if isinstance(flags, str):
        unknown = set(flags.upper()) - set(TCP_FLAGS)
        if unknown:
            raise ValueError(f"unknown TCP flag(s) {''.join(sorted(unknown))}; use {''.join(TCP_FLAGS)}")
        flags = sum(TCP_FLAGS[f] for f in set(flags.upper()))
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, window, 0, urgent)
    segment = header + bytes(payload)
    if src is not None and dst is not None:
        csum = checksum(_pseudo_header(src, dst, IPPROTO_TCP, len(segment)) + segment)
        segment = segment[:16] + struct.pack("!H", csum) + segment[18:]
    return segment


def udp_packet(
    src: str = "10.0.0.1",
    dst: str = "10.0.0.2",
    sport: int = 1234,
    dport: int = 80,
    payload: bytes = b"",
    src_mac: str = DEFAULT_SRC_MAC,
    dst_mac: str = DEFAULT_DST_MAC,
    ttl: int = 64,
) -> bytes:
    """A whole Ethernet frame carrying UDP over IPv4, or IPv6 when the addresses are IPv6."""
    segment = udp(payload, sport, dport, src, dst)
    return _frame(segment, src, dst, IPPROTO_UDP, src_mac, dst_mac, ttl)


def tcp_packet(
    src: str = "10.0.0.1",
    dst: str = "10.0.0.2",
    sport: int = 1234,
    dport: int = 80,
    flags: str | int = "S",
    payload: bytes = b"",
    seq: int = 0,
    ack: int = 0,
    src_mac: str = DEFAULT_SRC_MAC,
    dst_mac: str = DEFAULT_DST_MAC,
    ttl: int = 64,
) -> bytes:
    """A whole Ethernet frame carrying TCP over IPv4, or IPv6 when the addresses are IPv6."""
    segment = tcp(payload, sport, dport, seq, ack, flags, src=src, dst=dst)
    return _frame(segment, src, dst, IPPROTO_TCP, src_mac, dst_mac, ttl)


def describe(frame: bytes) -> str:
    """One line saying what an Ethernet frame is, for showing test_run data."""
    frame = bytes(frame)
    if len(frame) < 14:
        return f"{len(frame)} bytes (shorter than an Ethernet header)"
    ethertype = struct.unpack("!H", frame[12:14])[0]
    if ethertype == ETH_P_IP and len(frame) >= 34:
        ihl = (frame[14] & 0x0F) * 4
        proto, src, dst = frame[23], ipaddress.ip_address(frame[26:30]), ipaddress.ip_address(frame[30:34])
        head, l4 = f"IPv4 {src} -> {dst}", frame[14 + ihl :]
    elif ethertype == ETH_P_IPV6 and len(frame) >= 54:
        proto, src, dst = frame[20], ipaddress.ip_address(frame[22:38]), ipaddress.ip_address(frame[38:54])
        head, l4 = f"IPv6 {src} -> {dst}", frame[54:]
    else:
        return f"ethertype 0x{ethertype:04x}, {len(frame)} bytes"
    if proto == IPPROTO_UDP and len(l4) >= 8:
        sport, dport = struct.unpack("!HH", l4[:4])
        return f"{head} UDP {sport} -> {dport} payload {len(l4) - 8} bytes"
    if proto == IPPROTO_TCP and len(l4) >= 20:
        sport, dport = struct.unpack("!HH", l4[:4])
        offset, bits = (l4[12] >> 4) * 4, l4[13]
        flags = "".join(f for f, b in TCP_FLAGS.items() if bits & b) or "-"
        return f"{head} TCP {sport} -> {dport} [{flags}] payload {len(l4) - offset} bytes"
    return f"{head} protocol {proto}"


def parse_hex(text: str) -> bytes:
    """'45 00 00 1c', '4500001c', 'de:ad:be:ef' or '0x4500' -> bytes."""
    cleaned = text.strip()
    if cleaned.lower().startswith("0x"):
        cleaned = cleaned[2:]
    cleaned = "".join(cleaned.replace(":", " ").replace("-", " ").split())
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise ValueError(f"not hex bytes: {text[:60]!r}") from None


# ---------------------------------------------------------------- helpers


def _frame(segment: bytes, src: str, dst: str, proto: int, src_mac, dst_mac, ttl: int) -> bytes:
    if _is_v6(src, dst):
        return ethernet(ipv6(segment, src, dst, proto, hop_limit=ttl), dst_mac, src_mac, ETH_P_IPV6)
    return ethernet(ipv4(segment, src, dst, proto, ttl=ttl), dst_mac, src_mac, ETH_P_IP)


def _is_v6(src: str, dst: str) -> bool:
    versions = {ipaddress.ip_address(src).version, ipaddress.ip_address(dst).version}
    if len(versions) != 1:
        raise ValueError(f"src {src} and dst {dst} are of different IP versions")
    return versions == {6}


def _ip4(address: str) -> bytes:
    return ipaddress.IPv4Address(address).packed


def _ip6(address: str) -> bytes:
    return ipaddress.IPv6Address(address).packed


def _pseudo_header(src: str, dst: str, proto: int, length: int) -> bytes:
    if _is_v6(src, dst):
        return _ip6(src) + _ip6(dst) + struct.pack("!IxxxB", length, proto)
    return _ip4(src) + _ip4(dst) + struct.pack("!xBH", proto, length)
