"""Helpers shared by the end-to-end tests: waiting on QMP for exact
counters, and driving an outdev peer that stops reading (so that a
filter holds its sender)."""

import array
import fcntl
import select
import termios
import threading
import time

from qemu import Qemu, frame, poll, read_frame, wait_until


def payload(n, seed):
    return bytes((seed + i) % 251 for i in range(n))



def wait_connected(q, name, connected=True, timeout=10.0):
    """Wait until QEMU has accepted (or dropped) the chardev's client."""
    def chardev():
        return next(c for c in q.command("query-chardev") if c["label"] == name)

    got = poll(chardev, lambda c: c["filename"].startswith("disconnected:") != connected, timeout)
    assert got["filename"].startswith("disconnected:") != connected, \
        f"chardev {name} connected != {connected}: {got}"



def start_qemu(objects, chardevs=(), connect=None, extra_args=(), **kwargs):
    """QEMU running `objects` (each an -object argument, after
    `extra_args`) with the chardevs in `connect` (all of `chardevs` by
    default) connected: their sockets are q.socks[name]."""
    q = Qemu(chardevs=chardevs,
             extra_args=[*extra_args, *(a for o in objects for a in ("-object", o))], **kwargs)
    try:
        q.socks = {}
        for name in chardevs if connect is None else connect:
            q.socks[name] = q.connect_chardev(name)
            wait_connected(q, name)
    except BaseException as e:
        q.close_after(e)
        raise
    return q


def counters(q, name):
    (s,) = q.stats(name)
    return {c["name"]: (c["packets"], c["bytes"]) for c in s["counters"]}


# How often a sender was held depends on the kernel's socket buffers and the
# scheduler: checked by assert_held, not pinned.
HOLD_COUNTERS = ("held",)

# Buckets of a duration's log2 histogram in query-stats.
BUCKETS = 28


def stat_values(q, name, *stats, provider="netfilter"):
    """The query-stats values `stats` of filter (or colo-compare object)
    `name`: {stat: value}."""
    results = q.command("query-stats", target="netfilter",
                        providers=[{"provider": provider, "names": list(stats)}])
    (values,) = [{s["name"]: s["value"] for s in r["stats"]} for r in results
                 if r["qom-path"] == f"/objects/{name}"]
    return values


def duration(q, name, stat, provider="netfilter"):
    """A duration of filter (or colo-compare object) `name` from query-stats:
    its log2 histogram (a list of BUCKETS) and the sum of its µs."""
    values = stat_values(q, name, stat, f"{stat}-sum", provider=provider)
    return values[stat], values[f"{stat}-sum"]


def histogram_bucket(us):
    """The bucket of a duration of `us` µs: 0 for 0, i for [2^(i-1), 2^i)."""
    return min(int(us).bit_length(), BUCKETS - 1)


def assert_histogram(buckets, total, events, shortest_us=0, longest_us=None):
    """`events` durations, each from `shortest_us` to `longest_us` (no bound
    if None), that add up to `total` µs, as their buckets allow."""
    assert len(buckets) == BUCKETS and sum(buckets) == events, buckets
    assert not any(buckets[:histogram_bucket(shortest_us)]), (buckets, shortest_us)
    if longest_us is not None:
        assert not any(buckets[histogram_bucket(longest_us) + 1:]), (buckets, longest_us)
    used = [i for i, n in enumerate(buckets) if n]
    low = sum(buckets[i] * (1 << (i - 1)) for i in used if i)
    high = sum(buckets[i] * ((1 << i) - 1) for i in used if i < BUCKETS - 1)
    assert low <= total and (buckets[-1] or total <= high), (buckets, total)


def wait_counters(q, name, timeout=5.0, **expected):
    """Poll QMP until the filter's counters are exactly `expected` (keyword
    names with _ for -; the filter's other counters must be (0, 0), except
    the HOLD_COUNTERS, unless given)."""
    expected = {k.replace("_", "-"): v for k, v in expected.items()}

    def fetch():
        got = counters(q, name)
        for k in HOLD_COUNTERS:
            if k not in expected:
                got.pop(k, None)
        assert set(expected) <= set(got), f"{name} has no {set(expected) - set(got)}"
        return got

    def want(got):
        return {k: expected.get(k, (0, 0)) for k in got}

    got = poll(fetch, lambda got: got == want(got), timeout)
    assert got == want(got)
    return got


def assert_alive(q):
    assert q.proc.poll() is None, f"QEMU exited: {q.stderr()}"
    assert "status" in q.command("query-status")



def assert_quiet(sock, wait=0.2):
    readable, _, _ = select.select([sock], [], [], wait)
    assert not readable, "unexpected data on the socket"


def log_lines(q):
    return [line for line in q.stderr().splitlines() if line.strip()]


def start_outdev():
    q = Qemu(chardevs=["out0"], extra_args=[
        "-object", "filter-redirector,id=r0,netdev=n0,queue=tx,outdev=out0",
    ])
    q.out = q.connect_chardev("out0")
    wait_connected(q, "out0")
    return q


def r0_tx(q):
    (s,) = q.stats("r0")
    return s["packets-tx"], s["bytes-tx"]


def wait_tx(q, packets, timeout=5.0):
    got = poll(lambda: r0_tx(q), lambda tx: tx[0] == packets, timeout)
    assert got[0] == packets, f"r0 saw {got}, expected {packets} packets"


def unsent_bytes(sock):
    """Bytes written to `sock` that its peer has not read yet."""
    n = array.array("i", [0])
    fcntl.ioctl(sock, termios.TIOCOUTQ, n)
    return n[0]


def read_by_qemu(sender):
    """Bytes QEMU has read of what `sender` wrote: written, less what still
    waits in the socket (the writer may be blocked far from waking up)."""
    return sender.bytes - unsent_bytes(sender.sock)


def unread_bytes(sock):
    n = array.array("i", [0])
    fcntl.ioctl(sock, termios.FIONREAD, n)
    return n[0]


STALL_FRAMES = [payload(60000, 100 + i) for i in range(16)]  # ~960 KB, more than the socket buffers


class Sender(threading.Thread):
    """Sends `frames` into `sock`, one frame after the other; `sent` is how
    many frames it has handed to the kernel so far, `bytes` how many bytes."""

    def __init__(self, sock, frames):
        super().__init__(daemon=True)
        self.sock, self.frames, self.error = sock, frames, None
        self.sent = self.bytes = 0
        self.start()

    def run(self):
        try:
            for p in self.frames:
                rest = memoryview(frame(p))
                while rest:
                    n = self.sock.send(rest)
                    self.bytes += n
                    rest = rest[n:]
                self.sent += 1
        except OSError as e:
            # QEMU went away (or the test closed the socket): say so
            # rather than print a traceback from the thread.
            self.error = e

    def finish(self, timeout=15):
        """Wait for every frame to be sent."""
        self.join(timeout=timeout)
        assert not self.is_alive(), f"the sender is stuck after {self.sent} frames"
        assert self.error is None, self.error


def stall_outdev(q, frames=STALL_FRAMES, src=None):
    """Send `frames` into `src` (n0's peer by default) from a thread while
    out0's peer does not read; return once the peer's socket buffer has
    stopped filling (QEMU is stuck writing to it). Returns the Sender."""
    sender = Sender(src or q.netdev_peer, frames)
    state = {"queued": -1, "since": time.monotonic()}

    def stable():
        now, queued = time.monotonic(), unread_bytes(q.out)
        if queued != state["queued"]:
            state.update(queued=queued, since=now)
        return queued > 0 and now - state["since"] > 0.3

    wait_until(stable, "out0's socket buffer never filled", timeout=5)
    last = state["queued"]
    total = sum(len(p) + 4 for p in frames)
    assert 0 < last < total, (last, total)
    return sender


def drain_outdev(q, frames=STALL_FRAMES, sock=None):
    """Read the peer again: every frame arrives, exactly once, in order."""
    sock = sock or q.out
    for i, p in enumerate(frames):
        got, _ = read_frame(sock, timeout=10.0)
        assert got == p, f"frame {i}"
    assert_quiet(sock)


def assert_held(q, name, frame_len, held_for):
    """The filter held its sender, and every hold has ended: `held` counts
    frames of `frame_len` bytes, each hold is in the `hold-time` histogram,
    and the senders were held `held_for` seconds at least, in all."""
    c = counters(q, name)
    (frames, frames_bytes) = c["held"]
    assert frames >= 1 and frames_bytes == frames * frame_len, c
    buckets, micros = duration(q, name, "hold-time")
    assert 1 <= sum(buckets) <= frames, (c, buckets)
    assert_histogram(buckets, micros, sum(buckets))
    assert micros >= held_for * 1e6, (c, micros)


def drain_and_check(q, sender, frames, direction="tx", held_for=0.3):
    """out0's peer reads again: every frame arrives, the sender finishes,
    r0 counted every frame exactly once, logged nothing, and counted the
    hold that `hold()` made (it sleeps `held_for` s with the sender held)."""
    drain_outdev(q, frames)
    sender.finish()
    total = (len(frames), sum(map(len, frames)))
    wait_counters(q, "r0", outdev=total)
    (s,) = q.stats("r0")
    assert (s[f"packets-{direction}"], s[f"bytes-{direction}"]) == total
    assert_held(q, "r0", len(frames[0]), held_for)
    assert log_lines(q) == []


# More than twice the 4 MiB backlog bound: without pushback, frames would be
# dropped once the bound is reached.
FLOOD_FRAMES = [payload(60000, 200 + i) for i in range(160)]
# The redirector holds n0 at 256 KiB queued; n0 still hands over the rest of
# the read it is in (at most 69 KiB) before it stops.
HELD_BACKLOG_MAX = 256 * 1024 + 69632 + 60004


def held_backlog(q, name="r0", direction="tx"):
    """Payload bytes the redirector has taken and not yet written whole."""
    (s,) = q.stats(name)
    return s[f"bytes-{direction}"] - counters(q, name)["outdev"][1]


def start_two_chardevs(second, chain):
    """QEMU running `chain` (-object arguments) with chardevs out0 (q.out)
    and `second`, both connected. Returns QEMU and `second`'s socket."""
    q = Qemu(chardevs=["out0", second], extra_args=chain)
    q.out = q.connect_chardev("out0")
    other = q.connect_chardev(second)
    wait_connected(q, "out0")
    wait_connected(q, second)
    return q, other
