"""A COLO pair's network, wired as QEMU's docs/COLO-FT.txt wires it,
around two QEMUs running the test guest, with real traffic from the host.
test_colo_chain.py runs it with two guests that each boot (no COLO
migration: nothing is ever checkpointed); test_colo_pair.py runs it as a
COLO pair: the secondary is the primary's guest, migrated to it with
x-colo, checkpointed and failed over.

Primary (a tap netdev to the host, no vnet header: as in the docs, no
filter needs vnet_hdr_support):
  filter-mirror m0 (queue=tx, outdev=mirror0)   host -> guest, copied to S
  filter-redirector redire0 (queue=rx, indev=compare_out)   what comp0 releases
  filter-redirector redire1 (queue=rx, outdev=compare0)     guest -> comp0
  colo-compare comp0 (primary_in=compare0-0, secondary_in=compare1,
                      outdev=compare_out0)
Secondary (its own netdev carries nothing while the pair runs):
  filter-redirector f1 (queue=tx, indev=red0)   the mirrored frames
  filter-redirector f2 (queue=rx, outdev=red1)  guest -> comp0's secondary_in
  filter-rewriter rew0                          TCP sequence numbers

The two links between the QEMUs (mirror0 -> red0, red1 -> compare1) go
through a relay in the test, which can drop them and write garbage.
In a COLO pair the secondary's netdev is a tap of its own (qnscolo1) with
no address: when the secondary takes over, the host's address moves to it,
as the network moves to the new primary after a failover.
"""

import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time

from guest import Guest, Tap
from qemu import poll, wait_until
from test_guest_traffic import counter

HOST_IP, GUEST_IP = "10.213.7.1", "10.213.7.2"
# the guests' servers: a fixed stream (qns-guest serve), TCP and UDP echo
TCP_PORT, TCP_BYTES = 8000, 300_000
ECHO_PORT = 7
FILTERS = {"primary": ("m0", "redire0", "redire1", "comp0"),
           "secondary": ("f1", "f2", "rew0")}


def served_bytes(n=TCP_BYTES):
    """What `qns-guest serve` writes on each connection."""
    return bytes((ord("a") + i % 4096 % 26) for i in range(n))


class Relay:
    """Accept connections on `path` and pipe each, both ways, to a new
    connection to `target`; drop() cuts the link (and refuses it) until
    restore(); inject() writes to the target side; hold() stops piping
    (both ways) until release(). `path` and `target` are unix socket
    paths, or (host, port) for TCP (port 0 for any: `address` says which)."""

    def __init__(self, path, target):
        self.target = target
        self.family = socket.AF_UNIX if isinstance(target, str) else socket.AF_INET
        self.up, self.pairs, self.lock = True, [], threading.Lock()
        self.flowing = threading.Event()
        self.flowing.set()
        # the connections accepted (the others are ours, to the target)
        self.listened = set()
        # see hold_before()
        self.hold_word = None
        # connections accepted and piped so far
        self.accepted = 0
        self.listener = socket.socket(self.family, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(4)
        self.address = self.listener.getsockname()
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
            b = socket.socket(self.family, socket.SOCK_STREAM)
            b.connect(self.target)
            if self.family == socket.AF_INET:
                for c in (a, b):
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.pairs.append((a, b))
                self.listened.add(a)
                self.accepted += 1
            for src, dst in ((a, b), (b, a)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src, dst):
        # bytes piped so far from the target's side
        back = 0
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                self.flowing.wait()
                if self.hold_word is not None and src not in self.listened:
                    data, back = self._hold_at_word(data, dst, back)
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

    def hold(self):
        self.flowing.clear()

    def release(self):
        self.flowing.set()

    def hold_before(self, word):
        """Stop piping (hold()) just before the target's side sends the
        big-endian 32-bit `word` at a multiple of 4 bytes into its stream
        (a migration return path: COLO messages only)."""
        self.hold_word = struct.pack(">I", word)

    def _hold_at_word(self, data, dst, offset):
        """Send what comes before hold_word in `data` (which starts at
        `offset` of the stream), then hold; return the rest and the
        offset after `data`."""
        for i in range(-offset % 4, len(data) - 3, 4):
            if data[i:i + 4] == self.hold_word:
                dst.sendall(data[:i])
                self.hold_word = None
                self.hold()
                self.flowing.wait()
                return data[i:], offset + len(data)
        return data, offset + len(data)

    def inject(self, data):
        with self.lock:
            self.pairs[-1][1].sendall(data)

    def close(self):
        self.release()
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
                except TimeoutError:
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


def tcp_echo(data, timeout=60):
    """Send `data` to the guests' TCP echo server while reading what comes
    back; return it once the server closed after our shutdown."""
    with socket.create_connection((GUEST_IP, ECHO_PORT), timeout=timeout) as c:
        got = []

        def send():
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            got.append(chunk)
        sender.join()
        return b"".join(got)


def udp_echo(n, size=200, timeout=2.0):
    """Send n numbered UDP datagrams to the guests' echo server, one at a
    time; return the sequence numbers answered, in the order they came."""
    answered = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        for seq in range(n):
            payload = struct.pack(">I", seq) + bytes(size - 4)
            s.sendto(payload, (GUEST_IP, ECHO_PORT))
            try:
                reply = s.recv(65536)
            except TimeoutError:
                continue
            assert reply[4:] == payload[4:], "an echo came back changed"
            answered.append(struct.unpack(">I", reply[:4])[0])
    return answered


class Chain:
    """The chain around two QEMUs. With `colo`, the secondary waits for
    the primary's guest (-incoming defer) and start_colo() makes them a
    COLO pair; without it, both guests boot and run the servers."""

    def __init__(self, colo=False):
        self.dir = tempfile.mkdtemp(prefix="qns-colo-")
        self.colo = colo
        # the QEMUs the test killed (a failover), by name
        self.killed = set()
        d = self.dir
        self.tap = Tap("qnscolo0", f"{HOST_IP}/24")
        self.taps = [self.tap]
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
            secondary_net = {}
            if colo:
                self.taps.append(Tap("qnscolo1"))
                secondary_net = {"netdev": f"tap:{self.taps[1].name},vnet_hdr=off"}
            self.secondary = Guest(incoming=colo, **secondary_net, extra_args=[
                "-chardev", f"socket,id=red0,path={d}/red0,reconnect-ms=1000",
                "-chardev", f"socket,id=red1,path={d}/red1,reconnect-ms=1000",
                "-object", "filter-redirector,id=f1,netdev=n0,queue=tx,indev=red0",
                "-object", "filter-redirector,id=f2,netdev=n0,queue=rx,outdev=red1",
                "-object", "filter-rewriter,id=rew0,netdev=n0,queue=all",
            ])
            # A COLO secondary gets the primary's guest, servers and all.
            for g in (self.primary,) if colo else (self.primary, self.secondary):
                g.sh(f"ip addr add {GUEST_IP}/24 dev eth0")
                for server in (f"serve {TCP_PORT} {TCP_BYTES}", f"echo tcp {ECHO_PORT}",
                               f"echo udp {ECHO_PORT}"):
                    g.sh(f"sh -c 'qns-guest {server} >/dev/null 2>&1 &'")
            self.wait_links()
        except BaseException:
            self.close(check=False)
            raise

    def start_colo(self, checkpoint_delay_ms, relayed=False):
        """Migrate the primary's guest to the secondary with x-colo (over
        TCP, as users run it; `relayed`: through links["migration"], which
        the test can hold) and wait for both to be in COLO; return the
        seconds that took."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if relayed:
            self.links["migration"] = Relay(("127.0.0.1", 0), ("127.0.0.1", port))
            host, relay_port = self.links["migration"].address
            uri = f"tcp:{host}:{relay_port}"
        else:
            uri = f"tcp:127.0.0.1:{port}"
        caps = [{"capability": "x-colo", "state": True}]
        start = time.monotonic()
        self.secondary.command("migrate-set-capabilities", capabilities=caps)
        self.secondary.command("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        self.primary.command("migrate-set-capabilities", capabilities=caps)
        self.primary.command("migrate-set-parameters", **{"x-checkpoint-delay": checkpoint_delay_ms})
        self.primary.command("migrate", uri=uri)
        def colo():
            status = self.primary.command("query-migrate").get("status")
            modes = [g.command("query-colo-status")["mode"] for g in (self.primary, self.secondary)]
            assert status not in ("failed", "cancelled"), self.primary.command("query-migrate")
            return status, modes

        got = poll(colo, lambda got: got == ("colo", ["primary", "secondary"]), 120, 0.05)
        assert got == ("colo", ["primary", "secondary"]), f"no COLO after 120 s: {got}"
        return time.monotonic() - start

    def checkpoints(self):
        """The primary's checkpoints so far, each (start, pause): a
        checkpoint stops the primary's VM (event STOP) and resumes it
        (RESUME), timestamps in seconds."""
        out, stopped = [], None
        for e in self.primary.events():
            ts = e["timestamp"]["seconds"] + e["timestamp"]["microseconds"] / 1e6
            if e["event"] == "STOP":
                stopped = ts
            elif e["event"] == "RESUME" and stopped is not None:
                out.append((stopped, ts - stopped))
                stopped = None
        # the migration's own stop, before COLO began, is not a checkpoint
        return out[1:]

    def kill(self, name):
        """A QEMU of the pair dies (SIGKILL), as when its host fails."""
        g = getattr(self, name)
        g.proc.kill()
        g.proc.wait()
        self.killed.add(name)

    def failover_to_primary(self):
        """The secondary is lost: the primary's guest goes on alone, its
        network direct, torn down as docs/COLO-FT.txt says ("Primary
        Failover")."""
        p = self.primary
        for obj in ("comp0", "iothread1", "m0", "redire0", "redire1"):
            p.command("object-del", id=obj)
        self._lost_heartbeat(p, "primary")

    def failover_to_secondary(self):
        """The primary is lost: the secondary's guest takes over ("Secondary
        Failover"), and the host's network moves to it."""
        s = self.secondary
        self._lost_heartbeat(s, "secondary")
        for obj in ("f2", "f1"):
            s.command("object-del", id=obj)
        for chardev in ("red1", "red0"):
            s.command("chardev-remove", id=chardev)
        subprocess.run(["ip", "addr", "del", f"{HOST_IP}/24", "dev", self.taps[0].name], check=True)
        subprocess.run(["ip", "addr", "add", f"{HOST_IP}/24", "dev", self.taps[1].name], check=True)
        s.resync()

    @staticmethod
    def _lost_heartbeat(g, mode):
        """Fail over to `g`: unblock its migration channel (yank), tell it
        the other side is gone, and wait until it has left COLO. (Its one
        COLO_EXIT event's reason is "request" or "error" as its COLO thread
        and the failover race in stock QEMU: not checked.)"""
        g.command("yank", instances=[{"type": "migration"}])
        g.command("x-colo-lost-heartbeat")
        # (the mode is none once the failover ran; the COLO thread sends
        # its COLO_EXIT when it gets there, which may be later)
        wait_until(lambda: g.command("query-colo-status")["mode"] == "none" and g.events("COLO_EXIT"),
                   lambda _: (g.command("query-colo-status"), g.events()), 30, 0.05)
        (exit_event,) = g.events("COLO_EXIT")
        assert exit_event["data"]["mode"] == mode, exit_event

    def wait_links(self, timeout=30):
        wait_until(lambda: all(r.connected() for r in self.links.values()),
                   "the secondary did not connect", timeout, 0.1)
        self.primary.wait_connected()
        self.secondary.wait_connected()

    def snapshot(self):
        """Every counter along the chain, once it has stopped moving."""
        last = None
        for _ in range(100):
            cur = (self.primary.stats_by_name(), self.secondary.stats_by_name(),
                   self.primary.command("query-stats", target="netfilter"),
                   self.primary.nic_stats(),
                   # a COLO secondary's guest is the primary's at each checkpoint
                   None if self.colo else self.secondary.nic_stats(), self.tap.stats())
            if cur == last:
                return cur
            last = cur
            time.sleep(0.5)
        raise AssertionError("the chain's counters did not settle")

    def close(self, check=True):
        """End both QEMUs, then check how each ended (Qemu.close), but for
        one that the test killed (kill())."""
        ended = []
        for name in ("secondary", "primary"):
            if hasattr(self, name):
                try:
                    getattr(self, name).close(check and name not in self.killed)
                except AssertionError as e:
                    ended.append(f"{name}: {e}")
        for r in getattr(self, "links", {}).values():
            r.close()
        for t in self.taps:
            t.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        assert not ended, "\n".join(ended)


def colo_counters(query_stats):
    """comp0's counters from query-stats: (packets, bytes) for a frame
    counter, a count for an event counter (miscompare-*), the buckets of
    release-latency and the sum of its µs (release-latency-sum)."""
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
    """The counters along the chain add up, between two snapshots (of a
    chain whose QEMUs both still run)."""
    (p0, s0, q0, pn0, sn0, t0), (p1, s1, q1, pn1, sn1, t1) = before, after
    host_to_guest = delta(frames(p1["m0"], "tx"), frames(p0["m0"], "tx"))
    # Host -> both guests: the primary gets what the tap sent, the mirror
    # copies all of it to the secondary, whose redirector injects it all.
    assert delta((pn1["rx_packets"], pn1["rx_bytes"]), (pn0["rx_packets"], pn0["rx_bytes"])) == host_to_guest
    assert delta(counter(p1["m0"], "outdev"), counter(p0["m0"], "outdev")) == host_to_guest
    assert delta(counter(s1["f1"], "indev"), counter(s0["f1"], "indev")) == host_to_guest
    if sn1 is not None:
        assert delta((sn1["rx_packets"], sn1["rx_bytes"]),
                     (sn0["rx_packets"], sn0["rx_bytes"])) == host_to_guest
    assert delta(frames(s1["rew0"], "tx"), frames(s0["rew0"], "tx")) == host_to_guest
    # Each guest -> colo-compare.
    primary_tx = delta((pn1["tx_packets"], pn1["tx_bytes"]), (pn0["tx_packets"], pn0["tx_bytes"]))
    # (a COLO secondary's guest counters are not its own: what f2 took)
    secondary_tx = (delta(frames(s1["f2"], "rx"), frames(s0["f2"], "rx")) if sn1 is None else
                    delta((sn1["tx_packets"], sn1["tx_bytes"]), (sn0["tx_packets"], sn0["tx_bytes"])))
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
    # Every primary packet was released or is still queued; each release
    # has its latency.
    queued = delta(c1["primary-queued"], c0["primary-queued"])
    assert (released[0] + queued[0], released[1] + queued[1]) == primary_tx
    assert sum(delta(c1["release-latency"], c0["release-latency"])) == released[0]
    # Each checkpoint request has its reason.
    assert c1["checkpoint-requests"] - c0["checkpoint-requests"] == sum(
        c1[k] - c0[k] for k in c1 if k.startswith("miscompare-"))
    # No error between the snapshots. (Before the first, a host that still
    # retransmits to a guest of an earlier test may ARP while the primary
    # boots and its mirror has no peer yet: those count, and are not ours.)
    for (st0, st1), name in (((p0, p1), "redire0"), ((p0, p1), "redire1"), ((p0, p1), "m0"),
                             ((s0, s1), "f1"), ((s0, s1), "f2")):
        for c in st1[name]["counters"]:
            if c["name"].endswith("-errors"):
                assert delta(counter(st1[name], c["name"]), counter(st0[name], c["name"])) == (0, 0), \
                    (name, c)
    return released, queued
