"""A real guest's NIC held by a filter-redirector whose outdev peer reads
slowly, or not at all: nothing lost, QEMU answering throughout, and a NIC
reset inside the guest while held that leaves nothing wedged."""

import time

from guest import FrameReader, Guest
from helpers import duration
from qemu import poll
from test_guest_traffic import counter

REDIRECTOR = "filter-redirector,id=red,netdev=n0,queue=rx,outdev=rout"


def qmp_latencies(g, until, timeout=120):
    """Query the stats until until(stats) holds; return (stats, worst
    latency in seconds)."""
    worst = 0.0

    def timed_stats():
        nonlocal worst
        t = time.monotonic()
        stats = g.stats_by_name()
        worst = max(worst, time.monotonic() - t)
        return stats

    stats = poll(timed_stats, until, timeout, 0.05)
    assert until(stats), f"timed out; {stats}"
    return stats, worst


def test_guest_flood_into_slow_redirector_is_held_not_dropped():
    frames = 6000
    with Guest(chardevs=["rout"], extra_args=["-object", REDIRECTOR]) as g:
        reader = FrameReader(g.connect_chardev("rout"), chunk=16384, pause=0.01)  # ~1.5 MB/s
        g.wait_connected()
        seen = {}

        def watch():
            # QMP answers while the guest floods; the NIC gets held.
            seen["stats"], seen["worst"] = qmp_latencies(
                g, lambda s: counter(s["red"], "held")[0] > 0)
            reader.pause = 0  # then read at full speed

        out = g.sh_during(f"echo QNS''-GO; qns-guest send eth0 {frames} 1514",
                          b"QNS-GO", watch, timeout=300)
        assert f"frames {frames} bytes {frames * 1514}" in out
        nic = g.nic_stats()
        assert (nic["tx_packets"], nic["tx_bytes"]) == (frames, frames * 1514)
        assert reader.wait_for(frames, 60) == (frames, frames * 1514)
        stats = g.wait_for(lambda s: counter(s["red"], "outdev")[0] == frames, 30, "outdev")
        red = stats["red"]
        assert (red["packets-rx"], red["bytes-rx"]) == (frames, frames * 1514)
        assert counter(red, "outdev") == (frames, frames * 1514)
        assert counter(red, "outdev-errors") == (0, 0)
        held, (holds, micros) = counter(red, "held"), duration(g, "red", "hold-time")
        assert held[0] > 0 and sum(holds) == held[0] and micros > 0, (red, holds)
        assert seen["worst"] < 2.0, f"a QMP query took {seen['worst']:.2f} s during the flood"
        reader.close()


def test_nic_reset_in_guest_while_held_wedges_nothing():
    with Guest(chardevs=["rout"], extra_args=["-object", REDIRECTOR]) as g:
        reader = FrameReader(g.connect_chardev("rout"), pause=None)  # not reading
        g.wait_connected()
        # A flood in the background, outside the console's shell.
        g.sh("sh -c 'qns-guest send eth0 4000 1514 >/tmp/flood.out 2>&1 &'")
        qmp_latencies(g, lambda s: counter(s["red"], "held")[0] > 0, 120)
        # Link down and up while held, then a device reset: the module
        # reloads (virtio-net resets, QEMU purges the NIC's packets and
        # lets the hold go).
        g.sh("ip link set eth0 down; ip link set eth0 up")
        g.sh("killall qns-guest; sleep 0.2; rmmod virtio_net && "
             "insmod /lib/modules/virtio_net.ko && sleep 0.5 && ip link set eth0 up", timeout=120)
        reader.pause = 0
        red = g.wait_for(lambda s: counter(s["red"], "outdev")[0] == s["red"]["packets-rx"]
                         and reader.packets == s["red"]["packets-rx"], 60, "backlog written")["red"]
        # Everything the filter took reached the peer, nothing was refused;
        # and it took the flood (a hold needs more than the backlog).
        assert red["packets-rx"] > 100, red
        assert counter(red, "outdev") == (red["packets-rx"], red["bytes-rx"])
        assert reader.count() == (red["packets-rx"], red["bytes-rx"])
        assert counter(red, "outdev-errors") == (0, 0)
        # The new driver's traffic flows: nothing is held any more.
        before = red["packets-rx"]
        out = g.sh("qns-guest send eth0 500 1000", timeout=120)
        assert "frames 500 bytes 500000" in out
        nic = g.nic_stats()
        assert nic["tx_packets"] == 500
        red = g.wait_for(lambda s: s["red"]["packets-rx"] == before + 500
                         and counter(s["red"], "outdev")[0] == before + 500, 30, "new traffic")["red"]
        assert reader.wait_for(before + 500, 30)[0] == before + 500
        reader.close()
