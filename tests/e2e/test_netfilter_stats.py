"""End-to-end: the patched QEMU answers query-netfilter-stats and
info netfilter-stats with exact counts for real traffic over real sockets.

The chain on netdev n0 (a socket netdev; the test holds the other end, "the
wire"), in filter order:

    m0  filter-mirror      queue=tx  outdev=mir0   copies what n0 sends
    d0  filter-dump        queue=all               counts both directions
    r0  filter-redirector  queue=tx  outdev=out0   steals what n0 sends
    r1  filter-redirector  queue=rx  indev=in1     injects frames n0 receives

Frames written to the wire are sent by n0 (tx): m0, d0 and r0 see them, r0
writes them to out0. Frames written to in1 are injected by r1 in the rx
direction: they walk the filters before r1 backwards (only d0 takes rx) and
come out on the wire.
"""

import threading

import pytest

from qemu import Qemu, frame, read_frame, wait_until

TX_SIZES = [60, 1514, 9000, 64, 65535, 1]
RX_SIZES = [42, 1514, 100, 9000]


def payload(n, seed):
    return bytes((seed + i) % 251 for i in range(n))


def start_chain(tmp_path, vnet):
    v = "on" if vnet else "off"
    q = Qemu(
        chardevs=["mir0", "out0", "in1"],
        extra_args=[
            "-object", f"filter-mirror,id=m0,netdev=n0,queue=tx,outdev=mir0,vnet_hdr_support={v}",
            "-object", f"filter-dump,id=d0,netdev=n0,queue=all,file={tmp_path}/d0.pcap",
            "-object", f"filter-redirector,id=r0,netdev=n0,queue=tx,outdev=out0,vnet_hdr_support={v}",
            "-object", f"filter-redirector,id=r1,netdev=n0,queue=rx,indev=in1,vnet_hdr_support={v}",
        ],
    )
    try:
        q.mir = q.connect_chardev("mir0")
        q.out = q.connect_chardev("out0")
        q.inp = q.connect_chardev("in1")
        q.wait_connected()
    except BaseException as e:
        q.close_after(e)
        raise
    return q


def send_tx(q, sizes, vnet, seed=0):
    """Send frames into n0 from the wire; check they come out of out0 and
    mir0 unchanged. Returns when QEMU has handled all of them."""
    sent = [payload(n, seed + i) for i, n in enumerate(sizes)]
    for p in sent:
        q.netdev_peer.sendall(frame(p))
    for p in sent:
        got, vnet_len = read_frame(q.out, vnet)
        assert got == p
        assert vnet_len == (0 if vnet else None)
        got, vnet_len = read_frame(q.mir, vnet)
        assert got == p
        assert vnet_len == (0 if vnet else None)


def send_rx(q, sizes, vnet, seed=100):
    """Inject frames through r1's indev; check they reach the wire."""
    sent = [payload(n, seed + i) for i, n in enumerate(sizes)]
    for p in sent:
        q.inp.sendall(frame(p, 12 if vnet else None))
    for p in sent:
        got, _ = read_frame(q.netdev_peer)
        assert got == p


def entry(name, netdev, type_, tx=(0, 0), rx=(0, 0), counters=None):
    e = {
        "name": name, "netdev": netdev, "type": type_,
        "packets-tx": tx[0], "bytes-tx": tx[1],
        "packets-rx": rx[0], "bytes-rx": rx[1],
    }
    if counters is not None:
        e["counters"] = [{"name": n, "packets": p, "bytes": b} for n, p, b in counters]
    return e


def redirector_counters(indev=(0, 0), outdev=(0, 0), indev_errors=(0, 0), outdev_errors=(0, 0)):
    return [("indev", *indev), ("outdev", *outdev),
            ("indev-errors", *indev_errors), ("outdev-errors", *outdev_errors),
            ("held", 0, 0)]


def mirror_counters(outdev=(0, 0)):
    return [("outdev", *outdev), ("outdev-errors", 0, 0), ("held", 0, 0)]


def dump_counters(written=(0, 0)):
    return [("written", *written), ("truncated", 0, 0), ("write-errors", 0, 0)]


@pytest.mark.parametrize("vnet", [False, True], ids=["vnet_hdr=off", "vnet_hdr=on"])
def test_exact_counts_both_directions(tmp_path, vnet):
    with start_chain(tmp_path, vnet) as q:
        send_tx(q, TX_SIZES, vnet)
        send_rx(q, RX_SIZES, vnet)
        tx = (len(TX_SIZES), sum(TX_SIZES))
        rx = (len(RX_SIZES), sum(RX_SIZES))
        assert q.stats() == [
            entry("m0", "n0", "filter-mirror", tx=tx, counters=mirror_counters(outdev=tx)),
            entry("d0", "n0", "filter-dump", tx=tx, rx=rx,
                  counters=dump_counters(written=(tx[0] + rx[0], tx[1] + rx[1]))),
            entry("r0", "n0", "filter-redirector", tx=tx,
                  counters=redirector_counters(outdev=tx)),
            entry("r1", "n0", "filter-redirector",
                  counters=redirector_counters(indev=rx)),
        ]


def test_hmp_prints_the_exact_lines(tmp_path):
    with start_chain(tmp_path, False) as q:
        send_tx(q, [60, 1514], False)
        send_rx(q, [100], False)
        assert q.hmp("info netfilter-stats") == (
            "m0: netdev=n0 type=filter-mirror\r\n"
            "  tx: 2 packets, 1574 bytes\r\n"
            "  rx: 0 packets, 0 bytes\r\n"
            "  outdev: 2 packets, 1574 bytes\r\n"
            "  outdev-errors: 0 packets, 0 bytes\r\n"
            "  held: 0 packets, 0 bytes\r\n"
            "d0: netdev=n0 type=filter-dump\r\n"
            "  tx: 2 packets, 1574 bytes\r\n"
            "  rx: 1 packets, 100 bytes\r\n"
            "  written: 3 packets, 1674 bytes\r\n"
            "  truncated: 0 packets, 0 bytes\r\n"
            "  write-errors: 0 packets, 0 bytes\r\n"
            "r0: netdev=n0 type=filter-redirector\r\n"
            "  tx: 2 packets, 1574 bytes\r\n"
            "  rx: 0 packets, 0 bytes\r\n"
            "  indev: 0 packets, 0 bytes\r\n"
            "  outdev: 2 packets, 1574 bytes\r\n"
            "  indev-errors: 0 packets, 0 bytes\r\n"
            "  outdev-errors: 0 packets, 0 bytes\r\n"
            "  held: 0 packets, 0 bytes\r\n"
            "r1: netdev=n0 type=filter-redirector\r\n"
            "  tx: 0 packets, 0 bytes\r\n"
            "  rx: 0 packets, 0 bytes\r\n"
            "  indev: 1 packets, 100 bytes\r\n"
            "  outdev: 0 packets, 0 bytes\r\n"
            "  indev-errors: 0 packets, 0 bytes\r\n"
            "  outdev-errors: 0 packets, 0 bytes\r\n"
            "  held: 0 packets, 0 bytes\r\n"
        )
        assert q.hmp("info netfilter-stats d0") == (
            "d0: netdev=n0 type=filter-dump\r\n"
            "  tx: 2 packets, 1574 bytes\r\n"
            "  rx: 1 packets, 100 bytes\r\n"
            "  written: 3 packets, 1674 bytes\r\n"
            "  truncated: 0 packets, 0 bytes\r\n"
            "  write-errors: 0 packets, 0 bytes\r\n"
        )
        assert q.hmp("info netfilter-stats nope") == "Error: netfilter 'nope' not found\r\n"


def test_no_filters():
    with Qemu() as q:
        assert q.stats() == []
        assert q.hmp("info netfilter-stats") == "No netfilters found\r\n"


def test_name_argument_and_bad_arguments(tmp_path):
    with start_chain(tmp_path, False) as q:
        send_tx(q, [70], False)
        assert q.stats("r0") == [entry("r0", "n0", "filter-redirector", tx=(1, 70),
                                       counters=redirector_counters(outdev=(1, 70)))]
        assert q.stats("d0") == [entry("d0", "n0", "filter-dump", tx=(1, 70),
                                       counters=dump_counters(written=(1, 70)))]

        reply = q.command_raw("query-netfilter-stats", {"name": "nope"})
        assert reply["error"] == {"class": "GenericError", "desc": "netfilter 'nope' not found"}
        # A QOM object that is not a filter is not found either: a chardev
        # (under /chardevs), and an object under /objects, where a query by
        # name looks first.
        reply = q.command_raw("query-netfilter-stats", {"name": "mir0"})
        assert reply["error"]["desc"] == "netfilter 'mir0' not found"
        q.command("object-add", **{"qom-type": "iothread", "id": "io0"})
        reply = q.command_raw("query-netfilter-stats", {"name": "io0"})
        assert reply["error"] == {"class": "GenericError", "desc": "netfilter 'io0' not found"}
        assert q.hmp("info netfilter-stats io0") == "Error: netfilter 'io0' not found\r\n"

        reply = q.command_raw("query-netfilter-stats", {"name": 42})
        assert reply["error"] == {
            "class": "GenericError",
            "desc": "Invalid parameter type for 'name', expected: string",
        }
        reply = q.command_raw("query-netfilter-stats", {"bogus": 1})
        assert reply["error"] == {"class": "GenericError", "desc": "Parameter 'bogus' is unexpected"}
        # QEMU is still fine.
        assert [s["name"] for s in q.stats()] == ["m0", "d0", "r0", "r1"]


def test_status_off_stops_counting(tmp_path):
    with start_chain(tmp_path, False) as q:
        send_tx(q, [100], False)
        q.command("qom-set", path="/objects/d0", property="status", value="off")
        send_tx(q, [200, 300], False)
        s = q.stats_by_name()
        assert (s["d0"]["packets-tx"], s["d0"]["bytes-tx"]) == (1, 100)
        assert (s["r0"]["packets-tx"], s["r0"]["bytes-tx"]) == (3, 600)
        q.command("qom-set", path="/objects/d0", property="status", value="on")
        send_tx(q, [400], False)
        s = q.stats_by_name()
        assert (s["d0"]["packets-tx"], s["d0"]["bytes-tx"]) == (2, 500)
        assert (s["r0"]["packets-tx"], s["r0"]["bytes-tx"]) == (4, 1000)


def test_object_add_and_del(tmp_path):
    with start_chain(tmp_path, False) as q:
        send_tx(q, [10, 20], False)
        q.command("object-add", **{"qom-type": "filter-dump", "id": "d1", "netdev": "n0",
                                   "queue": "tx", "file": f"{tmp_path}/d1.pcap", "position": "head"})
        send_tx(q, [30], False)
        s = q.stats_by_name()
        assert list(s) == ["d1", "m0", "d0", "r0", "r1"]
        assert (s["d1"]["packets-tx"], s["d1"]["bytes-tx"]) == (1, 30)
        assert (s["r0"]["packets-tx"], s["r0"]["bytes-tx"]) == (3, 60)
        q.command("object-del", id="d1")
        send_tx(q, [40], False)
        s = q.stats_by_name()
        assert list(s) == ["m0", "d0", "r0", "r1"]
        assert (s["r0"]["packets-tx"], s["r0"]["bytes-tx"]) == (4, 100)
        reply = q.command_raw("query-netfilter-stats", {"name": "d1"})
        assert reply["error"]["desc"] == "netfilter 'd1' not found"


def test_object_add_and_del_while_traffic_flows(tmp_path):
    """Filters come and go while a thread keeps sending: QEMU stays up, no
    frame is lost, r0 (there throughout) counts every one, and a removed
    filter is never reported."""
    with start_chain(tmp_path, False) as q:
        stop = threading.Event()
        sent = []
        sender_errors = []
        received = {"out0": [], "mir0": []}

        def sender():
            # A timeout, so that a QEMU that stops reading fails the test
            # instead of hanging it (the error is the test's, below).
            q.netdev_peer.settimeout(30)
            i = 0
            try:
                while not stop.is_set() and i < 20000:
                    n = 60 + i % 1000
                    q.netdev_peer.sendall(frame(payload(n, i)))
                    sent.append(n)
                    i += 1
            except OSError as e:
                sender_errors.append(e)

        def reader(sock, name):
            # Drain the outdevs all along: QEMU's chardev writes block when
            # the peer stops reading.
            try:
                while True:
                    p, _ = read_frame(sock, timeout=30)
                    received[name].append(len(p))
            except (EOFError, OSError):
                pass

        threads = [threading.Thread(target=sender),
                   threading.Thread(target=reader, args=(q.out, "out0"), daemon=True),
                   threading.Thread(target=reader, args=(q.mir, "mir0"), daemon=True)]
        for t in threads:
            t.start()
        try:
            for i in range(30):
                q.command("object-add", **{"qom-type": "filter-dump", "id": f"x{i}",
                                           "netdev": "n0", "queue": "all",
                                           "file": f"{tmp_path}/x.pcap"})
                assert [s["name"] for s in q.stats()] == ["m0", "d0", "r0", "r1", f"x{i}"]
                q.command("object-del", id=f"x{i}")
                assert [s["name"] for s in q.stats()] == ["m0", "d0", "r0", "r1"]
        finally:
            stop.set()
            threads[0].join()
        assert not sender_errors, f"the sender failed: {sender_errors}"
        assert len(sent) > 1000, f"only {len(sent)} frames were sent"
        total = len(sent)
        expected = (total, sum(sent))
        # Everything sent is counted by the filters that stayed, and came out
        # of both outdevs, in order.
        # Frames count in "outdev" once written whole; the last ones may still
        # wait in the outdev queue for a moment.
        s = q.wait_for(lambda s: s["r0"]["packets-tx"] == total
                       and s["r0"]["counters"][1]["packets"] == total, what="all frames")
        assert (s["r0"]["packets-tx"], s["r0"]["bytes-tx"]) == expected
        assert (s["d0"]["packets-tx"], s["d0"]["bytes-tx"]) == expected
        assert (s["m0"]["packets-tx"], s["m0"]["bytes-tx"]) == expected
        assert s["r0"]["counters"][1] == {"name": "outdev", "packets": total, "bytes": sum(sent)}
        wait_until(lambda: len(received["out0"]) >= total and len(received["mir0"]) >= total,
                   "outdev frames missing", 30, 0.05)
        assert received["out0"] == sent
        assert received["mir0"] == sent


def test_indev_frame_through_a_hub_is_written_at_once():
    """A redirector's indev frame that reaches another netdev's mirror
    through a hub is written when the indev read ends, not when that
    mirror's next frame comes (glue 0035; an earlier cut of the series
    wrote only the redirector's own netdev's filters then, and this one
    waited)."""
    with Qemu(netdev="hub", chardevs=["in0", "m1out"], extra_args=[
            "-object", "filter-redirector,id=r0,netdev=n0,queue=tx,indev=in0",
            "-object", "filter-mirror,id=m1,netdev=n1,queue=rx,outdev=m1out"]) as q:
        inp, out = q.connect_chardev("in0"), q.connect_chardev("m1out")
        q.wait_connected()
        for i in range(3):
            p = payload(300 + i, i)
            inp.sendall(frame(p))
            # n0 -> hub -> n1: m1 mirrors it, and n1's peer gets it
            assert read_frame(out, timeout=3)[0] == p, f"frame {i} not written"
            assert read_frame(q.hub_peer, timeout=3)[0] == p
        inp.close()
        out.close()
