"""End-to-end: the framed streams that QEMU reads outside filter-redirector,
all through the one framed-input reader of net/framed-input.h: the socket
and stream netdevs, and colo-compare's primary_in and secondary_in. Each
gets hostile input and must log the first problem of a connection, skip
what it can skip, hang up and say why after a length over NET_BUFSIZE, and
read the next connection from a clean state.

Netdev chain: a filter-redirector r0 (queue=tx) steals what the netdev
sends and writes it to out0, so the test reads back exactly the frames the
netdev decoded.
"""

import socket
import struct

import pytest

from helpers import assert_alive, assert_quiet, log_lines, payload, wait_connected
from qemu import Qemu, frame, read_frame, udp_frame, wait_until

MAX_FRAME = 4096 + 65536


def netdev_qemu(kind):
    """QEMU whose netdev n0 (`kind`) sends into r0, which writes to out0."""
    args = ["-object", "filter-redirector,id=r0,netdev=n0,queue=tx,outdev=out0"]
    return Qemu(chardevs=["out0"], extra_args=args, netdev=kind)


def warnings(q, who):
    return [line for line in log_lines(q) if f"warning: {who}" in line]


@pytest.mark.parametrize("kind", ["socket", "stream"])
def test_netdev_skips_an_empty_frame_and_logs_it_once(kind):
    with netdev_qemu(kind) as q:
        out = q.connect_chardev("out0")
        wait_connected(q, "out0")
        good = [payload(60, 1), payload(1514, 2), payload(9000, 3)]
        wire = frame(good[0]) + struct.pack(">I", 0) + frame(good[1]) + struct.pack(">I", 0)
        q.netdev_peer.sendall(wire + frame(good[2]))
        for p in good:
            assert read_frame(out)[0] == p
        assert_quiet(out)
        (w,) = warnings(q, "netdev 'n0'")
        assert w.endswith("warning: netdev 'n0': zero-length frame dropped "
                          "(further problems on this connection are not logged)"), w
        assert_alive(q)


@pytest.mark.parametrize("kind", ["socket", "stream"])
def test_netdev_hangs_up_on_a_length_over_the_maximum(kind):
    with netdev_qemu(kind) as q:
        out = q.connect_chardev("out0")
        wait_connected(q, "out0")
        q.netdev_peer.sendall(frame(payload(100, 4)) + struct.pack(">I", MAX_FRAME + 1) + b"x" * 50)
        assert read_frame(out)[0] == payload(100, 4)
        # QEMU closes its end: the peer reads EOF
        q.netdev_peer.settimeout(10)
        assert q.netdev_peer.recv(1) == b""
        assert_quiet(out)
        (w,) = warnings(q, "netdev 'n0'")
        assert w.endswith(f"warning: netdev 'n0': frame length {MAX_FRAME + 1} is over the "
                          f"maximum {MAX_FRAME}: the rest of the stream is out of step; "
                          "hanging up"), w
        assert_alive(q)


def test_stream_netdev_reads_the_next_connection_from_a_clean_state():
    """A stream netdev that listens takes a new connection after the peer
    hung up inside a frame: the cut-off frame is logged, and the new
    connection's frames all arrive."""
    d = __import__("tempfile").mkdtemp(prefix="qns-e2e-")
    path = f"{d}/n1.sock"
    args = ["-netdev", f"stream,id=n1,server=on,addr.type=unix,addr.path={path}",
            "-device", "virtio-net-device,netdev=n1",
            "-object", "filter-redirector,id=r1,netdev=n1,queue=tx,outdev=out0"]
    with Qemu(chardevs=["out0"], extra_args=args) as q:
        out = q.connect_chardev("out0")
        wait_connected(q, "out0")
        for attempt in range(2):
            peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            wait_until(lambda peer=peer: peer.connect_ex(path) == 0, f"{path} did not accept", 10, 0.05)
            p = payload(700, 10 + attempt)
            peer.sendall(frame(p) + struct.pack(">I", 1000) + b"cut")
            assert read_frame(out)[0] == p
            peer.close()
            wait_until(lambda attempt=attempt: len(warnings(q, "netdev 'n1'")) >= attempt + 1,
                       lambda _: log_lines(q), 10, 0.05)
        # 4 + 1000 bytes announced, 4 + 3 arrived
        assert [w.split("warning: ")[1] for w in warnings(q, "netdev 'n1'")] == \
            ["netdev 'n1': stream ended inside a frame (7 of 1004 bytes)"] * 2
        assert_quiet(out)
        assert_alive(q)


# colo-compare ---------------------------------------------------------------

def compare_qemu():
    args = ["-object", "iothread,id=io0",
            "-object", "colo-compare,id=cc0,primary_in=pri,secondary_in=sec,"
                       "outdev=ccout,iothread=io0"]
    return Qemu(chardevs=["pri", "sec", "ccout"], extra_args=args)


def connect_compare(q):
    socks = {name: q.connect_chardev(name) for name in ("pri", "sec", "ccout")}
    for name in socks:
        wait_connected(q, name)
    return socks


def test_colo_compare_releases_what_both_sides_agree_on():
    with compare_qemu() as q:
        s = connect_compare(q)
        frames = [udp_frame(1000 + i, payload(n, i)) for i, n in enumerate([18, 600, 1400])]
        for f in frames:
            s["pri"].sendall(frame(f))
            s["sec"].sendall(frame(f))
        for f in frames:
            assert read_frame(s["ccout"])[0] == f
        assert_quiet(s["ccout"])
        assert not warnings(q, "colo-compare"), log_lines(q)
        assert_alive(q)


def test_colo_compare_survives_garbage_on_secondary_in():
    """Each connection to secondary_in gets one log line for its first
    problem; after a length over the maximum QEMU hangs up; the next
    connection is read from a clean state, and the pairs it completes are
    released."""
    with compare_qemu() as q:
        s = connect_compare(q)
        hostile = [struct.pack(">I", MAX_FRAME + 1) + b"junk" + frame(b"x" * 60),
                   struct.pack(">I", 0)]
        expected = [f"frame length {MAX_FRAME + 1} is over the maximum {MAX_FRAME}: "
                    "the rest of the stream is out of step; hanging up",
                    "zero-length frame dropped "
                    "(further problems on this connection are only counted)"]
        for n, garbage in enumerate(hostile):
            s["sec"].sendall(garbage)
            wait_until(lambda n=n: len(warnings(q, "colo-compare")) >= n + 1,
                       lambda _: log_lines(q), 10, 0.05)
            if n == 0:
                s["sec"].settimeout(10)
                assert s["sec"].recv(1) == b""      # QEMU hung up
                s["sec"].close()
                wait_connected(q, "sec", connected=False)
                s["sec"] = q.connect_chardev("sec")
                wait_connected(q, "sec")
        f = udp_frame(2000, payload(100, 7))
        s["pri"].sendall(frame(f))
        s["sec"].sendall(frame(f))
        assert read_frame(s["ccout"])[0] == f
        got = [w.split("warning: ")[1] for w in warnings(q, "colo-compare")]
        assert len(got) == 2, got
        assert got == [f"colo-compare 'cc0': secondary_in 'sec': {want}" for want in expected]
        assert_quiet(s["ccout"])
        assert_alive(q)
