"""End-to-end: hostile input on a filter-redirector's indev, and faults on its
outdev, against the live patched QEMU.

Indev tests use this chain on netdev n0 (a socket netdev; the test holds the
other end, "the wire"), in filter order:

    d0  filter-dump        queue=rx              counts what r1 injects
    r1  filter-redirector  queue=rx  indev=in1   injects frames n0 receives

Frames the decoder accepts walk the rx chain backwards (d0 counts them) and
come out on the wire, so every test checks exactly which frames got through,
in order, and that nothing else did. For each hostile input the tests check
that QEMU stays up and answers QMP, the exact `indev` and `indev-errors`
counters, exactly one warning line per connection (with the filter id, the
indev and what was wrong), and that a peer that reconnects is read from a
clean state. Each hostile input is sent on two connections in a row (the
warning is logged once per connection, so twice), then a third, clean
connection must get its frames through.

Outdev tests use a filter-redirector r0 with queue=tx and outdev=out0: what
the wire sends into n0 is stolen by r0 and written to out0.
"""

import errno
import os
import random
import re
import struct
import threading
import time

import pytest

from helpers import (
    STALL_FRAMES, assert_alive, assert_quiet, drain_and_check, drain_outdev, log_lines,
    payload, r0_tx, stall_outdev, start_outdev, wait_connected, wait_counters, wait_tx,
)
from qemu import Qemu, frame, read_frame

MAX_FRAME = 4096 + 65536  # NET_BUFSIZE: the largest frame the decoder accepts
WARN_RE = re.compile(r"^[^:]+: warning: filter-redirector 'r1': indev 'in1': (.*)$")
VNET_IDS = ["vnet_hdr=off", "vnet_hdr=on"]


def header_len(vnet):
    return 8 if vnet else 4


def vframe(p, vnet, vnet_hdr_len=0):
    """A frame as the redirector reads it (vnet header length field if on)."""
    return frame(p, vnet_hdr_len if vnet else None)


# --- reasons, exactly as the decoder words them ----------------------------

def too_large(length):
    return f"frame length {length} is over the maximum {MAX_FRAME}: the rest of the stream is out of step"


def vnet_too_large(vnet_hdr_len, length):
    return f"vnet header length {vnet_hdr_len} is larger than the {length}-byte frame; frame dropped"


EMPTY = "zero-length frame dropped"


def truncated(received, expected=None):
    if expected is None:
        return f"stream ended inside a frame header ({received} bytes)"
    return f"stream ended inside a frame ({received} of {expected} bytes)"


# --- and how each is logged (net/framed-input.h): the first problem of a
# connection, with what happens to the next ones; a hang-up, always; a frame
# cut off by the peer's end, as it is.

def first(reason):
    return f"{reason} (further problems on this connection are only counted)"


def hang_up(reason):
    return f"{reason}; hanging up"


def assert_hung_up(conn):
    """QEMU closed its end of `conn`: the peer reads EOF."""
    conn.settimeout(10)
    assert conn.recv(1) == b""


# --- helpers ---------------------------------------------------------------

def start_indev(tmp_path, vnet):
    v = "on" if vnet else "off"
    return Qemu(
        chardevs=["in1"],
        extra_args=[
            "-object", f"filter-dump,id=d0,netdev=n0,queue=rx,file={tmp_path}/d0.pcap",
            "-object", f"filter-redirector,id=r1,netdev=n0,queue=rx,indev=in1,vnet_hdr_support={v}",
        ],
    )


def expect_on_wire(q, payloads):
    """The frames that come out on the wire are exactly `payloads`, in order."""
    for i, p in enumerate(payloads):
        got, _ = read_frame(q.netdev_peer, timeout=5.0)
        assert got == p, f"frame {i} on the wire: {len(got)} bytes, expected {len(p)}"
    assert_quiet(q.netdev_peer)


def indev_reasons(q):
    """r1's warnings, without their prefix, in order; QEMU logged nothing else."""
    reasons = []
    for line in log_lines(q):
        m = WARN_RE.match(line)
        assert m, f"unexpected log line: {line!r}"
        reasons.append(m.group(1))
    return reasons


class Indev:
    """What r1 should have done so far: every frame it passed on, in order,
    and its indev-errors counter."""

    def __init__(self, q, vnet):
        self.q, self.vnet = q, vnet
        self.frames, self.errors = [], (0, 0)

    def check(self, new_frames=(), new_errors=(0, 0)):
        """`new_frames` (and nothing else) come out on the wire; r1's
        counters are exact (indev: every frame so far; indev-errors: grown by
        `new_errors`), d0 saw the same frames, and QEMU answers QMP."""
        q = self.q
        expect_on_wire(q, new_frames)
        self.frames += new_frames
        self.errors = (self.errors[0] + new_errors[0], self.errors[1] + new_errors[1])
        indev = (len(self.frames), sum(map(len, self.frames)))
        wait_counters(q, "r1", indev=indev, indev_errors=self.errors)
        (d0,) = q.stats("d0")
        assert (d0["packets-rx"], d0["bytes-rx"]) == indev
        assert_alive(q)

    def clean_connection(self, seed=200):
        """A new connection after hostile ones: read from a clean state (its
        first bytes are a frame header), every frame counted, no warning."""
        warnings_before = indev_reasons(self.q)
        good = [payload(n, seed + i) for i, n in enumerate([60, 1514, 9000])]
        with self.q.connect_chardev("in1") as conn:
            conn.sendall(b"".join(vframe(p, self.vnet, 12 if self.vnet else 0) for p in good))
            self.check(good)
        self.check()
        assert indev_reasons(self.q) == warnings_before


# --- (1) a length over the maximum -----------------------------------------

@pytest.mark.parametrize("vnet", [False, True], ids=VNET_IDS)
def test_length_over_maximum_hangs_up(tmp_path, vnet):
    hl = header_len(vnet)
    with start_indev(tmp_path, vnet) as q:
        r1 = Indev(q, vnet)
        # Connection 1: a frame, the largest frame accepted, then a length one
        # over the maximum. The frame after it looks valid but the stream is
        # out of step: QEMU hangs up, and counts what it read of the rest
        # (sent in one write, so read at once).
        a, biggest = payload(100, 1), payload(MAX_FRAME, 2)
        after = vframe(payload(50, 3), vnet)
        bad = struct.pack(">I", MAX_FRAME + 1) + (b"\0" * 4 if vnet else b"")
        with q.connect_chardev("in1") as conn:
            conn.sendall(vframe(a, vnet) + vframe(biggest, vnet))
            r1.check([a, biggest])
            conn.sendall(bad + b"\xaa" * 200 + after)
            assert_hung_up(conn)
            r1.check([], (1, hl + 200 + len(after)))
        assert indev_reasons(q) == [hang_up(too_large(MAX_FRAME + 1))]

        # Connection 2: the largest length field there is, first thing.
        with q.connect_chardev("in1") as conn:
            conn.sendall(b"\xff" * hl + vframe(payload(10, 5), vnet))
            assert_hung_up(conn)
            r1.check([], (1, hl + hl + 10))
        assert indev_reasons(q) == [hang_up(too_large(MAX_FRAME + 1)),
                                    hang_up(too_large(0xFFFFFFFF))]

        r1.clean_connection()


# --- (2) vnet header length larger than the frame --------------------------

def test_vnet_header_longer_than_frame_drops_only_that_frame(tmp_path):
    with start_indev(tmp_path, True) as q:
        r1 = Indev(q, True)
        f1, f2, f3, f4 = (payload(n, 10 + i) for i, n in enumerate([100, 80, 50, 1514]))
        with q.connect_chardev("in1") as conn:
            conn.sendall(
                vframe(f1, True, 12)
                + vframe(payload(100, 20), True, 200)        # dropped
                + vframe(f2, True, 0)
                + vframe(payload(60, 21), True, 0xFFFFFFFF)  # dropped
                + vframe(f3, True, 50)                       # header == frame: accepted
                + vframe(payload(100, 22), True, 101)        # dropped
                + vframe(f4, True, 12)
            )
            r1.check([f1, f2, f3, f4], (3, (8 + 100) + (8 + 60) + (8 + 100)))
        r1.check()
        assert indev_reasons(q) == [first(vnet_too_large(200, 100))]

        # Connection 2: a large one, rejected while it is still arriving in
        # several reads, then a frame that gets through.
        f5 = payload(70, 30)
        with q.connect_chardev("in1") as conn:
            conn.sendall(vframe(payload(9000, 31), True, 9001) + vframe(f5, True, 12))
            r1.check([f5], (1, 8 + 9000))
        r1.check()
        assert indev_reasons(q) == [first(vnet_too_large(200, 100)),
                                    first(vnet_too_large(9001, 9000))]

        r1.clean_connection()


# --- (3) zero-length frames ------------------------------------------------

@pytest.mark.parametrize("vnet", [False, True], ids=VNET_IDS)
def test_zero_length_frames_one_warning_n_errors(tmp_path, vnet):
    hl = header_len(vnet)
    empty = vframe(b"", vnet)
    with start_indev(tmp_path, vnet) as q:
        r1 = Indev(q, vnet)
        f1, f2 = payload(64, 40), payload(128, 41)
        with q.connect_chardev("in1") as conn:
            conn.sendall(vframe(f1, vnet) + empty * 5 + vframe(f2, vnet))
            r1.check([f1, f2], (5, 5 * hl))
        r1.check()
        assert indev_reasons(q) == [first(EMPTY)]

        f3 = payload(200, 42)
        with q.connect_chardev("in1") as conn:
            conn.sendall(empty * 3 + vframe(f3, vnet) + empty)
            r1.check([f3], (4, 4 * hl))
        r1.check()
        assert indev_reasons(q) == [first(EMPTY)] * 2

        r1.clean_connection()


# --- (4) a frame cut off by a disconnect -----------------------------------

TRUNCATIONS = {
    # id: (vnet, frame length, bytes of the frame (header included) sent)
    "partial-header": (False, 100, 3),
    "header-only": (False, 100, 4),
    "header+part": (False, 100, 4 + 37),
    "header+part-over-reads": (False, 9000, 4 + 5000),
    "vnet-partial-header": (True, 100, 6),
    "vnet-header-only": (True, 100, 8),
    "vnet-header+part": (True, 1514, 8 + 700),
}


@pytest.mark.parametrize("case", list(TRUNCATIONS))
def test_frame_cut_off_by_disconnect(tmp_path, case):
    vnet, length, sent = TRUNCATIONS[case]
    hl = header_len(vnet)
    cut = vframe(payload(length, 50), vnet)[:sent]
    reason = truncated(sent) if sent < hl else truncated(sent, hl + length)
    with start_indev(tmp_path, vnet) as q:
        r1 = Indev(q, vnet)
        for conn_no in range(2):
            good = payload(90 + conn_no, 51 + conn_no)
            with q.connect_chardev("in1") as conn:
                conn.sendall(vframe(good, vnet) + cut)
                # Nothing is counted against the cut frame while the peer is
                # there: the rest may still come.
                r1.check([good])
            # The disconnect: one rejected frame, the bytes that arrived.
            r1.check([], (1, sent))
            assert indev_reasons(q) == [reason] * (conn_no + 1)

        r1.clean_connection()


# --- (5) random garbage, against a reference decoder ------------------------

def reference_decode(stream, vnet):
    """What the redirector makes of one connection's whole stream, then the
    disconnect: (frames, indev-errors, the reasons in stream order, the
    reason of the length over the maximum or None, and where it starts).

    The format: a 4-byte big-endian length, a 4-byte big-endian vnet header
    length when vnet_hdr is on, the payload. A length over MAX_FRAME: rejected
    with the rest of the connection. Length 0: rejected (header only). vnet
    header length over the length: rejected with its payload. A stream that
    ends inside a frame: rejected with what arrived of it, unless that frame
    was already rejected."""
    hl = header_len(vnet)
    frames, errors, reasons, fatal, fatal_at = [], [0, 0], [], None, None
    i, n = 0, len(stream)

    def reject(reason, nbytes):
        errors[0] += 1
        errors[1] += nbytes
        reasons.append(reason)

    while i < n:
        if n - i < hl:
            reject(truncated(n - i), n - i)
            break
        (length,) = struct.unpack_from(">I", stream, i)
        vnet_hdr_len = struct.unpack_from(">I", stream, i + 4)[0] if vnet else 0
        if length > MAX_FRAME:
            fatal, fatal_at = too_large(length), i
            reject(fatal, n - i)
            break
        if length == 0:
            reject(EMPTY, hl)
            i += hl
        elif vnet_hdr_len > length:
            skipped = min(length, n - i - hl)
            reject(vnet_too_large(vnet_hdr_len, length), hl + skipped)
            i += hl + skipped
        elif n - i - hl < length:
            reject(truncated(n - i, hl + length), n - i)
            break
        else:
            frames.append(stream[i + hl:i + hl + length])
            i += hl + length
    return frames, tuple(errors), reasons, fatal, fatal_at


def reason_kind(reason):
    for prefix, kind in [("frame length", "too-large"), ("vnet header", "vnet"),
                         ("zero-length", "empty"), ("stream ended inside a frame header", "cut-header"),
                         ("stream ended inside a frame (", "cut-frame")]:
        if reason.startswith(prefix):
            return kind
    raise AssertionError(reason)


def garbage(rng, vnet):
    """A deterministic mix of valid frames and hostile pieces, more or less
    hostile from one seed to the next. Payload bytes are mostly zeros, so
    that once the stream is out of step the lengths read from it are often
    zero or small (more kinds of trouble) rather than all over the maximum."""
    hl = header_len(vnet)
    hostility = rng.choice([0.05, 0.15, 0.4])

    def body(n):
        return bytes(rng.randrange(256) if rng.random() < 0.1 else 0 for _ in range(n))

    parts = []
    for _ in range(rng.randrange(10, 40)):
        length = rng.choice([rng.randrange(1, 128), rng.randrange(1, 2000), rng.randrange(1, 9000)])
        kind = rng.random() if rng.random() < hostility else 0
        if kind < 0.2:                                        # valid frame
            parts.append(vframe(body(length), vnet, rng.randrange(0, min(length, 12) + 1)))
        elif kind < 0.4:                                      # zero length
            parts.append(vframe(b"", vnet, rng.randrange(0, 2)))
        elif kind < 0.6 and vnet:                             # vnet header too long
            parts.append(vframe(body(length), vnet, rng.randrange(length + 1, 1 << 32)))
        elif kind < 0.8:                                      # a few raw bytes
            parts.append(body(rng.randrange(1, 3 * hl)))
        elif kind < 0.85:                                     # a length over the maximum
            parts.append(struct.pack(">I", rng.randrange(MAX_FRAME + 1, 1 << 32)) + body(hl))
        else:                                                 # a frame cut short
            parts.append(vframe(body(length), vnet)[:rng.randrange(1, hl + length)])
    ending = rng.random()
    if ending < 0.3:                                          # ends inside a header
        parts.append(struct.pack(">II", 100, 0)[:rng.randrange(1, hl)])
    elif ending < 0.6:                                        # ends inside a payload
        parts.append(vframe(body(500), vnet)[:rng.randrange(hl, hl + 500)])
    return b"".join(parts)


def send_in_random_chunks(sock, data, rng):
    i = 0
    while i < len(data):
        n = rng.choice([1, 3, 7, rng.randrange(1, 100), rng.randrange(1, 5000)])
        sock.sendall(data[i:i + n])
        i += n
        if rng.random() < 0.05:
            time.sleep(0.002)


GARBAGE_SEEDS = range(16)


@pytest.mark.parametrize("vnet", [False, True], ids=VNET_IDS)
def test_random_garbage_matches_the_reference_decoder(tmp_path, vnet):
    with start_indev(tmp_path, vnet) as q:
        r1 = Indev(q, vnet)
        warnings, kinds = [], set()
        for seed in GARBAGE_SEEDS:
            rng = random.Random(f"hostile-{seed}-{vnet}")
            stream = garbage(rng, vnet)
            hl = header_len(vnet)
            fatal_at = reference_decode(stream, vnet)[4]
            if fatal_at is not None:
                # QEMU hangs up at a length over the maximum: the stream
                # ends with it (and a few bytes), sent in one write, so that
                # QEMU reads all of it before it hangs up
                stream = stream[:fatal_at + 2 * hl]
            frames, errors, reasons, fatal, fatal_at = reference_decode(stream, vnet)
            kinds.update(map(reason_kind, reasons))
            with q.connect_chardev("in1") as conn:
                send_in_random_chunks(conn, stream[:fatal_at], rng)
                if fatal:
                    conn.sendall(stream[fatal_at:])
                    assert_hung_up(conn)
            # After the disconnect: the frames, and the errors (a cut-off
            # frame at the end is counted when the peer goes).
            r1.check(frames, errors)
            logged = indev_reasons(q)[len(warnings):]
            if not reasons:
                assert logged == [], f"seed {seed}"
            elif not fatal:
                # the first problem, once: one in the stream, or the frame
                # cut off by its end, logged when the peer goes
                cut = reason_kind(reasons[0]).startswith("cut")
                assert logged == [reasons[0] if cut else first(reasons[0])], f"seed {seed}"
            else:
                # the hang-up, after the first problem of an earlier read,
                # if there was one (QEMU's reads split the stream as they do)
                assert logged in ([hang_up(fatal)], [first(reasons[0]), hang_up(fatal)]), \
                    f"seed {seed}: {logged} vs {reasons}"
            warnings += logged
        # The seeds cover every kind of problem, and frames got through.
        assert kinds == {"too-large", "empty", "cut-header", "cut-frame"} | ({"vnet"} if vnet else set())
        assert len(r1.frames) >= 50
        r1.clean_connection()


# --- (6) a peer that sends one byte at a time -------------------------------

@pytest.mark.parametrize("vnet", [False, True], ids=VNET_IDS)
def test_one_byte_at_a_time(tmp_path, vnet):
    frames = [payload(100, 60 + i) for i in range(3)]
    stream = b"".join(vframe(p, vnet, 10 if vnet else 0) for p in frames)
    with start_indev(tmp_path, vnet) as q:
        r1 = Indev(q, vnet)
        start = time.monotonic()
        with q.connect_chardev("in1") as conn:
            for b in stream:
                conn.sendall(bytes([b]))
                time.sleep(0.003)
            r1.check(frames)
        assert time.monotonic() - start < 5
        # A clean end of stream is not an error.
        r1.check()
        assert r1.frames == frames
        assert log_lines(q) == []
        r1.clean_connection()


# --- outdev faults ---------------------------------------------------------

SEND_FAILED_RE = re.compile(
    r"^[^:]+: filter-redirector 'r0': outdev 'out0': (.*) \(counted in outdev-errors; "
    r"further errors are only counted until a write succeeds\)$")


def test_outdev_peer_disconnects_and_reconnects():
    """The outdev peer goes away while n0 keeps sending.

    What QEMU does: filter_redirector_receive_iov() only passes a packet on
    when qemu_chr_fe_backend_connected() is false, and that is whether a
    chardev is attached at all, not whether its socket has a client. So with
    the peer gone r0 still steals every frame: the write fails (EPIPE on the
    dead socket, or EIO once the chardev has noticed the hang-up), the frame
    is dropped and counted in outdev-errors (payload bytes), and n0 keeps
    reading. Nothing is passed on and nothing is replayed to the next peer.
    """
    with start_outdev() as q:
        first = [payload(100, 70), payload(200, 71)]
        for p in first:
            q.netdev_peer.sendall(frame(p))
        for p in first:
            assert read_frame(q.out)[0] == p
        wait_counters(q, "r0", outdev=(2, 300))

        q.out.close()
        # Sent at once: QEMU may not have seen the hang-up yet.
        q.netdev_peer.sendall(frame(payload(300, 72)))
        wait_connected(q, "out0", connected=False)
        # Sent with the chardev known to be disconnected.
        for i, n in enumerate([400, 500]):
            q.netdev_peer.sendall(frame(payload(n, 73 + i)))
        wait_tx(q, 5)
        assert r0_tx(q) == (5, 1500)
        wait_counters(q, "r0", outdev=(2, 300), outdev_errors=(3, 1200))
        assert_alive(q)
        # One line for the whole outage (logged again only after a write
        # succeeded), naming the filter and the outdev.
        lines = log_lines(q)
        assert len(lines) == 1 and SEND_FAILED_RE.match(lines[0]), lines

        # The peer comes back: once QEMU has accepted it (a frame sent before
        # that would fail too), frames flow to it again, the dropped ones do
        # not.
        q.out = q.connect_chardev("out0")
        wait_connected(q, "out0")
        again = [payload(600, 80), payload(700, 81)]
        for p in again:
            q.netdev_peer.sendall(frame(p))
        for p in again:
            assert read_frame(q.out)[0] == p
        assert_quiet(q.out)
        wait_counters(q, "r0", outdev=(4, 1600), outdev_errors=(3, 1200))
        assert r0_tx(q) == (7, 2800)
        assert len(log_lines(q)) == len(lines)
        assert_alive(q)


def test_outdev_without_a_peer_says_so():
    """A write to an outdev whose chardev has no client: the line says so
    (it used to say "peer disconnected" of a peer that never was)."""
    q = Qemu(chardevs=["out0"], extra_args=[
        "-object", "filter-redirector,id=r0,netdev=n0,queue=tx,outdev=out0"])
    with q:
        q.netdev_peer.sendall(frame(payload(100, 90)))
        wait_counters(q, "r0", outdev_errors=(1, 100))
        lines = log_lines(q)
        assert len(lines) == 1 and SEND_FAILED_RE.match(lines[0]), lines
        assert SEND_FAILED_RE.match(lines[0]).group(1) == "no peer connected"


def test_outdev_send_failure_logs_the_real_error():
    """A write that fails on a chardev that stays open (a file chardev on
    /dev/full): the line quotes the system's own error."""
    with Qemu(extra_args=["-chardev", "file,id=out0,path=/dev/full",
                          "-object", "filter-redirector,id=r0,netdev=n0,queue=tx,outdev=out0"]) as q:
        q.netdev_peer.sendall(frame(payload(100, 91)))
        wait_counters(q, "r0", outdev_errors=(1, 100))
        lines = log_lines(q)
        assert len(lines) == 1 and SEND_FAILED_RE.match(lines[0]), lines
        assert SEND_FAILED_RE.match(lines[0]).group(1) == os.strerror(errno.ENOSPC)


def test_outdev_peer_stops_reading_then_resumes():
    with start_outdev() as q:
        sender = stall_outdev(q)
        drain_and_check(q, sender, STALL_FRAMES)
        assert_alive(q)


def test_qmp_answers_while_outdev_peer_does_not_read():
    with start_outdev() as q:
        sender = stall_outdev(q)
        reply = {}
        qmp = threading.Thread(target=lambda: reply.update(stats=q.stats("r0")), daemon=True)
        qmp.start()
        qmp.join(timeout=3)
        answered = not qmp.is_alive()
        # Let QEMU go on either way, so the test ends and QEMU quits.
        drain_outdev(q)
        sender.join(timeout=10)
        qmp.join(timeout=10)
        assert not qmp.is_alive() and "stats" in reply
        assert_alive(q)
        # The outdev is written without blocking: QMP is served meanwhile.
        assert answered, "QMP did not answer within 3 s while out0's peer was not reading"


