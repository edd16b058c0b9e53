"""End-to-end: the counters of filter-buffer, filter-rewriter,
filter-dump and filter-replay, exact for crafted traffic, in
query-netfilter-stats.

(filter-mirror's and filter-redirector's are in test_netfilter_stats.py;
their hold counters in test_holds.py; colo-compare's in
test_colo_stats.py.)
"""

import os
import struct
import subprocess
import threading

import pytest

import time

from helpers import (
    BUCKETS, assert_alive, assert_histogram, counters, duration, histogram_bucket, log_lines,
    payload, start_qemu, stat_values, wait_counters,
)
from qemu import (
    TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN, Qemu, frame, poll, read_frame, tcp_frame, udp_frame,
)


def total(frames):
    return (len(frames), sum(map(len, frames)))


# --- filter-buffer -------------------------------------------------------------

# The qtest accelerator's clock stands still: the buffer releases only when
# it is switched off (or deleted). r0 takes what it releases, to out0.
BUFFER_CHAIN = [
    "filter-buffer,id=b0,netdev=n0,queue=tx,interval=1000000",
    "filter-redirector,id=r0,netdev=n0,queue=tx,outdev=out0",
]


HELD_S = 0.2  # 200 ms: bucket 18, [131072, 262144) µs


def test_buffer_holds_then_releases_everything():
    """Held HELD_S, then released: each frame's delay is in HELD_S's bucket."""
    frames = [payload(n, i) for i, n in enumerate([60, 1514, 9000])]
    with start_qemu(BUFFER_CHAIN, ["out0"]) as q:
        sent = time.monotonic()
        for p in frames:
            q.netdev_peer.sendall(frame(p))
        wait_counters(q, "b0", buffered=total(frames))
        queued_by = time.monotonic()
        time.sleep(HELD_S)
        release_at = time.monotonic()
        q.command("qom-set", path="/objects/b0", property="status", value="off")
        released_by = time.monotonic()
        assert counters(q, "b0") == {"released": total(frames), "dropped": (0, 0),
                                     "buffered": (0, 0)}
        buckets, waited = duration(q, "b0", "delay")
        assert_histogram(buckets, waited, len(frames), (release_at - queued_by) * 1e6,
                         (released_by - sent) * 1e6)
        held_bucket = histogram_bucket(HELD_S * 1e6)
        assert buckets == [len(frames) if i == held_bucket else 0 for i in range(BUCKETS)]
        for p in frames:
            assert read_frame(q.socks["out0"])[0] == p
        wait_counters(q, "r0", outdev=total(frames))
        # off, it passes frames on without counting or keeping them
        q.netdev_peer.sendall(frame(payload(100, 9)))
        assert read_frame(q.socks["out0"])[0] == payload(100, 9)
        assert counters(q, "b0")["released"] == total(frames)


def test_buffer_full_queue_drops_and_counts():
    """The buffer's queue takes 10000 packets; what comes after is dropped,
    and counted. Switched off, it releases the 10000 to r0, in order."""
    frames = [payload(60 + i % 7, i) for i in range(10006)]
    with start_qemu(BUFFER_CHAIN, ["out0"]) as q:
        q.netdev_peer.sendall(b"".join(frame(p) for p in frames))
        kept, dropped = frames[:10000], frames[10000:]
        wait_counters(q, "b0", timeout=30, buffered=total(kept), dropped=total(dropped))
        got = []
        reader = threading.Thread(
            target=lambda: got.extend(read_frame(q.socks["out0"])[0] for _ in kept))
        reader.start()
        q.command("qom-set", path="/objects/b0", property="status", value="off")
        reader.join(timeout=60)
        assert got == kept
        assert counters(q, "b0") == {"released": total(kept), "dropped": total(dropped),
                                     "buffered": (0, 0)}


def test_buffer_counts_what_the_receiver_drops_as_dropped():
    """Released to a NIC that cannot receive (no driver): its queue takes
    10000 packets and drops the rest, which count as dropped, not
    released (glue 0045: all 12000 counted as released before)."""
    first = [payload(60 + i % 7, i) for i in range(6000)]
    second = [payload(70 + i % 5, i) for i in range(6000)]
    with start_qemu(["filter-buffer,id=b0,netdev=n0,queue=tx,interval=1000000"]) as q:
        for batch in (first, second):
            q.command("qom-set", path="/objects/b0", property="status", value="on")
            q.netdev_peer.sendall(b"".join(frame(p) for p in batch))
            wait_counters(q, "b0", timeout=30, buffered=total(batch),
                          released=total(first) if batch is second else (0, 0))
            q.command("qom-set", path="/objects/b0", property="status", value="off")
        both = first + second
        assert counters(q, "b0") == {"released": total(both[:10000]),
                                     "dropped": total(both[10000:]), "buffered": (0, 0)}
        # a delay for each frame released, none for those dropped
        buckets, waited = duration(q, "b0", "delay")
        assert_histogram(buckets, waited, 10000)


@pytest.mark.skipif(not (os.geteuid() == 0 and os.path.exists("/dev/net/tun"))
                    and os.environ.get("CI") != "true",
                    reason="a tap device needs root and /dev/net/tun")
def test_buffer_counts_a_raw_packet_whole(tmp_path):
    """virtio-net on a tap netdev carries a vnet header; an announce (a
    RAW packet, a 60-byte RARP frame) has none: buffered counts it whole
    (glue 0045: less the header before)."""
    tap = "qnsraw0"
    subprocess.run(["ip", "link", "del", tap], stderr=subprocess.DEVNULL, check=False)
    subprocess.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], check=True)
    try:
        subprocess.run(["ip", "link", "set", tap, "up"], check=True)
        with start_qemu(["filter-buffer,id=b0,netdev=n0,queue=rx,interval=1000000"],
                        netdev=f"tap:{tap}") as q:
            q.command("announce-self", initial=50, max=550, rounds=1, step=50)
            wait_counters(q, "b0", buffered=(1, 60))
    finally:
        subprocess.run(["ip", "link", "del", tap], check=False)


def test_buffer_deleted_releases_what_it_holds():
    frames = [payload(200, 3), payload(300, 4)]
    with start_qemu(BUFFER_CHAIN, ["out0"]) as q:
        for p in frames:
            q.netdev_peer.sendall(frame(p))
        wait_counters(q, "b0", buffered=total(frames))
        q.command("object-del", id="b0")
        for p in frames:
            assert read_frame(q.socks["out0"])[0] == p
        wait_counters(q, "r0", outdev=total(frames))
        assert [s["name"] for s in q.stats()] == ["r0"]


# --- filter-rewriter -------------------------------------------------------------

def test_rewriter_counts_connections_rewrites_and_closes():
    """rw0 on a COLO secondary's netdev n0 (behind a hub, so that what n0
    sends comes out on hub_peer: a guestless NIC would take nothing). The
    client's ISN is 1000, the primary guest's 7000, this (secondary) guest's
    5000: rw0 shifts the numbers by 5000 - 7000 after the handshake."""
    offset = 5000 - 7000
    with Qemu(netdev="hub", extra_args=["-object", "filter-rewriter,id=rw0,netdev=n0"]) as q:
        def to_guest(f):
            q.netdev_peer.sendall(frame(f))
            return read_frame(q.hub_peer)[0]

        def from_guest(f):
            q.hub_peer.sendall(frame(f))
            return read_frame(q.netdev_peer)[0]

        # handshake: the client's SYN, this guest's SYN+ACK, the client's ACK
        assert to_guest(tcp_frame(TCP_SYN, 1000, 0)) == tcp_frame(TCP_SYN, 1000, 0)
        from_guest(tcp_frame(TCP_SYN | TCP_ACK, 5000, 1001, to_guest=False))
        wait_rewriter(q, connections=1)
        ack = to_guest(tcp_frame(TCP_ACK, 1001, 7001))
        assert seq_ack(ack) == (1001, 7001 + offset)
        data = b"x" * 100
        assert seq_ack(to_guest(tcp_frame(TCP_PSH | TCP_ACK, 1001, 7001, data))) == \
            (1001, 7001 + offset)
        reply = from_guest(tcp_frame(TCP_PSH | TCP_ACK, 5001, 1101, data, to_guest=False))
        assert seq_ack(reply) == (5001 - offset, 1101)
        rewritten = [tcp_frame(TCP_ACK, 1001, 7001), tcp_frame(TCP_ACK, 1001, 7001, data),
                     tcp_frame(TCP_ACK, 5001, 1101, data, to_guest=False)]
        wait_rewriter(q, connections=1, rewritten=total(rewritten))
        # the guest closes (FIN alone), the client answers FIN+ACK (rewritten)
        from_guest(tcp_frame(TCP_FIN, 5101, 0, to_guest=False))
        to_guest(tcp_frame(TCP_FIN | TCP_ACK, 1101, 7102))
        rewritten.append(tcp_frame(TCP_FIN | TCP_ACK, 1101, 7102))
        wait_rewriter(q, connections=0, rewritten=total(rewritten), closed=1)
        # UDP passes untouched and uncounted
        assert to_guest(udp_frame(1234, b"u" * 40)) == udp_frame(1234, b"u" * 40)
        assert from_guest(udp_frame(1234, b"v" * 40)) == udp_frame(1234, b"v" * 40)
        wait_rewriter(q, connections=0, rewritten=total(rewritten), closed=1)
        (s,) = q.stats("rw0")
        assert (s["packets-tx"], s["packets-rx"]) == (5, 4)
        assert log_lines(q) == []


def wait_rewriter(q, connections=0, closed=0, rewritten=(0, 0)):
    """Until rw0's counts are these: rewritten (packets, bytes) in
    query-netfilter-stats, the only counter it has there; connections and
    closed, counts of events, in query-stats alone."""
    wait_counters(q, "rw0", rewritten=rewritten)
    want = {"connections": connections, "closed": closed}
    got = poll(lambda: stat_values(q, "rw0", *want), lambda got: got == want)
    assert got == want


def seq_ack(f):
    """The sequence and acknowledgement numbers of a tcp_frame."""
    return struct.unpack(">II", f[14 + 20 + 4:14 + 20 + 12])


# --- filter-dump -----------------------------------------------------------------

PCAP_HEADER, RECORD_HEADER = 24, 16


def test_dump_counts_written_and_truncated(tmp_path):
    path = tmp_path / "d0.pcap"
    frames = [payload(60, 1), payload(1514, 2), payload(100, 3)]
    chain = [f"filter-dump,id=d0,netdev=n0,file={path},maxlen=100",
             "filter-redirector,id=r0,netdev=n0,queue=tx,outdev=out0"]
    with start_qemu(chain, ["out0"]) as q:
        for p in frames:
            q.netdev_peer.sendall(frame(p))
            assert read_frame(q.socks["out0"])[0] == p
        wait_counters(q, "d0", written=(3, 60 + 100 + 100), truncated=(1, 1414))
        assert path.stat().st_size == PCAP_HEADER + 3 * RECORD_HEADER + 260


def test_dump_write_error_is_counted_logged_once_and_survived(tmp_path):
    """The capture goes into a FIFO whose reader goes away: the write that
    fails and every later packet count in write-errors, one line says why,
    and the netdev's traffic goes on."""
    fifo = tmp_path / "d0.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    chain = ["filter-dump,id=d0,netdev=n0,file=" + str(fifo),
             "filter-redirector,id=r0,netdev=n0,queue=tx,outdev=out0"]
    with start_qemu(chain, ["out0"]) as q:
        q.netdev_peer.sendall(frame(payload(60, 1)))
        assert read_frame(q.socks["out0"])[0] == payload(60, 1)
        wait_counters(q, "d0", written=(1, 60))
        assert len(os.read(reader, 4096)) == PCAP_HEADER + RECORD_HEADER + 60
        os.close(reader)
        lost = [payload(70, 2), payload(80, 3)]
        for p in lost:
            q.netdev_peer.sendall(frame(p))
            assert read_frame(q.socks["out0"])[0] == p
        wait_counters(q, "d0", written=(1, 60), write_errors=total(lost))
        (line,) = log_lines(q)
        assert line.endswith("network dump write error - stopping dump: Broken pipe"), line
        assert_alive(q)


# --- filter-replay ---------------------------------------------------------------

REPLAY_CHAIN = [
    "filter-replay,id=rp0,netdev=n0",
    "filter-redirector,id=r0,netdev=n0,queue=tx,outdev=out0",
]


def test_replay_counts_what_it_passes_on():
    """Outside record/replay, filter-replay passes every packet on, and
    counts it."""
    frames = [payload(n, i) for i, n in enumerate([60, 512, 1514])]
    with start_qemu(REPLAY_CHAIN, ["out0"]) as q:
        for p in frames:
            q.netdev_peer.sendall(frame(p))
        for p in frames:
            assert read_frame(q.socks["out0"])[0] == p
        (s,) = q.stats("rp0")
        assert (s["type"], s["packets-tx"], s["bytes-tx"]) == ("filter-replay",) + total(frames)
        assert (s["packets-rx"], s["bytes-rx"]) == (0, 0)


def test_replay_records_and_counts_under_tcg(tmp_path):
    """Recording (TCG, -icount rr=record), filter-replay takes the netdev's
    packets into the log, counted, and the replay module passes them on
    at their recorded time."""
    frames = [payload(n, i) for i, n in enumerate([60, 512, 1514, 9000])]
    rr = tmp_path / "rr.bin"
    machine = ("-M", "microvm", "-accel", "tcg", "-icount", f"shift=auto,rr=record,rrfile={rr}")
    with start_qemu(REPLAY_CHAIN, ["out0"], machine=machine) as q:
        for p in frames:
            q.netdev_peer.sendall(frame(p))
        s = q.wait_for(lambda st: st["rp0"]["packets-tx"] == len(frames), 30, "rp0")["rp0"]
        assert (s["packets-tx"], s["bytes-tx"]) == total(frames)
        for p in frames:
            assert read_frame(q.socks["out0"])[0] == p
        wait_counters(q, "r0", outdev=total(frames))
        assert_alive(q)
