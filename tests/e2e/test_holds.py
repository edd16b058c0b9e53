"""End-to-end: senders held instead of frames dropped, and every way out of a
hold, against the live patched QEMU.

A filter-redirector whose outdev peer reads more slowly than traffic arrives
holds the sender at its high-water mark: the netdev stops reading (its peer
blocks in the kernel), or a redirector reading its indev stops reading it.
Each test below first makes r0's outdev peer stop reading until r0 holds its
sender, then takes one way out: the peer reads again, r0 is switched off or
deleted, the netdev is deleted, the peer goes away, the VM stops and runs
again, or two redirectors hold the same indev. In each case QEMU answers QMP
throughout, every frame is either delivered exactly once or counted as
dropped, and the sender goes on.

The redirector's own series behaviour is here too: `status=off` stops
reading the indev (bytes wait, none lost), and `enable_when_stopped` keeps
the netdev read while the VM is stopped.
"""

import select
import struct
import threading
import time

import pytest

from helpers import (
    FLOOD_FRAMES, HELD_BACKLOG_MAX, Sender, assert_alive, assert_quiet, counters, drain_and_check,
    drain_outdev, held_backlog, log_lines, payload, r0_tx, read_by_qemu, stall_outdev,
    start_outdev, start_two_chardevs, unsent_bytes, wait_connected, wait_counters,
)
from qemu import Qemu, frame, poll, read_frame, wait_until

TWO_REDIRECTORS = [
    "-object", "filter-redirector,id=r0,netdev=n0,queue=tx,outdev=out0",
    "-object", "filter-redirector,id=r2,netdev=n0,queue=tx,outdev=out2",
]


def hold(q, frames=FLOOD_FRAMES, src=None):
    """Flood `src` (n0's peer by default) while out0's peer does not read,
    until r0 holds the sender; return the sender thread (still blocked)."""
    sender = stall_outdev(q, frames, src=src)
    time.sleep(0.3)
    assert sender.is_alive(), "the sender was not held back"
    return sender


def read_whole_frames(sock, quiet=0.5):
    """Read what `sock` gets until it is quiet for `quiet` s or ends; return
    (whole frames, bytes of a frame cut off, whether the stream ended)."""
    data, ended = bytearray(), False
    while select.select([sock], [], [], quiet)[0]:
        chunk = sock.recv(1 << 20)
        if not chunk:
            ended = True
            break
        data += chunk
    whole = []
    while len(data) >= 4 and len(data) >= 4 + struct.unpack(">I", data[:4])[0]:
        n = struct.unpack(">I", data[:4])[0]
        whole.append(bytes(data[4:4 + n]))
        del data[:4 + n]
    return whole, len(data), ended


# --- the peer reads again ----------------------------------------------------

def test_fast_sender_is_held_not_dropped():
    """n0's peer sends far more than the backlog bound while out0's peer
    does not read: the redirector stops n0 at its high-water mark (the
    sender blocks in the kernel), keeps the backlog small, and once out0 is
    read again every frame arrives, in order, with nothing dropped."""
    with start_outdev() as q:
        sender = hold(q)
        backlog = held_backlog(q)
        assert 0 < backlog <= HELD_BACKLOG_MAX, backlog
        assert counters(q, "r0")["outdev-errors"] == (0, 0)
        assert_alive(q)
        drain_and_check(q, sender, FLOOD_FRAMES)


def test_indev_reader_is_held_not_dropped():
    """r1 reads frames from its indev and passes them to r0, whose outdev
    peer does not read: at r0's high-water mark r1 stops reading its indev
    (the indev's sender blocks in the kernel), r0's backlog stays small, and
    once out0 is read again every frame arrives, in order, none dropped."""
    q, src = start_two_chardevs("in1", [
        "-object", "filter-redirector,id=r0,netdev=n0,queue=rx,outdev=out0",
        "-object", "filter-redirector,id=r1,netdev=n0,queue=rx,indev=in1",
    ])
    with q:
        sender = hold(q, src=src)
        backlog = held_backlog(q, direction="rx")
        assert 0 < backlog <= HELD_BACKLOG_MAX, backlog
        assert counters(q, "r0")["outdev-errors"] == (0, 0)
        assert_alive(q)
        drain_and_check(q, sender, FLOOD_FRAMES, direction="rx")
        total = (len(FLOOD_FRAMES), sum(map(len, FLOOD_FRAMES)))
        wait_counters(q, "r1", indev=total)


def test_mirror_holds_the_indev_reader_and_passes_every_frame_on():
    """r1 injects frames from its indev; m0 (filter-mirror) copies each to
    out0, whose peer does not read, and passes it on to the wire. At the
    high-water mark m0 holds r1 (it stops reading its indev) rather than
    drop copies; once out0 is read, both out0 and the wire have every frame
    exactly once, in order."""
    q, src = start_two_chardevs("in1", [
        "-object", "filter-mirror,id=m0,netdev=n0,queue=rx,outdev=out0",
        "-object", "filter-redirector,id=r1,netdev=n0,queue=rx,indev=in1",
    ])
    with q:
        wire = []
        reader = threading.Thread(
            target=lambda: wire.extend(read_frame(q.netdev_peer, timeout=20)[0]
                                       for _ in FLOOD_FRAMES), daemon=True)
        reader.start()
        sender = hold(q, src=src)
        backlog = held_backlog(q, "m0", "rx")
        assert 0 < backlog <= HELD_BACKLOG_MAX, backlog
        drain_outdev(q, FLOOD_FRAMES)
        sender.finish()
        reader.join(timeout=20)
        assert wire == FLOOD_FRAMES
        total = (len(FLOOD_FRAMES), sum(map(len, FLOOD_FRAMES)))
        wait_counters(q, "m0", outdev=total)
        wait_counters(q, "r1", indev=total)
        assert log_lines(q) == []


# --- the holding filter is switched off, or deleted --------------------------

def test_status_off_lets_the_held_netdev_flow_past_and_on_holds_again():
    """r0 holds n0; `status off` lets n0 go on at once, its frames flowing
    past r0 to r2; `status on` again and r0 (still congested) holds n0
    again; once out0 is read, it gets every frame r0 took, in order."""
    q, out2 = start_two_chardevs("out2", TWO_REDIRECTORS)
    with q:
        sender = hold(q)
        taken = r0_tx(q)[0]
        q.command("qom-set", path="/objects/r0", property="status", value="off")
        drain_outdev(q, FLOOD_FRAMES[taken:], sock=out2)
        sender.finish()
        (r2,) = q.stats("r2")
        assert r2["packets-tx"] == len(FLOOD_FRAMES) - taken

        q.command("qom-set", path="/objects/r0", property="status", value="on")
        more = [payload(60000, 500 + i) for i in range(16)]
        sender = Sender(q.netdev_peer, more)
        time.sleep(0.5)
        assert sender.is_alive(), "r0 did not hold n0 again"
        assert_quiet(out2)
        assert_alive(q)

        drain_outdev(q, FLOOD_FRAMES[:taken] + more)
        sender.finish()
        both = FLOOD_FRAMES[:taken] + more
        wait_counters(q, "r0", outdev=(len(both), sum(map(len, both))))
        wait_counters(q, "r2", outdev=(len(FLOOD_FRAMES) - taken,
                                       sum(map(len, FLOOD_FRAMES[taken:]))))
        assert log_lines(q) == []


def test_deleting_the_holding_filter_mid_frame_leaves_no_torn_frame():
    """r0 holds n0 when it is deleted, in the middle of writing a frame: n0
    reads again and its frames reach r2; out0's peer gets the frames r0
    wrote whole and then a clean end of the stream (not the start of a
    frame followed by someone else's). A new redirector on the same chardev
    is then decoded from its first frame."""
    q, out2 = start_two_chardevs("out2", TWO_REDIRECTORS)
    with q:
        sender = hold(q)
        taken = r0_tx(q)[0]
        written = counters(q, "r0")["outdev"][0]
        q.command("object-del", id="r0")

        whole, cut, ended = read_whole_frames(q.out)
        assert whole == FLOOD_FRAMES[:written]
        assert written < taken
        # 60000-byte frames into a full socket buffer: r0 was mid-frame.
        assert cut > 0, "r0 was not in the middle of a frame"
        assert ended, "out0's peer got a torn frame and the stream went on"
        assert any("removed in the middle of a frame; disconnecting the peer" in line
                   for line in log_lines(q)), log_lines(q)

        drain_outdev(q, FLOOD_FRAMES[taken:], sock=out2)
        sender.finish()
        assert [s["name"] for s in q.stats()] == ["r2"]

        # The peer reconnects; a new redirector (first in the chain) writes
        # to it, and every frame decodes.
        q.out.close()
        q.out = q.connect_chardev("out0")
        wait_connected(q, "out0")
        q.command("object-add", **{"qom-type": "filter-redirector", "id": "r3",
                                   "netdev": "n0", "queue": "tx", "outdev": "out0",
                                   "position": "head"})
        later = [payload(n, 600 + n) for n in (60, 1514, 9000, 60000)]
        for p in later:
            q.netdev_peer.sendall(frame(p))
        drain_outdev(q, later)
        wait_counters(q, "r3", outdev=(len(later), sum(map(len, later))))
        assert_alive(q)


# --- the sender or the peer goes away ----------------------------------------

def test_netdev_del_of_the_held_netdev():
    """r0 holds n0 when n0 is deleted: its filters go with it, out0's peer
    gets what r0 wrote whole and a clean end, n0 is let go (it reads again),
    and QEMU answers QMP and quits cleanly."""
    with start_outdev() as q:
        sender = hold(q)
        held_at = read_by_qemu(sender)
        written = counters(q, "r0")["outdev"][0]

        q.command("netdev_del", id="n0")
        assert q.stats() == []
        assert_alive(q)
        whole, _, ended = read_whole_frames(q.out)
        assert whole == FLOOD_FRAMES[:written] and ended
        # n0 was released: it read again (and then waits for the guest NIC,
        # which has no driver here and never takes a frame).
        wait_until(lambda: read_by_qemu(sender) > held_at, "n0 stayed held after netdev_del",
                   5, 0.05)
        assert_alive(q)


def test_outdev_peer_disconnecting_releases_the_held_netdev():
    """r0 holds n0 when out0's peer goes away: the backlog is dropped and
    counted, n0 goes on, and r0 counts every frame it took as written or
    dropped, exactly; one line is logged for the outage."""
    with start_outdev() as q:
        sender = hold(q)
        q.out.close()
        sender.finish()
        total = (len(FLOOD_FRAMES), sum(map(len, FLOOD_FRAMES)))
        assert poll(lambda: r0_tx(q), lambda tx: tx == total, 5) == total
        c = counters(q, "r0")
        assert (c["outdev"][0] + c["outdev-errors"][0],
                c["outdev"][1] + c["outdev-errors"][1]) == total
        assert c["outdev-errors"][0] > 0
        assert len(log_lines(q)) == 1, log_lines(q)
        assert_alive(q)


# --- the VM stops and runs again ---------------------------------------------

def test_stop_and_cont_while_held():
    """r0 holds n0 and the VM stops: once out0 is read, n0 is let go all
    the same and every frame arrives; after `cont` traffic flows on."""
    with start_outdev() as q:
        sender = hold(q)
        q.command("stop")
        assert q.command("query-status")["status"] == "paused"
        drain_and_check(q, sender, FLOOD_FRAMES)
        q.command("cont")
        after = [payload(1514, 700 + i) for i in range(3)]
        for p in after:
            q.netdev_peer.sendall(frame(p))
        drain_outdev(q, after)
        every = FLOOD_FRAMES + after
        wait_counters(q, "r0", outdev=(len(every), sum(map(len, every))))


# --- two redirectors hold the same indev -------------------------------------

def test_two_redirectors_holding_the_same_indev():
    """r1 passes each frame from its indev both ways, to r2 (tx) and r0
    (rx), whose outdev peers both stop reading: both hold r1. Draining only
    one lets r1 read on until the other holds it again; draining both
    delivers every frame to each outdev exactly once."""
    q = Qemu(chardevs=["out0", "in1", "out2"], extra_args=[
        "-object", "filter-redirector,id=r0,netdev=n0,queue=rx,outdev=out0",
        "-object", "filter-redirector,id=r1,netdev=n0,queue=all,indev=in1",
        "-object", "filter-redirector,id=r2,netdev=n0,queue=tx,outdev=out2",
    ])
    with q:
        q.out = q.connect_chardev("out0")
        src = q.connect_chardev("in1")
        out2 = q.connect_chardev("out2")
        for name in ("out0", "in1", "out2"):
            wait_connected(q, name)
        sender = hold(q, src=src)
        assert held_backlog(q, "r0", "rx") <= HELD_BACKLOG_MAX
        assert held_backlog(q, "r2", "tx") <= HELD_BACKLOG_MAX

        # Only out0 is read: r2 still holds r1, so out0 stalls short of all.
        got = []
        q.out.settimeout(1.0)
        try:
            while True:
                got.append(read_frame(q.out, timeout=1.0)[0])
        except (TimeoutError, OSError):
            pass
        assert got == FLOOD_FRAMES[:len(got)] and len(got) < len(FLOOD_FRAMES)
        assert sender.is_alive()

        rest = threading.Thread(
            target=lambda: drain_outdev(q, FLOOD_FRAMES[len(got):]), daemon=True)
        rest.start()
        drain_outdev(q, FLOOD_FRAMES, sock=out2)
        rest.join(timeout=15)
        assert not rest.is_alive()
        sender.finish()
        total = (len(FLOOD_FRAMES), sum(map(len, FLOOD_FRAMES)))
        wait_counters(q, "r0", outdev=total)
        wait_counters(q, "r2", outdev=total)
        wait_counters(q, "r1", indev=total)
        assert log_lines(q) == []


# --- filter-redirector status: the indev is not read while off ---------------

def start_indev_to_outdev(status="on"):
    """r1 reads in1 and passes frames on (tx) to r0, which writes them to
    out0; r1 starts with `status`."""
    q = Qemu(chardevs=["out0", "in1"], extra_args=[
        "-object", f"filter-redirector,id=r1,netdev=n0,queue=tx,indev=in1,status={status}",
        "-object", "filter-redirector,id=r0,netdev=n0,queue=tx,outdev=out0",
    ])
    q.out = q.connect_chardev("out0")
    q.src = q.connect_chardev("in1")
    wait_connected(q, "out0")
    wait_connected(q, "in1")
    return q


def set_status(q, name, value):
    q.command("qom-set", path=f"/objects/{name}", property="status", value=value)


def test_redirector_created_off_reads_its_indev_only_once_on():
    with start_indev_to_outdev(status="off") as q:
        frames = [payload(n, 800 + n) for n in (60, 1514, 9000)]
        q.src.sendall(b"".join(frame(p) for p in frames))
        assert_quiet(q.out, wait=0.5)
        assert counters(q, "r1")["indev"] == (0, 0)
        set_status(q, "r1", "on")
        drain_outdev(q, frames)
        wait_counters(q, "r1", indev=(3, sum(map(len, frames))))


def test_redirector_status_off_keeps_the_bytes_and_reconnect_works():
    """off: what the peer sends waits (none lost) until on; a peer that
    reconnects while off, or while on, is read from a clean state."""
    with start_indev_to_outdev() as q:
        seen = []

        def expect(frames):
            drain_outdev(q, frames)
            seen.extend(frames)
            wait_counters(q, "r1", indev=(len(seen), sum(map(len, seen))))

        def reconnect():
            q.src.close()
            wait_connected(q, "in1", connected=False)
            q.src = q.connect_chardev("in1")
            wait_connected(q, "in1")

        a = [payload(100, 1)]
        q.src.sendall(frame(a[0]))
        expect(a)

        set_status(q, "r1", "off")
        b = [payload(200, 2), payload(60000, 3)]
        q.src.sendall(b"".join(frame(p) for p in b))
        assert_quiet(q.out, wait=0.5)
        set_status(q, "r1", "on")
        expect(b)

        # Reconnect while off: the new connection is read once on.
        set_status(q, "r1", "off")
        reconnect()
        c = [payload(300, 4)]
        q.src.sendall(frame(c[0]))
        assert_quiet(q.out, wait=0.5)
        set_status(q, "r1", "on")
        expect(c)

        # Reconnect while on.
        reconnect()
        d = [payload(400, 5)]
        q.src.sendall(frame(d[0]))
        expect(d)
        assert log_lines(q) == []


# --- enable_when_stopped -----------------------------------------------------

def stop_with_a_frame_waiting(q, seed):
    """Connect out0's peer, stop the VM and send n0 a frame, which waits in
    the guest NIC's queue (so n0 stops reading); return the frame."""
    q.out = q.connect_chardev("out0")
    wait_connected(q, "out0")
    q.command("stop")
    waiting = payload(100, seed)
    q.netdev_peer.sendall(frame(waiting))
    time.sleep(0.3)
    return waiting


@pytest.mark.parametrize("netdev", ["socket", "stream"])
@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
def test_enable_when_stopped(enabled, netdev):
    """The VM is stopped and a frame r0 let pass (it was off) waits in the
    guest NIC's queue, so n0 stops reading. r0 is switched on: with
    enable_when_stopped, r0 takes that frame out of the NIC's queue (glue
    0038: it stayed there, and n0 read on while it waited, against
    NetQueue's rule), n0 reads again, and what arrives reaches out0 within
    a second, in order, exactly counted; after `cont` traffic flows on as
    before. Without it (stock behaviour) n0 waits for the guest. Run on a
    socket and on a stream netdev: each has its own read_poll."""
    ews = "on" if enabled else "off"
    q = Qemu(chardevs=["out0"], netdev=netdev, extra_args=[
        "-object", "filter-redirector,id=r0,netdev=n0,queue=tx,outdev=out0,"
                   f"status=off,enable_when_stopped={ews}",
    ])
    with q:
        waiting = stop_with_a_frame_waiting(q, 9)
        set_status(q, "r0", "on")
        while_stopped = [payload(n, 900 + n) for n in (60, 1514)]
        for p in while_stopped:
            q.netdev_peer.sendall(frame(p))
        if not enabled:
            assert_quiet(q.out, wait=1.0)
            assert r0_tx(q) == (0, 0)
            q.command("cont")
            assert_quiet(q.out, wait=0.5)
            return
        for p in [waiting] + while_stopped:
            assert read_frame(q.out, timeout=1.0)[0] == p
        total = (3, sum(map(len, [waiting] + while_stopped)))
        wait_counters(q, "r0", outdev=total)
        assert r0_tx(q) == total
        q.command("cont")
        after = [payload(300, 10)]
        q.netdev_peer.sendall(frame(after[0]))
        drain_outdev(q, after)
        assert r0_tx(q) == (4, total[1] + 300)


@pytest.mark.parametrize("netdev", ["socket", "stream"])
def test_what_waited_for_the_guest_before_the_stop_is_carried(netdev):
    """Frames that wait in the guest NIC's queue when the VM stops (a guest
    slower than the traffic; here one without a driver) stay queued (glue
    0014: the stop purged them, and they were lost), and a redirector with
    enable_when_stopped added then carries them first, in order."""
    q = Qemu(chardevs=["out0"], netdev=netdev)
    with q:
        q.out = q.connect_chardev("out0")
        wait_connected(q, "out0")
        waiting = [payload(n, 1300 + n) for n in (100, 200, 300)]
        q.netdev_peer.sendall(b"".join(frame(p) for p in waiting))
        # n0 read them all: they wait for the guest
        wait_until(lambda: unsent_bytes(q.netdev_peer) == 0, "n0 did not read", 5, 0.01)
        q.command("stop")
        q.command("object-add", **{"qom-type": "filter-redirector", "id": "r0", "netdev": "n0",
                                   "queue": "tx", "outdev": "out0",
                                   "enable_when_stopped": True})
        after = [payload(60, 1399)]
        q.netdev_peer.sendall(frame(after[0]))
        for p in waiting + after:
            assert read_frame(q.out, timeout=1.0)[0] == p
        total = (4, sum(map(len, waiting + after)))
        wait_counters(q, "r0", outdev=total)
        assert r0_tx(q) == total
        assert_quiet(q.out)


@pytest.mark.parametrize("netdev", ["socket", "stream"])
def test_enable_when_stopped_added_to_a_stopped_vm(netdev):
    """A redirector with enable_when_stopped added while the VM is stopped
    (as a migration's management adds it once the source has stopped)
    reads the netdev at once: what waited for the guest, then what comes
    (glue 0038: it read nothing until the VM next stopped)."""
    q = Qemu(chardevs=["out0"], netdev=netdev)
    with q:
        waiting = stop_with_a_frame_waiting(q, 11)
        q.command("object-add", **{"qom-type": "filter-redirector", "id": "r0", "netdev": "n0",
                                   "queue": "tx", "outdev": "out0",
                                   "enable_when_stopped": True})
        while_stopped = [payload(n, 700 + n) for n in (60, 1514)]
        for p in while_stopped:
            q.netdev_peer.sendall(frame(p))
        for p in [waiting] + while_stopped:
            assert read_frame(q.out, timeout=1.0)[0] == p
        total = (3, sum(map(len, [waiting] + while_stopped)))
        wait_counters(q, "r0", outdev=total)
        assert r0_tx(q) == total
