"""BPF_PROG_TEST_RUN through Session.test_run and `%bpf run`, and the packet
builders, on the real kernel."""

from __future__ import annotations

import pytest

from bpfmagic.experiments import packets

# ------------------------------------------------------------------ packets


def test_checksum_matches_the_rfc_1071_example():
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (folded); the checksum is its complement.
    assert packets.checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def test_ipv4_header_matches_a_published_example():
    # The worked example of Wikipedia's "IPv4 header checksum": 192.168.0.1 -> 192.168.0.199, UDP, 115 bytes.
    header = packets.ipv4(bytes(115 - 20), "192.168.0.1", "192.168.0.199", packets.IPPROTO_UDP, ttl=64)[:20]
    assert header == bytes.fromhex("4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7")


def test_frames_match_scapy_byte_for_byte():
    import scapy.all as scapy  # a declared test dependency: its absence is a failure

    Ether, IP, IPv6, UDP, TCP, Raw = scapy.Ether, scapy.IP, scapy.IPv6, scapy.UDP, scapy.TCP, scapy.Raw
    macs = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    ip4 = dict(src="10.1.2.3", dst="192.0.2.77", id=0, flags="DF", ttl=64)
    cases = [
        (packets.udp_packet("10.1.2.3", "192.0.2.77", 5353, 53, b"query!"), Ether(**macs) / IP(**ip4) / UDP(sport=5353, dport=53) / Raw(b"query!")),
        (
            packets.udp_packet("10.1.2.3", "192.0.2.77", 1, 2, b"odd"),  # odd length: checksum pads
            Ether(**macs) / IP(**ip4) / UDP(sport=1, dport=2) / Raw(b"odd"),
        ),
        (
            packets.tcp_packet("10.1.2.3", "192.0.2.77", 40000, 443, "SA", b"hello", seq=1000, ack=7),
            Ether(**macs) / IP(**ip4) / TCP(sport=40000, dport=443, flags="SA", seq=1000, ack=7, window=65535) / Raw(b"hello"),
        ),
        (
            packets.udp_packet("fd00::1", "2001:db8::53", 9999, 53, b"v6 payload"),
            Ether(**macs) / IPv6(src="fd00::1", dst="2001:db8::53", hlim=64) / UDP(sport=9999, dport=53) / Raw(b"v6 payload"),
        ),
        (
            packets.tcp_packet("fd00::1", "2001:db8::80", 1234, 80, "PA", b"GET / HTTP/1.0\r\n\r\n"),
            Ether(**macs)
            / IPv6(src="fd00::1", dst="2001:db8::80", hlim=64)
            / TCP(sport=1234, dport=80, flags="PA", window=65535)
            / Raw(b"GET / HTTP/1.0\r\n\r\n"),
        ),
    ]
    for ours, theirs in cases:
        assert ours == bytes(theirs), theirs.summary()


def test_describe_and_hex_parsing():
    frame = packets.tcp_packet("10.0.0.1", "10.0.0.2", 1234, 80, "S")
    assert packets.describe(frame) == "IPv4 10.0.0.1 -> 10.0.0.2 TCP 1234 -> 80 [S] payload 0 bytes"
    assert packets.describe(packets.udp_packet("fd00::1", "fd00::2", 1, 2, b"xyz")) == "IPv6 fd00::1 -> fd00::2 UDP 1 -> 2 payload 3 bytes"
    assert packets.parse_hex("de:ad be-ef") == b"\xde\xad\xbe\xef"
    assert packets.parse_hex("0x4500") == b"\x45\x00"
    with pytest.raises(ValueError):
        packets.udp_packet("10.0.0.1", "fd00::2")
    with pytest.raises(ValueError):
        packets.tcp(flags="SX")
