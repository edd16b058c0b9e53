"""A live migration of the test guest under a steady numbered UDP stream
from the host, with and without the wiring of docs/migration.md: the
source's filter-redirector (enable_when_stopped=on) carries what reaches
the stopped source to the destination, whose filter-redirector gives it
to the guest there.

The host writes its stream into the source's socket netdev and switches
it to the destination's once the destination runs (as a network does
after the guest's announce). The guest counts what arrives by sequence
number (qns-guest seq); its verdict comes out on the destination's
console. Each run writes what it measured to target/migration/.
"""

import os
import re
import shutil
import socket
import struct
import tempfile
import threading
import time

import pytest

from colo import Relay
from guest import Guest, record
from test_guest_traffic import counter as filter_counter
from helpers import unsent_bytes, wait_connected
from qemu import frame, udp_frame, wait_until

pytestmark = pytest.mark.needs_full

GUEST_IP, PORT = "10.0.0.2", 5000
RATE = 2000
SO_SNDBUFFORCE = 32


def room(sock):
    """Room for seconds of the stream in a QEMU's socket (root only)."""
    sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20)


class Stream:
    """The host's numbered UDP stream to the guest: `rate` frames a second
    of `size` bytes of payload, written into the netdev peer `target`
    until switch_to() another; blocking writes, so that a QEMU that does
    not read holds the stream back (as a full queue would, and as nothing
    here drops)."""

    def __init__(self, target, rate=RATE, size=100):
        self.target, self.rate, self.size = target, rate, size
        room(target)
        self.sent = {}
        self.next = 0
        self.paused = threading.Event()
        self.stopped = False
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        start = time.monotonic()
        while not self.stopped:
            if self.paused.is_set():
                time.sleep(0.001)
                start = time.monotonic() - self.next / self.rate
                continue
            due = int((time.monotonic() - start) * self.rate)
            with self.lock:
                while self.next < due and not self.paused.is_set():
                    payload = struct.pack(">I", self.next) + bytes(self.size - 4)
                    self.target.sendall(frame(udp_frame(40000, payload)))
                    self.sent[self.target] = self.sent.get(self.target, 0) + 1
                    self.next += 1
            time.sleep(0.002)

    def switch_to(self, target, before=None):
        """Pause, call before() (what must happen between the last frame
        to the old target and the first to the new), and go on at
        `target`; returns how long the stream was paused (s)."""
        room(target)
        t0 = time.monotonic()
        self.paused.set()
        with self.lock:
            if before:
                before()
            self.target = target
        self.paused.clear()
        return time.monotonic() - t0

    def stop(self):
        self.stopped = True
        self.thread.join()
        return self.next


def counter(g, name, counter_name):
    return filter_counter(g.stats_by_name()[name], counter_name)


def parse_verdict(g, timeout=60):
    """`qns-guest seq`'s count, as it comes out on g's console."""
    g.expect(b"seq received", timeout)
    line = g.expect(b"\r\n", 10).decode()
    return {k: int(v) for k, v in re.findall(r"(\w+) (-?\d+)", "received" + line)}


class Migration:
    """A source QEMU running the guest and a destination waiting for it,
    each with a socket netdev whose peer the host writes to; `carry`
    wires them as docs/migration.md says (the destination's part from its
    start, unless `late`)."""

    def __init__(self, carry=True, enable_when_stopped=True, late=False, relay=False,
                 idle_ms=3000, add_after=False):
        self.add_after = add_after
        self.dir = tempfile.mkdtemp(prefix="qns-mig-")
        self.carry, self.enable_when_stopped, self.late = carry, enable_when_stopped, late
        self.link = os.path.join(self.dir, "carry.sock")
        # the source connects here: the destination's socket, or a relay to it
        self.relay = Relay(os.path.join(self.dir, "relay.sock"), self.link) if relay else None
        self.src = self.dst = None
        try:
            self.src = Guest()
            dst_args = self.destination_wiring() if carry and not late else []
            self.dst = Guest(incoming=True, extra_args=dst_args)
            self.src.sh(f"ip addr add {GUEST_IP}/24 dev eth0")
            # the guest counts what comes, until idle_ms pass without any
            self.src.console.sendall(f"qns-guest seq {PORT} {idle_ms}; echo QNS-RC''=$?\n".encode())
            self.src.expect(b"seq-ready", 30)
        except BaseException:
            self.close(check=False)
            raise

    def destination_wiring(self):
        """The destination's part: a socket server for the link, and a
        filter-redirector that gives what comes on it to the guest."""
        return ["-chardev", f"socket,id=carry0,path={self.link},server=on,wait=off",
                "-object", "filter-redirector,id=carry-in,netdev=n0,queue=tx,indev=carry0"]

    def add_destination_wiring(self):
        self.dst.command("chardev-add", id="carry0", backend={
            "type": "socket", "data": {"addr": {"type": "unix", "data": {"path": self.link}},
                                       "server": True, "wait": False}})
        self.dst.command("object-add", **{"qom-type": "filter-redirector", "id": "carry-in",
                                          "netdev": "n0", "queue": "tx", "indev": "carry0"})

    def add_source_wiring(self):
        """The source's part, before the migration: a link to the
        destination, and a filter-redirector, switched off, that will carry
        what reaches the stopped source (with `add_after`, the link only:
        the redirector comes once the migration has completed)."""
        path = self.relay.address if self.relay else self.link
        self.src.command("chardev-add", id="carry0", backend={
            "type": "socket", "data": {"addr": {"type": "unix", "data": {"path": path}},
                                       "server": False, "reconnect-ms": 100}})
        if not self.add_after:
            self.add_source_filter("off")

    def add_source_filter(self, status):
        self.src.command("object-add", **{
            "qom-type": "filter-redirector", "id": "carry-out", "netdev": "n0",
            "queue": "tx", "outdev": "carry0", "status": status,
            "enable_when_stopped": self.enable_when_stopped})

    def wait_linked(self):
        """Until the source's link to the destination is up (its
        redirector drops what it would write to a link with no peer)."""
        wait_connected(self.src, "carry0")

    def migrate(self):
        uri = f"unix:{os.path.join(self.dir, 'migration.sock')}"
        self.dst.command("migrate-incoming", uri=uri)
        self.src.command("migrate", uri=uri)
        wait_until(lambda: self.src.command("query-migrate")["status"] == "completed",
                   "the migration did not complete", 120)

    def carried(self):
        """(frames, bytes) the source's redirector took and wrote to the link."""
        return counter(self.src, "carry-out", "outdev")

    def drained(self, stream):
        """Everything written to the source has been read by it and, carried,
        has reached the destination's redirector."""
        return (unsent_bytes(stream.target) == 0 and
                self.src.stats_by_name()["carry-out"]["packets-tx"] == self.carried()[0] and
                counter(self.dst, "carry-in", "indev") == self.carried())

    def verdict(self):
        """The guest's count, printed on the destination's console."""
        verdict = parse_verdict(self.dst)
        self.dst.expect(b"QNS-RC=0\r\n", 10)
        return verdict

    def close(self, check=True):
        ended = []
        for name in ("dst", "src"):
            g = getattr(self, name)
            if g is not None:
                try:
                    g.close(check)
                except AssertionError as e:
                    ended.append(f"{name}: {e}")
        if self.relay:
            self.relay.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        assert not ended, "\n".join(ended)


def run(m, name, size=100, switch_after=0.0):
    """Migrate under the stream; switch the stream to the destination
    `switch_after` seconds after it runs (after the source's carried
    frames have all reached the destination, when there are any); return
    the guest's verdict and what was measured."""
    stream = Stream(m.src.netdev_peer, size=size)
    time.sleep(1)
    if m.carry:
        m.add_source_wiring()
        if not m.late:
            m.wait_linked()
    m.migrate()
    downtime = m.src.command("query-migrate").get("downtime")
    if m.carry:
        if m.late:
            # the destination's part comes late: the source waits for it,
            # and what reaches the source meanwhile waits in its netdev
            time.sleep(0.5)
            m.add_destination_wiring()
            m.wait_linked()
        # from now on, what reaches the stopped source is carried
        if m.add_after:
            m.add_source_filter("on")
        else:
            m.src.command("qom-set", path="/objects/carry-out", property="status", value="on")
    wait_until(lambda: m.dst.command("query-status")["running"], "the destination did not run", 30)
    time.sleep(switch_after)
    drain = m.drained if m.carry and m.enable_when_stopped else None
    paused = stream.switch_to(m.dst.netdev_peer, before=drain and (
        lambda: wait_until(lambda: drain(stream), "the carried frames did not reach the destination",
                           30, 0.01)))
    time.sleep(1)
    sent = stream.stop()
    verdict = m.verdict()
    values = {"sent": sent, "to_source": stream.sent.get(m.src.netdev_peer, 0),
              "downtime_ms": downtime, "stream_paused_ms": round(paused * 1000, 1),
              "verdict": verdict}
    if m.carry:
        values["carried"] = m.carried()[0]
    record("migration", name, **values)
    return sent, verdict


def end_wiring(m):
    """What the how-to does once the stream has moved: remove the filters
    and the link."""
    for g, obj in ((m.src, "carry-out"), (m.dst, "carry-in")):
        g.command("object-del", id=obj)
        g.command("chardev-remove", id="carry0")
    assert m.src.stats() == [] and m.dst.stats() == []


@pytest.fixture
def mig(request):
    m = Migration(**getattr(request, "param", {}))
    yield m
    m.close()


def test_migration_loses_no_frame_with_the_wiring(mig):
    sent, v = run(mig, "carried")
    assert (v["received"], v["unique"], v["dup"], v["reordered"], v["missing"]) == (sent, sent, 0, 0, 0), v
    assert (v["first"], v["last"]) == (0, sent - 1)
    # every carried frame went out of the source whole and came in at the
    # destination; none was lost on the way, none held for good
    carried = mig.carried()
    assert carried[0] > 0
    assert counter(mig.dst, "carry-in", "indev") == carried
    out = mig.src.stats_by_name()["carry-out"]
    assert (out["packets-tx"], out["bytes-tx"]) == carried
    for g, name in ((mig.src, "carry-out"), (mig.dst, "carry-in")):
        for c in g.stats_by_name()[name]["counters"]:
            if c["name"].endswith("-errors"):
                assert (c["packets"], c["bytes"]) == (0, 0), (name, c)
    end_wiring(mig)


@pytest.mark.parametrize("mig", [{"add_after": True}], indirect=True)
def test_migration_with_the_source_filter_added_once_stopped(mig):
    """The source's redirector is added (switched on) only once the
    migration has completed: it reads the stopped netdev at once (glue
    0038) and carries everything, as the one switched on does."""
    sent, v = run(mig, "added-after")
    assert (v["received"], v["dup"], v["reordered"], v["missing"]) == (sent, 0, 0, 0), (
        v, mig.src.stats_by_name()["carry-out"], mig.dst.stats_by_name()["carry-in"])
    assert mig.carried()[0] > 0
    end_wiring(mig)


@pytest.mark.parametrize("mig", [{"carry": False}], indirect=True)
def test_migration_without_the_wiring_loses_what_reaches_the_stopped_source(mig):
    """Stock: what reaches the source after it stopped waits in its netdev
    and goes when it quits. Measured, not asserted beyond no duplicate."""
    sent, v = run(mig, "stock")
    assert v["dup"] == 0 and v["received"] <= sent, v
    record("migration", "stock-lost", lost=sent - v["received"],
           waiting_in_source_bytes=unsent_bytes(mig.src.netdev_peer))


@pytest.mark.parametrize("mig", [{"late": True}], indirect=True)
def test_migration_with_a_destination_link_that_comes_late(mig):
    sent, v = run(mig, "late-link")
    assert (v["received"], v["dup"], v["reordered"], v["missing"]) == (sent, 0, 0, 0), v
    end_wiring(mig)


# (the guest waits out the link's stop: 10 s without a frame ends its count)
@pytest.mark.parametrize("mig", [{"relay": True, "idle_ms": 10000}], indirect=True)
def test_migration_holds_the_source_while_the_link_is_slow(mig):
    """The link stops moving for seconds while the source carries (the
    network takes 2 s to send to the destination): the source's
    redirector holds its netdev (and so the host's stream) once its
    backlog is full, and drops nothing."""
    mig.relay.hold()
    threading.Timer(6, mig.relay.release).start()
    sent, v = run(mig, "slow-link", size=500, switch_after=2.0)
    assert (v["received"], v["dup"], v["reordered"], v["missing"]) == (sent, 0, 0, 0), v
    assert counter(mig.src, "carry-out", "held")[0] > 0
    assert counter(mig.src, "carry-out", "outdev-errors") == (0, 0)
    end_wiring(mig)


@pytest.mark.parametrize("mig", [{"enable_when_stopped": False}], indirect=True)
def test_migration_without_enable_when_stopped_carries_nothing(mig):
    """enable_when_stopped=off: the stopped source's netdev is not read, so
    the redirector carries nothing, and what reached the source waits
    there (in its socket, or queued for its NIC) and is lost, as stock."""
    sent, v = run(mig, "no-enable-when-stopped")
    assert mig.carried() == (0, 0)
    assert mig.src.stats_by_name()["carry-out"]["packets-tx"] == 0
    assert v["dup"] == 0 and v["received"] < sent
    end_wiring(mig)


def test_migration_cancelled_after_the_wiring_went_in(mig):
    """The migration is cancelled after the source's redirector went in
    (switched off): the source runs on, its guest gets every frame once,
    in order, and nothing was carried."""
    stream = Stream(mig.src.netdev_peer)
    time.sleep(0.5)
    mig.add_source_wiring()
    mig.wait_linked()
    # slow enough that it cannot complete before the cancel
    mig.src.command("migrate-set-parameters", **{"max-bandwidth": 1 << 20})
    uri = f"unix:{os.path.join(mig.dir, 'migration.sock')}"
    mig.dst.command("migrate-incoming", uri=uri)
    mig.src.command("migrate", uri=uri)
    time.sleep(1)
    mig.src.command("migrate_cancel")
    wait_until(lambda: mig.src.command("query-migrate")["status"] == "cancelled",
               "the migration was not cancelled", 30)
    assert mig.src.command("query-status")["running"]
    time.sleep(1)
    sent = stream.stop()
    v = parse_verdict(mig.src)
    assert (v["received"], v["dup"], v["reordered"], v["missing"]) == (sent, 0, 0, 0), v
    assert mig.carried() == (0, 0)
    mig.src.command("object-del", id="carry-out")
    mig.src.command("chardev-remove", id="carry0")
    assert mig.src.stats() == []
    # the destination, whose incoming migration failed, exits with 1
    assert mig.dst.proc.wait(30) == 1, mig.dst.stderr()
    mig.dst.close(check=False)
    mig.dst = None
