"""Seeded random sequences of what users and management layers do to
filters, colo-compare, NICs and the netdev while traffic flows, checking after every
step that QEMU answers, its filters are the ones the test made, their
cumulative counters never go back, and (at the end) that QEMU quits cleanly
(Qemu.close). On the sanitizer build every step also runs under ASan and
UBSan; that build has the pc machine, so NICs are unplugged and plugged
again there (the ACPI eject the guest would do is written through QEMU's
qtest socket).

A failure names the seed and the steps so far; replay one with
QNS_LIFECYCLE_SEEDS=SEED (and QNS_LIFECYCLE_STEPS=N). scripts/lifecycle.sh
runs many seeds for longer.
"""

import os
import random
import select
import socket
import threading
import time

import pytest

from qemu import Qemu, QmpError, frame, udp_frame, wait_until

SEEDS = [int(s) for s in os.environ.get("QNS_LIFECYCLE_SEEDS", "1 2 3 4 5").split()]
STEPS = int(os.environ.get("QNS_LIFECYCLE_STEPS", "100"))
# What the filters report that only ever counts up.
CUMULATIVE = ("packets-tx", "bytes-tx", "packets-rx", "bytes-rx")
# pc: the slot of the NIC the test unplugs, and PIIX4's ACPI eject register.
NIC_SLOT, ACPI_PCI_EJECT = 4, 0xAE08


class Peer:
    """The test's end of an outdev (or indev) chardev: a reader that can
    stop reading, go on, hang up and connect again."""

    def __init__(self, q, name):
        self.q, self.name = q, name
        self.reading = threading.Event()
        self.reading.set()
        self.sock = None
        self.connect()

    def connect(self):
        self.sock = self.q.connect_chardev(self.name)
        self.unsent = b""
        threading.Thread(target=self._read, args=(self.sock,), daemon=True).start()

    def _read(self, sock):
        while True:
            if not self.reading.wait(0.1):
                continue
            try:
                if not select.select([sock], [], [], 0.1)[0]:
                    continue
                if not sock.recv(1 << 16):
                    return
            except (OSError, ValueError):
                return

    def hang_up(self):
        self.sock.close()

    def close(self):
        self.reading.set()
        self.sock.close()


class World:
    """A QEMU and the test's model of what it should hold."""

    def __init__(self, rng, tmp_path):
        self.rng, self.tmp = rng, tmp_path
        self.qtest = None
        pc = self._has_pc()
        args = ["-object", "iothread,id=io0"]
        if pc:
            self.qtest_path = os.path.join(str(tmp_path), "qtest.sock")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(self.qtest_path)
            listener.listen(1)
            machine = ("-M", "pc", "-accel", "qtest", "-qtest", f"unix:{self.qtest_path}")
            nic = f"e1000,id=nic0,addr={NIC_SLOT}.0,romfile="
        else:
            machine = ("-M", "microvm", "-accel", "qtest")
            nic = "virtio-net-device"
        self.q = Qemu(machine=machine, nic=nic, extra_args=args)
        if pc:
            listener.settimeout(30)
            self.qtest, _ = listener.accept()
            self.qtest_file = self.qtest.makefile("rb")
            listener.close()
        self.pc = pc
        self.nic_plugged = True
        self.netdev = True
        self.filters = {}      # id -> chardev names it uses
        self.peers = {}        # chardev -> Peer
        self.colo = None
        self.serial = 0
        self.last = {}
        self.netdev_unsent = b""

    @staticmethod
    def _has_pc():
        with Qemu() as probe:
            return any("pc" in (m["name"], m.get("alias")) for m in probe.command("query-machines"))

    def qtest_cmd(self, line):
        self.qtest.sendall(line.encode() + b"\n")
        reply = self.qtest_file.readline()
        assert reply.startswith(b"OK"), (line, reply)

    def chardev(self, peer=True):
        self.serial += 1
        name = f"c{self.serial}"
        self.q.command("chardev-add", id=name, backend={"type": "socket", "data": {
            "addr": {"type": "unix", "data": {"path": self.q.chardev_path(name)}},
            "server": True, "wait": False}})
        if peer:
            self.peers[name] = Peer(self.q, name)
        return name

    def drop_chardev(self, name):
        peer = self.peers.pop(name, None)
        if peer:
            peer.close()
        self.q.command("chardev-remove", id=name)

    # The steps -----------------------------------------------------------

    def add_filter(self):
        self.serial += 1
        fid = f"f{self.serial}"
        kind = self.rng.choice(["filter-mirror", "filter-redirector", "filter-buffer",
                                "filter-dump", "filter-rewriter"])
        args = {"qom-type": kind, "id": fid, "netdev": "n0",
                "queue": self.rng.choice(["all", "rx", "tx"])}
        chardevs = []
        if kind == "filter-mirror":
            chardevs = [self.chardev()]
            args["outdev"] = chardevs[0]
        elif kind == "filter-redirector":
            chardevs = [self.chardev(), self.chardev()]
            args.update(outdev=chardevs[0], indev=chardevs[1])
        elif kind == "filter-buffer":
            args["interval"] = self.rng.choice([1000, 100000])
        elif kind == "filter-dump":
            args["file"] = os.path.join(str(self.tmp), f"{fid}.pcap")
        if kind in ("filter-mirror", "filter-redirector"):
            args["vnet_hdr_support"] = self.rng.random() < 0.5
        self.q.command("object-add", **args)
        self.filters[fid] = chardevs
        return f"object-add {kind} {fid} queue={args['queue']}"

    def del_filter(self):
        fid = self.rng.choice(sorted(self.filters))
        self.q.command("object-del", id=fid)
        for name in self.filters.pop(fid):
            self.drop_chardev(name)
        self.last.pop(fid, None)
        return f"object-del {fid}"

    def toggle_filter(self):
        fid = self.rng.choice(sorted(self.filters))
        status = self.rng.choice(["on", "off"])
        self.q.command("qom-set", path=f"/objects/{fid}", property="status", value=status)
        return f"qom-set {fid} status={status}"

    @staticmethod
    def push(sock, unsent, data):
        """Write what the socket takes now, whole frames after what was left
        unsent before (a partial frame then a new one would be garbage);
        return what is left."""
        unsent += data
        sock.setblocking(False)
        try:
            while unsent:
                unsent = unsent[sock.send(unsent):]
        except BlockingIOError:
            pass  # held: the netdev or redirector stopped reading, as it should
        except OSError:
            unsent = b""
        return unsent

    def traffic(self):
        n = self.rng.randint(1, 200)
        size = self.rng.choice([60, 1514, 9000])
        data = b"".join(frame(udp_frame(1000 + i, bytes(size - 42))) for i in range(n))
        self.netdev_unsent = self.push(self.q.netdev_peer, self.netdev_unsent, data)
        indevs = [peer for fid, names in self.filters.items() for name in names[1:]
                  for peer in [self.peers.get(name)] if peer]
        for peer in indevs[:1]:
            peer.unsent = self.push(peer.sock, peer.unsent, data)
        return f"traffic {n} x {size} B (+{len(indevs[:1])} indev)"

    def peer_pause(self):
        name = self.rng.choice(sorted(self.peers))
        peer = self.peers[name]
        if peer.reading.is_set():
            peer.reading.clear()
            return f"peer {name} stops reading"
        peer.reading.set()
        return f"peer {name} reads again"

    def peer_reconnect(self):
        name = self.rng.choice(sorted(self.peers))
        self.peers[name].hang_up()
        time.sleep(0.05)
        self.peers[name].connect()
        return f"peer {name} hangs up and connects again"

    def stop_cont(self):
        command = "stop" if self.q.command("query-status")["running"] else "cont"
        self.q.command(command)
        return command

    def reset(self):
        self.q.command("system_reset")
        return "system_reset"

    def colo_compare(self):
        if self.colo:
            self.q.command("object-del", id="cc0")
            for name in self.colo:
                self.drop_chardev(name)
            self.colo = None
            return "object-del colo-compare"
        self.colo = [self.chardev(), self.chardev(), self.chardev()]
        self.q.command("object-add", **{"qom-type": "colo-compare", "id": "cc0",
                                       "primary_in": self.colo[0],
                                       "secondary_in": self.colo[1],
                                       "outdev": self.colo[2], "iothread": "io0"})
        f = frame(udp_frame(2000, bytes(100)))
        for name in self.colo[:2]:
            self.peers[name].sock.sendall(f * 20)
        return "object-add colo-compare, 20 equal pairs"

    def unplug_nic(self):
        if self.nic_plugged:
            self.q.command("device_del", id="nic0")
            self.qtest_cmd(f"outl {ACPI_PCI_EJECT:#x} {1 << NIC_SLOT:#x}")
            wait_until(lambda: "error" in self.q.command_raw(
                "qom-get", {"path": "/machine/peripheral/nic0", "property": "type"}),
                "the NIC was not unplugged")
            self.nic_plugged = False
            return "device_del e1000 (ejected)"
        self.q.command("device_add", driver="e1000", id="nic0", netdev="n0",
                       addr=f"{NIC_SLOT}.0", romfile="")
        self.nic_plugged = True
        return "device_add e1000"

    def netdev_del(self):
        """The end of n0 and every filter on it (rare: nothing flows after)."""
        self.q.command("netdev_del", id="n0")
        for fid in sorted(self.filters):
            for name in self.filters.pop(fid):
                self.drop_chardev(name)
            self.last.pop(fid, None)
        self.netdev = False
        return "netdev_del n0"

    def step(self):
        steps = [(self.stop_cont, 1), (self.reset, 1), (self.colo_compare, 1)]
        if self.netdev:
            steps += [(self.add_filter, 4), (self.traffic, 6), (self.netdev_del, 0.1)]
        if self.filters:
            steps += [(self.del_filter, 2), (self.toggle_filter, 2)]
        if self.peers:
            steps += [(self.peer_pause, 2), (self.peer_reconnect, 1)]
        if self.pc and self.netdev:
            steps += [(self.unplug_nic, 1)]
        fn = self.rng.choices([f for f, _ in steps], [w for _, w in steps])[0]
        return fn()

    def check(self):
        """QEMU answers; its filters are the model's; nothing counted goes back."""
        start = time.monotonic()
        stats = {s["name"]: s for s in self.q.stats()}
        assert time.monotonic() - start < 5, "query-netfilter-stats took over 5 s"
        assert sorted(stats) == sorted(self.filters), (sorted(stats), sorted(self.filters))
        for fid, s in stats.items():
            now = [s[k] for k in CUMULATIVE]
            before = self.last.get(fid)
            assert before is None or all(a >= b for a, b in zip(now, before)), (fid, before, now)
            self.last[fid] = now
        if self.colo:
            (r,) = self.q.command("query-stats", target="netfilter",
                                  providers=[{"provider": "colo-compare"}])
            assert r["qom-path"] == "/objects/cc0"

    def close(self):
        for peer in self.peers.values():
            peer.close()
        if self.qtest:
            self.qtest.close()


@pytest.mark.parametrize("seed", SEEDS)
def test_random_lifecycle(seed, tmp_path):
    rng = random.Random(seed)
    world = World(rng, tmp_path)
    done = []
    try:
        for _ in range(STEPS):
            done.append(world.step())
            world.check()
        world.q.close()
    except (AssertionError, QmpError, OSError, EOFError) as e:
        steps = "\n  ".join(done)
        raise AssertionError(f"seed {seed}, after {len(done)} steps (replay: "
                             f"QNS_LIFECYCLE_SEEDS={seed} QNS_LIFECYCLE_STEPS={len(done)}):"
                             f"\n  {steps}\nQEMU's log ends:\n{world.q.stderr()[-3000:]}") from e
    finally:
        world.close()
        world.q.close(check=False)
