"""A real Linux guest's traffic through every filter type, counted exactly.

The guest (scripts/build-guest.sh) sends and receives known UDP frames with
its own driver; each filter's counters must equal the guest driver's
/sys/class/net/eth0/statistics, and what arrives at each outdev (and in
filter-dump's pcap) must equal them too.
"""

import os
import struct
import tempfile

import pytest

from guest import FULL_BINARY, GUEST_MAC, FrameReader, Guest, Tap
from qemu import frame

SIZES = (60, 64, 128, 512, 1000, 1514)
GUEST_FRAMES = 3000
HOST_FRAMES = 2400
HOST_MAC = bytes.fromhex("525400000001")


def sizes_bytes(n, sizes=SIZES):
    return sum(sizes[i % len(sizes)] for i in range(n))


def host_frame(i, size):
    """An Ethernet/IPv4/UDP frame to the guest's MAC, UDP port 5000 (what
    `qns-guest recv` counts), of `size` bytes; 10.0.0.2 is not the guest's
    address, so its IP stack drops it without an answer."""
    mac = bytes.fromhex(GUEST_MAC.replace(":", ""))
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, size - 14, i & 0xFFFF, 0, 64, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    udp = struct.pack(">HHHH", 5001, 5000, size - 34, 0)
    body = ip + udp
    return mac + HOST_MAC + b"\x08\x00" + body + bytes((i + k) & 0xFF for k in range(size - 14 - len(body)))


def counter(stats, name):
    """(packets, bytes) of counter `name` of one filter's stats."""
    return next((c["packets"], c["bytes"]) for c in stats["counters"] if c["name"] == name)


def all_counters(stats):
    """{filter: {counter: (packets, bytes)}} of query-netfilter-stats by name."""
    return {n: {c["name"]: (c["packets"], c["bytes"]) for c in st.get("counters", [])}
            for n, st in stats.items()}


def pcap_records(path):
    """(count, bytes) of the records in a pcap file (their captured lengths)."""
    with open(path, "rb") as f:
        data = f.read()
    off, n, total = 24, 0, 0
    while off + 16 <= len(data):
        caplen = struct.unpack("<I", data[off + 8:off + 12])[0]
        off += 16 + caplen
        n += 1
        total += caplen
    return n, total


ALL_FILTERS = [
    # Listed first, walked last for what the guest sends: it takes the
    # guest's frames away to rout (none reach the netdev's peer).
    "filter-redirector,id=red,netdev=n0,queue=rx,outdev=rout",
    "filter-dump,id=dump,netdev=n0,file={dir}/dump.pcap,maxlen=65536",
    "filter-mirror,id=mir,netdev=n0,queue=all,outdev=mout",
    "filter-buffer,id=buf,netdev=n0,interval=10000",
    "filter-rewriter,id=rew,netdev=n0",
]


def start(binary=None, machine="microvm", nic="virtio-net-device", netdev="socket",
          filters=ALL_FILTERS, chardevs=("rout", "mout")):
    d = tempfile.mkdtemp(prefix="qns-guest-")
    args = []
    for f in filters:
        args += ["-object", f.format(dir=d)]
    g = Guest(binary=binary, machine=machine, nic=nic, netdev=netdev,
              chardevs=chardevs, extra_args=args)
    g.tmp = d
    return g


def exchange(g, host_send, guest_frames=GUEST_FRAMES, host_frames=HOST_FRAMES):
    """The guest sends guest_frames, then receives host_frames that
    host_send(i, frame) writes; returns the guest's own counts."""
    def send_all():
        for i in range(host_frames):
            # Unpaced: filter-buffer releases bursts bigger than e1000's
            # ring, which the glue keeps queued until the guest refills it.
            host_send(i, host_frame(i, SIZES[i % len(SIZES)]))

    received = g.sh_during(f"qns-guest recv eth0 {host_frames} 5000", b"listening", send_all)
    assert f"frames {host_frames} bytes {sizes_bytes(host_frames)}" in received, received
    sent = g.sh(f"qns-guest send eth0 {guest_frames} {','.join(map(str, SIZES))}")
    assert f"frames {guest_frames} bytes {sizes_bytes(guest_frames)}" in sent, sent


def check_all_filters(g, readers, nic_stats, peer_reader=None):
    """Every filter's counters equal the guest's driver; every outdev got
    exactly what its filter counted."""
    tx_guest = (nic_stats["tx_packets"], nic_stats["tx_bytes"])
    rx_guest = (nic_stats["rx_packets"], nic_stats["rx_bytes"])
    both = (tx_guest[0] + rx_guest[0], tx_guest[1] + rx_guest[1])
    mout, rout = readers["mout"], readers["rout"]
    # filter-buffer releases within 10 ms; the outdevs drain.
    stats = g.wait_for(lambda s: counter(s["mir"], "outdev")[0] == both[0]
                       and counter(s["red"], "outdev")[0] == tx_guest[0], 30, "outdevs")
    assert mout.wait_for(both[0]) == both
    assert rout.wait_for(tx_guest[0]) == tx_guest
    for name in ("red", "dump", "mir", "buf", "rew"):
        s = stats[name]
        # rx: what the netdev receives, i.e. what the guest sends; the
        # redirector (queue=rx) is handed nothing of the other direction
        assert (s["packets-rx"], s["bytes-rx"]) == tx_guest, (name, s)
        assert (s["packets-tx"], s["bytes-tx"]) == (rx_guest if name != "red" else (0, 0)), (name, s)
    counters = all_counters(stats)
    assert counters["mir"]["outdev"] == both
    assert counters["red"]["outdev"] == tx_guest
    assert counters["buf"]["released"] == both
    assert counters["buf"]["dropped"] == (0, 0)
    assert counters["dump"]["written"] == both
    assert pcap_records(os.path.join(g.tmp, "dump.pcap")) == both
    for n in ("mir", "red"):
        assert counters[n]["outdev-errors"] == (0, 0)
    if peer_reader is not None:
        # the redirector took everything the guest sent
        assert peer_reader.count() == (0, 0)


def through_every_filter(**start_args):
    """The exchange on a socket netdev with ALL_FILTERS, checked."""
    with start(**start_args) as g:
        readers = {n: FrameReader(g.connect_chardev(n)) for n in ("rout", "mout")}
        peer = FrameReader(g.netdev_peer)
        g.wait_connected()
        exchange(g, lambda i, f: g.netdev_peer.sendall(frame(f)))
        check_all_filters(g, readers, g.nic_stats(), peer)
        for r in list(readers.values()) + [peer]:
            r.close()


def test_virtio_net_device_through_every_filter():
    """microvm (minimal build), virtio-net-device on a socket netdev."""
    through_every_filter()


@pytest.mark.needs_full
@pytest.mark.parametrize("nic", ["virtio-net-pci", "e1000"])
def test_pci_nic_through_every_filter(nic):
    """pc (full build), a PCI NIC (no option ROM: -kernel boots) on a
    socket netdev."""
    through_every_filter(binary=FULL_BINARY, machine="pc", nic=f"{nic},romfile=")


@pytest.mark.needs_tap
def test_tap_with_vnet_header_counts_ethernet_frames():
    """virtio-net on a tap netdev negotiates the 12-byte vnet header: the
    filters count the Ethernet frame without it, as filter-dump writes it
    and the guest counts it; the mirror's wire frames carry it, with its
    length (vnet_hdr_support). Without vnet_hdr_support a mirror writes the
    Ethernet frames alone, and a redirector's indev frames (Ethernet frames
    alone) reach the guest whole (glue 0024: both carried the header
    unannounced before)."""
    tap = Tap("qnsvt0")
    try:
        filters = ["filter-dump,id=dump,netdev=n0,file={dir}/dump.pcap,maxlen=65536",
                   "filter-mirror,id=mir,netdev=n0,queue=all,outdev=mout,vnet_hdr_support=on",
                   "filter-buffer,id=buf,netdev=n0,interval=10000",
                   "filter-rewriter,id=rew,netdev=n0,vnet_hdr_support=on",
                   "filter-mirror,id=mir0,netdev=n0,queue=all,outdev=mout0",
                   "filter-redirector,id=inj,netdev=n0,queue=tx,indev=rin"]
        with start(netdev=f"tap:{tap.name}", filters=filters,
                   chardevs=("mout", "mout0", "rin")) as g:
            mout = FrameReader(g.connect_chardev("mout"), vnet=True)
            mout0 = FrameReader(g.connect_chardev("mout0"))
            rin = g.connect_chardev("rin")
            g.wait_connected()
            exchange(g, lambda i, f: tap.sock.send(f))
            nic = g.nic_stats()
            tx_guest = (nic["tx_packets"], nic["tx_bytes"])
            rx_guest = (nic["rx_packets"], nic["rx_bytes"])
            assert tx_guest == (GUEST_FRAMES, sizes_bytes(GUEST_FRAMES))
            assert rx_guest == (HOST_FRAMES, sizes_bytes(HOST_FRAMES))
            both = (tx_guest[0] + rx_guest[0], tx_guest[1] + rx_guest[1])
            stats = g.wait_for(lambda s: counter(s["mir"], "outdev")[0] == both[0], 30,
                               "mirror outdev")
            for name in ("dump", "mir", "buf", "rew"):
                s = stats[name]
                assert (s["packets-rx"], s["bytes-rx"]) == tx_guest, (name, s)
                assert (s["packets-tx"], s["bytes-tx"]) == rx_guest, (name, s)
            counters = all_counters(stats)
            assert counters["mir"]["outdev"] == both
            assert counters["buf"]["released"] == both
            assert counters["dump"]["written"] == both
            assert pcap_records(os.path.join(g.tmp, "dump.pcap")) == both
            # On the wire: each payload is the 12-byte header and the frame.
            mout.wait_for(both[0])
            assert mout.count() == (both[0], both[1] + 12 * both[0])
            mout.close()
            # Without vnet_hdr_support: the Ethernet frames alone.
            assert counters["mir0"]["outdev"] == both
            assert mout0.wait_for(both[0]) == both
            mout0.close()
            injected = [host_frame(i, SIZES[i % len(SIZES)]) for i in range(200)]
            out = g.sh_during("qns-guest recv eth0 200 5000", b"listening",
                              lambda: rin.sendall(b"".join(frame(f) for f in injected)))
            assert f"frames 200 bytes {sizes_bytes(200)}" in out, out
    finally:
        tap.close()
