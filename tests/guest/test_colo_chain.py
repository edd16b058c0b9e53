"""A COLO network chain, wired as QEMU's docs/system/qemu-colo.rst wires
it, around two QEMUs booting the same guest, with real traffic from the
host (ping, and a TCP stream from a server in the guests).

Primary (a tap netdev to the host, no vnet header: as in the docs, no
filter needs vnet_hdr_support):
  filter-mirror m0 (queue=tx, outdev=mirror0)   host -> guest, copied to S
  filter-redirector redire0 (queue=rx, indev=compare_out)   what comp0 releases
  filter-redirector redire1 (queue=rx, outdev=compare0)     guest -> comp0
  colo-compare comp0 (primary_in=compare0-0, secondary_in=compare1,
                      outdev=compare_out0)
Secondary (its own netdev carries nothing):
  filter-redirector f1 (queue=tx, indev=red0)   the mirrored frames
  filter-redirector f2 (queue=rx, outdev=red1)  guest -> comp0's secondary_in
  filter-rewriter rew0                          TCP sequence numbers

The two links between the QEMUs (mirror0 -> red0, red1 -> compare1) go
through a relay in the test, which can drop them and write garbage.
Without the COLO migration (see TESTING.md) there is no checkpoint: what
colo-compare cannot match stays queued, and is counted as such.
"""

import socket
import struct
import tempfile
import threading
import time

import pytest

from guest import Guest, Tap
from test_guest_traffic import counter

HOST_IP, GUEST_IP = "10.213.7.1", "10.213.7.2"
TCP_PORT, TCP_BYTES = 8000, 300_000

# the primary's netdev is a tap (tests/guest/conftest.py)
pytestmark = pytest.mark.needs_tap


class Relay:
    """Accept connections on `path` and pipe each, both ways, to a new
    connection to `target`; drop() cuts the link (and refuses it) until
    restore(); inject() writes to the target side."""

    def __init__(self, path, target):
        self.path, self.target = path, target
        self.up, self.pairs, self.lock = True, [], threading.Lock()
        # connections accepted and piped so far
        self.accepted = 0
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(4)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                a, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                a.close()
                continue
            b = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            b.connect(self.target)
            with self.lock:
                self.pairs.append((a, b))
                self.accepted += 1
            for src, dst in ((a, b), (b, a)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src, dst):
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        # either side hung up: the link is down until the next connection
        with self.lock:
            self.pairs = [p for p in self.pairs if src not in p]

    def connected(self):
        """A connection is piped now (not one that either side closed)."""
        with self.lock:
            return len(self.pairs) > 0

    def drop(self):
        self.up = False
        with self.lock:
            for a, b in self.pairs:
                for s in (a, b):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            self.pairs = []

    def restore(self):
        self.up = True

    def inject(self, data):
        with self.lock:
            self.pairs[-1][1].sendall(data)

    def close(self):
        self.drop()
        self.listener.close()


def ping(n, timeout=3.0):
    """Send n ICMP echo requests from the host, one at a time; return how
    many were answered within `timeout` each."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(timeout)
    answered = 0
    try:
        for seq in range(n):
            body = struct.pack(">BBHHH", 8, 0, 0, 0x5153, seq) + bytes(range(56))
            csum = sum(struct.unpack(f">{len(body) // 2}H", body))
            csum = (csum & 0xFFFF) + (csum >> 16)
            csum = ~(csum + (csum >> 16)) & 0xFFFF
            s.sendto(body[:2] + struct.pack(">H", csum) + body[4:], (GUEST_IP, 0))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    reply = s.recv(2048)
                except socket.timeout:
                    break
                icmp = reply[(reply[0] & 0xF) * 4:]
                if icmp[0] == 0 and struct.unpack(">HH", icmp[4:8]) == (0x5153, seq):
                    answered += 1
                    break
    finally:
        s.close()
    return answered


def tcp_fetch(timeout=60):
    """Connect to the guests' server and read until it closes."""
    with socket.create_connection((GUEST_IP, TCP_PORT), timeout=timeout) as c:
        data = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                return data
            data += chunk


class Chain:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="qns-colo-")
        d = self.dir
        self.tap = Tap("qnscolo0", f"{HOST_IP}/24")
        try:
            self.primary = Guest(netdev=f"tap:{self.tap.name},vnet_hdr=off", extra_args=[
                "-chardev", f"socket,id=mirror0,path={d}/mirror0,server=on,wait=off",
                "-chardev", f"socket,id=compare1,path={d}/compare1,server=on,wait=off",
                "-chardev", f"socket,id=compare0,path={d}/compare0,server=on,wait=off",
                "-chardev", f"socket,id=compare0-0,path={d}/compare0",
                "-chardev", f"socket,id=compare_out,path={d}/compare_out,server=on,wait=off",
                "-chardev", f"socket,id=compare_out0,path={d}/compare_out",
                "-object", "filter-mirror,id=m0,netdev=n0,queue=tx,outdev=mirror0",
                "-object", "filter-redirector,id=redire0,netdev=n0,queue=rx,indev=compare_out",
                "-object", "filter-redirector,id=redire1,netdev=n0,queue=rx,outdev=compare0",
                "-object", "iothread,id=iothread1",
                "-object", "colo-compare,id=comp0,primary_in=compare0-0,secondary_in=compare1,"
                           "outdev=compare_out0,iothread=iothread1,compare_timeout=1000,"
                           "expired_scan_cycle=500",
            ])
            self.links = {"mirror": Relay(f"{d}/red0", f"{d}/mirror0"),
                          "secondary": Relay(f"{d}/red1", f"{d}/compare1")}
            self.secondary = Guest(extra_args=[
                "-chardev", f"socket,id=red0,path={d}/red0,reconnect-ms=1000",
                "-chardev", f"socket,id=red1,path={d}/red1,reconnect-ms=1000",
                "-object", "filter-redirector,id=f1,netdev=n0,queue=tx,indev=red0",
                "-object", "filter-redirector,id=f2,netdev=n0,queue=rx,outdev=red1",
                "-object", "filter-rewriter,id=rew0,netdev=n0,queue=all",
            ])
            for g in (self.primary, self.secondary):
                g.sh(f"ip addr add {GUEST_IP}/24 dev eth0")
                g.sh(f"sh -c 'qns-guest serve {TCP_PORT} {TCP_BYTES} >/dev/null 2>&1 &'")
            self.wait_links()
        except BaseException:
            self.close(check=False)
            raise

    def wait_links(self, timeout=30):
        deadline = time.monotonic() + timeout
        while not all(r.connected() for r in self.links.values()):
            assert time.monotonic() < deadline, "the secondary did not connect"
            time.sleep(0.1)
        self.primary.wait_connected()
        self.secondary.wait_connected()

    def snapshot(self):
        """Every counter along the chain, once it has stopped moving."""
        last = None
        for _ in range(100):
            cur = (self.primary.stats_by_name(), self.secondary.stats_by_name(),
                   self.primary.command("query-stats", target="netfilter"),
                   self.primary.nic_stats(), self.secondary.nic_stats(), self.tap.stats())
            if cur == last:
                return cur
            last = cur
            time.sleep(0.5)
        raise AssertionError("the chain's counters did not settle")

    def close(self, check=True):
        """End both QEMUs, then check how each ended (Qemu.close)."""
        ended = []
        for name in ("secondary", "primary"):
            if hasattr(self, name):
                try:
                    getattr(self, name).close(check)
                except AssertionError as e:
                    ended.append(f"{name}: {e}")
        for r in getattr(self, "links", {}).values():
            r.close()
        self.tap.close()
        assert not ended, "\n".join(ended)


@pytest.fixture
def chain():
    c = Chain()
    yield c
    c.close()


def colo_counters(query_stats):
    """comp0's counters from query-stats: (packets, bytes) for a frame
    counter, a count for an event counter (miscompare-*)."""
    (r,) = [r for r in query_stats if r["qom-path"] == "/objects/comp0"]
    values = {v["name"]: v["value"] for v in r["stats"]}
    out = {}
    for name, value in values.items():
        if name.endswith("-packets"):
            base = name[:-len("-packets")]
            out[base] = (value, values[f"{base}-bytes"])
        elif not name.endswith("-bytes"):
            out[name] = value
    return out


def comp0(g):
    return colo_counters(g.command("query-stats", target="netfilter"))


def delta(after, before):
    return tuple(a - b for a, b in zip(after, before))


def frames(stats, direction):
    return (stats[f"packets-{direction}"], stats[f"bytes-{direction}"])


def check_chain_adds_up(before, after):
    """The counters along the chain add up, between two snapshots."""
    (p0, s0, q0, pn0, sn0, t0), (p1, s1, q1, pn1, sn1, t1) = before, after
    host_to_guest = delta(frames(p1["m0"], "tx"), frames(p0["m0"], "tx"))
    # Host -> both guests: the primary gets what the tap sent, the mirror
    # copies all of it to the secondary, whose redirector injects it all.
    assert delta((pn1["rx_packets"], pn1["rx_bytes"]), (pn0["rx_packets"], pn0["rx_bytes"])) == host_to_guest
    assert delta(counter(p1["m0"], "outdev"), counter(p0["m0"], "outdev")) == host_to_guest
    assert delta(counter(s1["f1"], "indev"), counter(s0["f1"], "indev")) == host_to_guest
    assert delta((sn1["rx_packets"], sn1["rx_bytes"]), (sn0["rx_packets"], sn0["rx_bytes"])) == host_to_guest
    assert delta(frames(s1["rew0"], "tx"), frames(s0["rew0"], "tx")) == host_to_guest
    # Each guest -> colo-compare.
    primary_tx = delta((pn1["tx_packets"], pn1["tx_bytes"]), (pn0["tx_packets"], pn0["tx_bytes"]))
    secondary_tx = delta((sn1["tx_packets"], sn1["tx_bytes"]), (sn0["tx_packets"], sn0["tx_bytes"]))
    assert delta(frames(p1["redire1"], "rx"), frames(p0["redire1"], "rx")) == primary_tx
    assert delta(counter(p1["redire1"], "outdev"), counter(p0["redire1"], "outdev")) == primary_tx
    assert delta(frames(s1["f2"], "rx"), frames(s0["f2"], "rx")) == secondary_tx
    assert delta(counter(s1["f2"], "outdev"), counter(s0["f2"], "outdev")) == secondary_tx
    c0, c1 = colo_counters(q0), colo_counters(q1)
    assert delta(c1["primary"], c0["primary"]) == primary_tx
    assert delta(c1["secondary"], c0["secondary"]) == secondary_tx
    # What colo-compare releases is what reaches the host, through redire0.
    released = delta(c1["released"], c0["released"])
    assert delta(counter(p1["redire0"], "indev"), counter(p0["redire0"], "indev")) == released
    assert delta((t1["rx_packets"], t1["rx_bytes"]), (t0["rx_packets"], t0["rx_bytes"])) == released
    # Every primary packet was released or is still queued.
    queued = delta(c1["primary-queued"], c0["primary-queued"])
    assert (released[0] + queued[0], released[1] + queued[1]) == primary_tx
    for stats, name in ((p1, "redire0"), (p1, "redire1"), (p1, "m0"), (s1, "f1"), (s1, "f2")):
        for c in stats[name]["counters"]:
            if c["name"].endswith("-errors"):
                assert (c["packets"], c["bytes"]) == (0, 0), (name, c)
    return released, queued


def test_colo_chain_releases_what_both_sides_agree_on(chain):
    before = chain.snapshot()
    assert ping(10) == 10
    data = tcp_fetch()
    assert data == bytes((ord("a") + i % 4096 % 26) for i in range(TCP_BYTES))
    after = chain.snapshot()
    released, queued = check_chain_adds_up(before, after)
    c0, c1 = colo_counters(before[2]), colo_counters(after[2])
    # The echo replies and the TCP stream were compared and matched.
    assert released[0] > 10 + TCP_BYTES // 1460
    assert queued == (0, 0), c1
    for kind in ("miscompare-tcp", "miscompare-udp", "miscompare-icmp", "miscompare-other"):
        assert c1[kind] == c0[kind], (kind, c1)
    # The secondary's own netdev got nothing: f2 takes all it sends.
    assert (after[1]["f2"]["packets-rx"] - before[1]["f2"]["packets-rx"]) > 0


def test_colo_chain_survives_a_link_drop_and_garbage(chain):
    expected = bytes((ord("a") + i % 4096 % 26) for i in range(TCP_BYTES))
    assert ping(3) == 3
    # The secondary's link to colo-compare drops: the primary's replies
    # find no twin and stay queued (no checkpoint without COLO migration).
    chain.links["secondary"].drop()
    assert ping(2, timeout=2.0) == 0
    assert comp0(chain.primary)["primary-queued"][0] >= 2
    # It comes back (the secondary reconnects by itself). Whether the echo
    # connection's queued replies still find their twins depends on what
    # the secondary's redirector held while the link was down; compared
    # oldest first, a reply that never does holds that connection until a
    # checkpoint. A new connection is compared and released.
    chain.links["secondary"].restore()
    chain.wait_links()
    assert tcp_fetch() == expected
    # Garbage on secondary_in (a length over the maximum): counted, and
    # colo-compare hangs up, so that the secondary reconnects and its
    # stream starts clean; a new connection is released again.
    errors0 = comp0(chain.primary)["secondary-in-errors"]
    accepted0 = chain.links["secondary"].accepted
    chain.links["secondary"].inject(b"\xff\xff\xff\xff" + b"garbage" * 100)
    deadline = time.monotonic() + 10
    while comp0(chain.primary)["secondary-in-errors"] == errors0:
        assert time.monotonic() < deadline, "garbage not counted"
        time.sleep(0.1)
    while chain.links["secondary"].accepted == accepted0:
        assert time.monotonic() < deadline + 10, "the secondary did not reconnect"
        time.sleep(0.1)
    chain.wait_links()
    assert tcp_fetch() == expected
