"""End-to-end: colo-compare's counters in query-stats (target netfilter,
provider colo-compare), exact for each way a packet can go: released after
comparing equal, miscompared (one checkpoint request each), timed out,
flushed at a checkpoint, dropped on a full queue, unsupported, bad framed
input, a failed send.

colo-compare cc0 reads primary_in (pri) and secondary_in (sec) and writes
what it releases to ccout. Its notify_dev nd gets a framed "DO_CHECKPOINT"
for every checkpoint request (a miscompare or a timeout), so the test can
count them; a framed "COLO_CHECKPOINT" written into nd flushes every queue
(primary packets go to ccout, secondary ones are dropped).

colo-compare compares when a packet arrives: a primary packet that finds no
equal secondary packet in its connection then is a miscompare. So the tests
send the secondary side of a flow first when the two sides agree, and the
primary first (waiting until colo-compare has read it) when they do not.
"""

import select
import socket
import struct
import threading
import time

import pytest

from helpers import (
    BUCKETS, assert_alive, assert_histogram, assert_quiet, histogram_bucket, payload,
    start_qemu, wait_connected,
)
from qemu import (
    CLIENT_MAC, GUEST_MAC, TCP_ACK, TCP_PSH, frame, ipv4_frame, poll, read_frame, tcp_frame,
    udp_frame, wait_until,
)

MAX_FRAME = 4096 + 65536


def _pair(name):
    return [f"{name}-packets", f"{name}-bytes"]


# Every value of a colo-compare result, in order.
NAMES = [*_pair("primary"), *_pair("secondary"), *_pair("released"),
         "miscompare-tcp", "miscompare-udp", "miscompare-icmp", "miscompare-other",
         "miscompare-timeout",
         *_pair("primary-dropped"), *_pair("secondary-dropped"),
         *_pair("unsupported"), *_pair("send-errors"),
         *_pair("primary-queued"), *_pair("secondary-queued"), "connections",
         *_pair("primary-in-errors"), *_pair("secondary-in-errors"),
         "release-latency", "release-latency-sum", "checkpoint-requests"]
INSTANT = {*_pair("primary-queued"), *_pair("secondary-queued"), "connections"}
# A log2 histogram of microseconds, and their sum.
LATENCY = ("release-latency", "release-latency-sum")
MISCOMPARES = ["miscompare-tcp", "miscompare-udp", "miscompare-icmp", "miscompare-other",
               "miscompare-timeout"]


# Frames --------------------------------------------------------------------

MACS = GUEST_MAC + CLIENT_MAC


def ipv4(proto, body, src=1):
    """An Ethernet/IPv4 frame from 10.0.0.src to 10.0.0.2 carrying `body`
    as IP protocol `proto`."""
    return ipv4_frame(proto, body, client=src)


def tcp(sport, seq, data=b""):
    """TCP from sport to port 80; PSH|ACK with data, a pure ACK without."""
    return tcp_frame(TCP_PSH | TCP_ACK if data else TCP_ACK, seq, 1, data, sport=sport)


def icmp_frame(seq, data, src=1):
    """An ICMP echo request (ICMP flows are told apart by address only)."""
    return ipv4(1, struct.pack(">BBHHH", 8, 0, 0, 7, seq) + data, src)


def other_frame(data, src=1):
    """IP protocol 47 (GRE): compared as a whole frame."""
    return ipv4(47, data, src)


def arp_frame(op=1):
    arp = struct.pack(">HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, MACS[6:], bytes([10, 0, 0, 1]),
                      bytes(6), bytes([10, 0, 0, 2]))
    return MACS + b"\x08\x06" + arp


def ipv6_frame(data):
    ip6 = struct.pack(">IHBB16s16s", 6 << 28, len(data), 17, 64, bytes(15) + b"\x01",
                      bytes(15) + b"\x02")
    return MACS + b"\x86\xdd" + ip6 + data


def tally(frames):
    return len(frames), sum(map(len, frames))


# QEMU ----------------------------------------------------------------------

def start(connect=("pri", "sec", "ccout", "nd"), **props):
    """QEMU running colo-compare cc0 (extra properties in `props`), with the
    chardevs in `connect` connected: their sockets are q.socks[name]. The
    timeout is long unless given: only
    test_timeout_requests_a_checkpoint_each_scan wants one to fire."""
    props = {"compare_timeout": 600000, **props}
    cc = ("colo-compare,id=cc0,primary_in=pri,secondary_in=sec,outdev=ccout,"
          "iothread=io0,notify_dev=nd" + "".join(f",{k}={v}" for k, v in props.items()))
    return start_qemu(["iothread,id=io0", cc], ["pri", "sec", "ccout", "nd"], connect)


def reconnect(q, name):
    q.socks[name].close()
    wait_connected(q, name, connected=False)
    q.socks[name] = q.connect_chardev(name)
    wait_connected(q, name)


def cc_stats(q):
    """cc0's values, by name (the result is colo-compare's only one)."""
    (r,) = q.command("query-stats", target="netfilter")
    assert (r["provider"], r["qom-path"]) == ("colo-compare", "/objects/cc0"), r
    assert [v["name"] for v in r["stats"]] == NAMES
    return {v["name"]: v["value"] for v in r["stats"]}


def want(**counts):
    """A whole expected result but the release latencies: keywords (_ for -)
    are a frame counter's (packets, bytes) or an event counter's value; the
    rest are 0, and checkpoint-requests adds up the miscompares."""
    out = dict.fromkeys(NAMES, 0)
    for name in LATENCY:
        del out[name]
    for name, value in counts.items():
        name = name.replace("_", "-")
        if isinstance(value, tuple):
            out[f"{name}-packets"], out[f"{name}-bytes"] = value
        else:
            assert name in out, name
            out[name] = value
    out["checkpoint-requests"] = sum(out[m] for m in MISCOMPARES)
    return out


def wait_stats(q, expected, timeout=20.0):
    """Wait until cc0's values are `expected` (from want()), and its release
    latencies count every released packet, each once."""
    got = poll(lambda: cc_stats(q),
               lambda got: {k: v for k, v in got.items() if k not in LATENCY} == expected,
               timeout)
    latency = [got.pop(name) for name in LATENCY]
    assert got == expected
    assert_histogram(*latency, events=got["released-packets"])
    return got | dict(zip(LATENCY, latency))


def wait_value(q, name, value, timeout=20.0):
    """Wait until colo-compare has read (and handled) what the test sent."""
    got = poll(lambda: cc_stats(q)[name], lambda got: got == value, timeout, 0.01)
    assert got == value, f"{name} is {got}, not {value}"


def send(q, name, frames):
    q.socks[name].sendall(b"".join(frame(f) for f in frames))


def read_frames(q, n, name="ccout"):
    return [read_frame(q.socks[name])[0] for _ in range(n)]


def read_checkpoint_request(q):
    assert read_frame(q.socks["nd"])[0] == b"DO_CHECKPOINT"


def drain_checkpoint_requests(q, quiet=0.5):
    """Read checkpoint requests until none comes for `quiet` seconds; return
    how many came."""
    n = 0
    while select.select([q.socks["nd"]], [], [], quiet)[0]:
        read_checkpoint_request(q)
        n += 1
    return n


# Tests ---------------------------------------------------------------------

def test_equal_streams_are_released():
    flows = [
        [udp_frame(1000, payload(18, 1)), udp_frame(1000, payload(600, 2))],
        [udp_frame(1001, payload(1400, 3))],
        [icmp_frame(1, payload(56, 4)), icmp_frame(2, payload(56, 5))],
        # the pure ACK carries nothing to compare: released as it is
        [tcp(2000, 100, payload(10, 6)), tcp(2000, 110, payload(300, 7)),
         tcp(2000, 410)],
        [other_frame(payload(40, 8)), other_frame(payload(100, 9))],
    ]
    frames = [f for flow in flows for f in flow]
    with start() as q:
        send(q, "sec", frames)
        wait_value(q, "secondary-packets", len(frames))
        send(q, "pri", frames)
        assert read_frames(q, len(frames)) == frames
        wait_stats(q, want(primary=tally(frames), secondary=tally(frames),
                           released=tally(frames), connections=len(flows)))
        assert_quiet(q.socks["ccout"])
        assert_quiet(q.socks["nd"])
        assert_alive(q)


LAG_S = 0.09  # 90 ms: bucket 17, [65536, 131072) µs


def test_release_latency_is_the_secondary_lag():
    """Each secondary twin sent LAG_S after colo-compare read its primary
    packet: every release waited LAG_S and a little more, and is in the
    bucket of LAG_S (the test measures each wait's bounds too)."""
    frames = [udp_frame(1000 + i, payload(100 + i, i)) for i in range(8)]
    shortest, longest = float("inf"), 0.0
    with start() as q:
        for i, f in enumerate(frames):
            sent = time.monotonic()
            send(q, "pri", [f])
            wait_value(q, "primary-packets", i + 1)
            read_by = time.monotonic()
            time.sleep(LAG_S)
            twin_at = time.monotonic()
            send(q, "sec", [f])
            assert read_frames(q, 1) == [f]
            longest = max(longest, time.monotonic() - sent)
            shortest = min(shortest, twin_at - read_by)
        got = wait_stats(q, want(primary=tally(frames), secondary=tally(frames),
                                 released=tally(frames), connections=len(frames)))
        buckets, total = got["release-latency"], got["release-latency-sum"]
        assert_histogram(buckets, total, len(frames), shortest * 1e6, longest * 1e6)
        lag_bucket = histogram_bucket(LAG_S * 1e6)
        if histogram_bucket(longest * 1e6) == lag_bucket:
            # the bounds measured around every wait are in the lag's bucket
            # (not always under valgrind, where a round trip can take 40 ms
            # more: assert_histogram has checked the bounds then)
            assert buckets == [len(frames) if i == lag_bucket else 0 for i in range(BUCKETS)], \
                (buckets, shortest, longest)
        assert total >= len(frames) * LAG_S * 1e6
        assert_alive(q)


def test_miscompares_request_checkpoints_and_a_checkpoint_flushes():
    # per protocol: one primary packet, then secondary packets that differ
    # from it, each a miscompare
    cases = {
        "udp": (udp_frame(1000, payload(100, 1)),
                [udp_frame(1000, payload(99, 1)), udp_frame(1000, payload(100, 2))]),
        "icmp": (icmp_frame(1, payload(56, 3)), [icmp_frame(1, payload(56, 4))]),
        "tcp": (tcp(2000, 1000, payload(20, 5)),
                [tcp(2000, 1000, payload(20, 6)), tcp(2000, 1020, payload(20, 7))]),
        "other": (other_frame(payload(40, 8)), [other_frame(payload(40, 9))]),
    }
    primaries = [p for p, _ in cases.values()]
    secondaries = [s for _, ss in cases.values() for s in ss]
    miscompares = {f"miscompare_{proto}": len(ss) for proto, (_, ss) in cases.items()}
    with start() as q:
        requests = 0
        for i, (p, ss) in enumerate(cases.values()):
            send(q, "pri", [p])
            wait_value(q, "primary-packets", i + 1)
            for s in ss:
                send(q, "sec", [s])
                read_checkpoint_request(q)
                requests += 1
        assert_quiet(q.socks["nd"])
        assert cc_stats(q)["checkpoint-requests"] == requests == len(secondaries)
        assert_quiet(q.socks["ccout"])
        counts = dict(primary=tally(primaries), secondary=tally(secondaries),
                      connections=len(cases), **miscompares)
        wait_stats(q, want(**counts, primary_queued=tally(primaries),
                           secondary_queued=tally(secondaries)))
        send(q, "nd", [b"COLO_CHECKPOINT"])
        assert read_frames(q, len(primaries)) == primaries
        wait_stats(q, want(**counts, released=tally(primaries)))
        assert_quiet(q.socks["ccout"])
        assert_quiet(q.socks["nd"])


def test_timeout_requests_a_checkpoint_each_scan():
    """A packet left unmatched past compare_timeout requests a checkpoint at
    each scan (every expired_scan_cycle ms) until a checkpoint flushes it."""
    p, s = udp_frame(1000, payload(100, 1)), udp_frame(1001, payload(80, 2))
    with start(compare_timeout=200, expired_scan_cycle=100) as q:
        send(q, "pri", [p])
        send(q, "sec", [s])
        read_checkpoint_request(q)
        send(q, "nd", [b"COLO_CHECKPOINT"])
        assert read_frames(q, 1) == [p]
        wait_value(q, "secondary-queued-packets", 0)
        # requests made before the flush may still be on their way; none after
        requests = 1 + drain_checkpoint_requests(q)
        got = wait_stats(q, want(primary=tally([p]), secondary=tally([s]), released=tally([p]),
                                 miscompare_timeout=requests, connections=2))
        assert got["checkpoint-requests"] == requests


def test_full_queues_drop():
    # max_queue_size=3: a connection's queue takes packets while it holds at
    # most 3, so 4 fit
    pri = [udp_frame(1000, payload(100 + i, i)) for i in range(6)]
    sec = [udp_frame(1001, payload(200 + i, i)) for i in range(7)]
    with start(max_queue_size=3) as q:
        send(q, "pri", pri)
        send(q, "sec", sec)
        wait_value(q, "primary-packets", len(pri))
        wait_value(q, "secondary-packets", len(sec))
        counts = dict(primary=tally(pri), secondary=tally(sec), connections=2,
                      primary_dropped=tally(pri[4:]), secondary_dropped=tally(sec[4:]))
        wait_stats(q, want(**counts, primary_queued=tally(pri[:4]),
                           secondary_queued=tally(sec[:4])))
        send(q, "nd", [b"COLO_CHECKPOINT"])
        # a flush sends a connection's queue in the primary's order
        assert read_frames(q, 4) == pri[:4]
        wait_stats(q, want(**counts, released=tally(pri[:4])))
        assert_quiet(q.socks["ccout"])
        assert_quiet(q.socks["nd"])


def test_bad_input_is_counted_per_input():
    """Zero-length frames, a stream cut inside a frame, and a length over
    the maximum, after which QEMU hangs up: what it read of the rest of
    that connection is counted."""
    good = udp_frame(3000, payload(60, 1))
    too_long = struct.pack(">I", MAX_FRAME + 1) + b"junk" + frame(good)
    with start() as q:
        zero = struct.pack(">I", 0)
        # the frame between the bad ones is read (and waits for its primary)
        q.socks["sec"].sendall(zero + frame(good) + zero)
        q.socks["sec"].sendall(too_long)
        wait_value(q, "secondary-in-errors-bytes", 4 + 4 + len(too_long))
        reconnect(q, "sec")
        q.socks["pri"].sendall(zero)
        q.socks["pri"].sendall(struct.pack(">I", 100) + b"x" * 10)  # cut off at 14 bytes
        wait_value(q, "primary-in-errors-packets", 1)
        reconnect(q, "pri")
        q.socks["pri"].sendall(too_long)
        wait_value(q, "primary-in-errors-bytes", 4 + 14 + len(too_long))
        reconnect(q, "pri")
        f = udp_frame(3001, payload(500, 2))
        send(q, "sec", [f])
        wait_value(q, "secondary-packets", 2)
        send(q, "pri", [f])
        assert read_frames(q, 1) == [f]
        wait_stats(q, want(primary=tally([f]), secondary=tally([good, f]), released=tally([f]),
                           secondary_queued=tally([good]), connections=2,
                           primary_in_errors=(3, 4 + 14 + len(too_long)),
                           secondary_in_errors=(3, 4 + 4 + len(too_long))))
        assert_alive(q)


def test_unsupported_frames():
    """Not IPv4, or too short: forwarded uncompared from primary_in (and
    counted released: it reaches outdev), dropped from secondary_in."""
    # and a UDP packet that ends with its IP header: too short to compare
    pri = [arp_frame(1), ipv6_frame(payload(30, 1)), ipv4(17, b"")]
    sec = [arp_frame(2)]
    with start() as q:
        send(q, "sec", sec)
        send(q, "pri", pri)
        assert read_frames(q, len(pri)) == pri
        wait_stats(q, want(primary=tally(pri), secondary=tally(sec), released=tally(pri),
                           unsupported=tally(pri + sec)))
        assert_quiet(q.socks["ccout"])


def test_send_errors():
    """ccout has no peer: what colo-compare releases or forwards cannot be
    sent."""
    f, arp = udp_frame(1000, payload(100, 1)), arp_frame()
    with start(connect=("pri", "sec", "nd")) as q:
        send(q, "sec", [f])
        wait_value(q, "secondary-packets", 1)
        send(q, "pri", [f, arp])
        # released counts what reached outdev: nothing here
        wait_stats(q, want(primary=tally([f, arp]), secondary=tally([f]),
                           unsupported=tally([arp]), send_errors=tally([f, arp]),
                           connections=1))
        assert_alive(q)


def test_schema_and_hmp():
    equal = [udp_frame(1000 + i, payload(50 + i, i)) for i in range(3)]
    lone = udp_frame(1003, payload(70, 9))
    with start() as q:
        (schema,) = q.command("query-stats-schemas", provider="colo-compare")
        assert (schema["provider"], schema["target"]) == ("colo-compare", "netfilter")
        assert [v["name"] for v in schema["stats"]] == NAMES
        for v in schema["stats"]:
            unit = {"unit": "bytes"} if v["name"].endswith("-bytes") else {}
            kind = "instant" if v["name"] in INSTANT else "cumulative"
            if v["name"] in LATENCY:
                unit = {"unit": "seconds", "base": 10, "exponent": -6}
                kind = "log2-histogram" if v["name"] == "release-latency" else kind
            assert v == {"name": v["name"], "type": kind, "exponent": 0, **unit}
        send(q, "sec", equal)
        wait_value(q, "secondary-packets", len(equal))
        send(q, "pri", equal + [lone])
        assert read_frames(q, len(equal)) == equal
        values = wait_stats(q, want(primary=tally(equal + [lone]), secondary=tally(equal),
                                    released=tally(equal), primary_queued=tally([lone]),
                                    connections=4))
        def hmp(name):
            value = values[name]
            if name == "release-latency":
                text = "".join(f"[{i}]={n} " for i, n in enumerate(value, 1))
                return f"    {name} (log2-histogram, us): {text}"
            unit = ", B" if name.endswith("-bytes") else ", us" if name in LATENCY else ""
            return f"    {name} ({'instant' if name in INSTANT else 'cumulative'}{unit}): {value}"

        lines = [hmp(name) for name in NAMES]
        assert lines[0] == "    primary-packets (cumulative): 4"
        assert q.hmp("info stats netfilter * colo-compare").splitlines() == \
            ["  /objects/cc0", *lines]


def test_exact_while_read_during_traffic():
    """A thread sends equal pairs (each its own flow) while QMP reads the
    counters, which colo-compare updates in its iothread: no value goes
    back, none wraps, and the totals are exact."""
    n = 2000
    frames = [udp_frame(10000 + i, payload(60 + i % 40, i)) for i in range(n)]
    with start() as q:
        got = []

        def sender():
            for f in frames:
                q.socks["pri"].sendall(frame(f))
                q.socks["sec"].sendall(frame(f))

        def reader():
            # colo-compare blocks when nobody reads ccout
            got.extend(read_frames(q, n))

        threads = [threading.Thread(target=t, daemon=True) for t in (sender, reader)]
        for t in threads:
            t.start()
        samples = []

        def sample():
            samples.append(cc_stats(q))
            return samples[-1]["released-packets"] >= n

        # as often as QMP answers: every sample is checked below
        wait_until(sample, lambda _: samples[-1], timeout=60, interval=0)
        for t in threads:
            t.join(timeout=20)
            assert not t.is_alive()
        queued = {*_pair("primary-queued"), *_pair("secondary-queued")}
        moving = {*_pair("primary"), *_pair("secondary"), *_pair("released"), *queued,
                  "connections"}
        moving |= set(LATENCY)
        for before, after in zip(samples, samples[1:]):
            for name in NAMES:
                if name not in queued:
                    assert after[name] >= before[name], (name, before, after)
        for s in samples:
            assert s["primary-queued-packets"] <= n and s["secondary-queued-packets"] <= n, s
            assert all(s[name] == 0 for name in NAMES if name not in moving), s
            # a release is counted, then put in the histogram, which is
            # read after the count: it has every release but the last one
            # counted, and those released since
            assert sum(s["release-latency"]) >= s["released-packets"] - 1, s
        assert any(0 < s["released-packets"] < n for s in samples), "no read during traffic"
        assert got == frames
        wait_stats(q, want(primary=tally(frames), secondary=tally(frames),
                           released=tally(frames), connections=n))


STREAMS = {
    # one connection each: what is compared and released is its queue
    "udp": lambda i: udp_frame(1000, payload(40 + i % 200, i)),
    "icmp": lambda i: icmp_frame(i % 65536, payload(56, i)),
    "tcp": lambda i: tcp(2000, 1000 + 100 * i, payload(100, i)),
}


@pytest.mark.parametrize("proto", STREAMS)
def test_equal_stream_keeps_its_order(proto):
    """One connection's equal stream, its secondary a few packets behind
    the primary (four primary packets, then their four twins), released to
    an outdev that reads nothing until the end: every packet comes out in
    the primary's order, with no miscompare and no checkpoint request (the
    late twin waits; only compare_timeout could make it a miscompare)."""
    n = 2000
    frames = [STREAMS[proto](i) for i in range(n)]
    with start() as q:
        for i in range(0, n, 4):
            send(q, "pri", frames[i:i + 4])
            send(q, "sec", frames[i:i + 4])
        wait_value(q, "secondary-packets", n)
        assert read_frames(q, n) == frames
        wait_stats(q, want(primary=tally(frames), secondary=tally(frames),
                           released=tally(frames), connections=1))
        assert_quiet(q.socks["nd"])


def test_object_add_that_fails_leaves_qemu_running():
    """A colo-compare object-add that fails (no such iothread or chardev)
    finalizes an object complete() never finished: QEMU goes on, before
    any colo-compare exists, while one does, and after the last is gone."""
    good = {"qom-type": "colo-compare", "id": "cc1", "primary_in": "pri",
            "secondary_in": "sec", "outdev": "ccout", "iothread": "io0"}
    bad = [{**good, "iothread": "nope"}, {**good, "primary_in": "nope"},
           {**good, "secondary_in": "ccout"}]
    with start_qemu(["iothread,id=io0"], ["pri", "sec", "ccout"]) as q:
        for when in ("before", "beside", "after"):
            if when == "beside":
                q.command("object-add", **good)
            for args in bad:
                reply = q.command_raw("object-add", {**args, "id": "ccbad"})
                assert "error" in reply, (when, args, reply)
            if when == "beside":
                q.command("object-del", id="cc1")
        q.command("object-add", **good)
        f = udp_frame(1000, payload(100, 1))
        q.socks["sec"].sendall(frame(f))
        q.socks["pri"].sendall(frame(f))
        assert read_frame(q.socks["ccout"])[0] == f
        assert_alive(q)


def test_object_del_while_the_inputs_carry_traffic():
    """colo-compare reads its inputs in its iothread; object-del frees their
    decoders in the main loop, only after the iothread stopped reading. Each
    round floods both inputs of a new colo-compare (on chardevs of its own,
    so that no round starts inside another's frame) while it is deleted:
    the sanitizer build sees a read of freed memory."""
    f = frame(udp_frame(1000, payload(1400, 3))) * 40
    with start_qemu(["iothread,id=io0"], []) as q:
        for i in range(20):
            names = {side: f"{side}{i}" for side in ("pri", "sec", "out")}
            for name in names.values():
                q.command("chardev-add", id=name, backend={"type": "socket", "data": {
                    "addr": {"type": "unix", "data": {"path": q.chardev_path(name)}},
                    "server": True, "wait": False}})
            socks = {side: q.connect_chardev(name) for side, name in names.items()}
            for name in names.values():
                wait_connected(q, name)
            stop = threading.Event()

            def flood(sock, stop):
                sock.settimeout(0.2)
                while not stop.is_set():
                    try:
                        sock.sendall(f)
                    except OSError:
                        pass

            def drain(sock, stop):
                sock.settimeout(0.2)
                while not stop.is_set():
                    try:
                        sock.recv(1 << 20)
                    except OSError:
                        pass

            threads = [threading.Thread(target=flood, args=(socks["pri"], stop), daemon=True),
                       threading.Thread(target=flood, args=(socks["sec"], stop), daemon=True),
                       threading.Thread(target=drain, args=(socks["out"], stop), daemon=True)]
            for t in threads:
                t.start()
            try:
                q.command("object-add", **{"qom-type": "colo-compare", "id": f"cc{i}",
                                           "primary_in": names["pri"],
                                           "secondary_in": names["sec"],
                                           "outdev": names["out"], "iothread": "io0"})
                time.sleep(0.05)
                q.command("object-del", id=f"cc{i}")
            finally:
                stop.set()
                for t in threads:
                    t.join(timeout=10)
            for side, name in names.items():
                socks[side].close()
                q.command("chardev-remove", id=name)
        assert_alive(q)


def send_until_held(sock, data, quiet=1.0):
    """Send `data` until the reader has taken nothing for `quiet` seconds;
    return how many bytes it took."""
    sent = 0
    while sent < len(data) and select.select([], [sock], [], quiet)[1]:
        sent += sock.send(data[sent:])
    return sent


def hold_primary_in(q, frames):
    """Send the secondary side of `frames`, then the primary side until
    colo-compare stops reading primary_in, with ccout not read: return how
    the primary side's bytes are not sent yet."""
    q.socks["ccout"].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    send(q, "sec", frames)
    wait_value(q, "secondary-packets", len(frames))
    data = b"".join(frame(f) for f in frames)
    sent = send_until_held(q.socks["pri"], data)
    assert sent < len(data)
    held = cc_stats(q)["primary-packets"]
    assert 0 < held < len(frames)
    time.sleep(0.3)
    assert cc_stats(q)["primary-packets"] == held
    return data[sent:]


def test_outdev_that_does_not_read_holds_primary_in():
    """colo-compare writes what it releases without blocking its iothread.
    When the outdev peer does not read, it stops reading primary_in at the
    queue's high-water mark (the primary's sender waits, as filter-mirror
    makes a guest wait); once the peer reads again it reads on: every packet
    is released, in order, and counted exactly."""
    n = 2000
    frames = [udp_frame(20000 + i, payload(1000, i)) for i in range(n)]
    with start() as q:
        unsent = hold_primary_in(q, frames)
        rest = threading.Thread(target=q.socks["pri"].sendall, args=(unsent,), daemon=True)
        rest.start()
        assert read_frames(q, n) == frames
        rest.join()
        wait_stats(q, want(primary=tally(frames), secondary=tally(frames),
                           released=tally(frames), connections=n))
        assert_alive(q)


def test_outdev_peer_hanging_up_releases_primary_in():
    """The outdev peer hangs up while colo-compare holds primary_in: what
    waited for it is dropped (send-errors), and colo-compare reads
    primary_in again: every primary packet is released or counted as not
    sent, none is left. A peer that connects then gets what comes next."""
    n = 2000
    frames = [udp_frame(20000 + i, payload(1000, i)) for i in range(n)]
    with start() as q:
        unsent = hold_primary_in(q, frames)
        q.socks["ccout"].close()
        wait_connected(q, "ccout", connected=False)
        q.socks["pri"].sendall(unsent)
        # the decoder counts a read's frames in primary once it has handed
        # them all out: wait for both sides to settle
        c = poll(lambda: cc_stats(q),
                 lambda c: c["primary-packets"] == n
                 and c["released-packets"] + c["send-errors-packets"] == n, timeout=20)
        assert c["released-packets"] + c["send-errors-packets"] == n, c
        assert c["released-bytes"] + c["send-errors-bytes"] == tally(frames)[1], c
        assert c["send-errors-packets"] > 0 and c["primary-packets"] == n, c
        assert c["primary-queued-packets"] == c["secondary-queued-packets"] == 0, c
        q.socks["ccout"] = q.connect_chardev("ccout")
        wait_connected(q, "ccout")
        f = udp_frame(30000, payload(500, 7))
        send(q, "sec", [f])
        wait_value(q, "secondary-packets", n + 1)
        send(q, "pri", [f])
        assert read_frames(q, 1) == [f]
        assert_alive(q)


def test_object_del_and_quit_while_outdev_is_not_read():
    """colo-compare's outdev peer does not read, and colo-compare holds
    primary_in. Neither object-del nor quit may wait for the peer (QMP must
    answer, glue 0021: both waited for good before): the peer has whole
    frames in order (one cut off would hang it up), and QEMU ends cleanly
    (Qemu.close)."""
    n = 2000
    frames = [udp_frame(20000 + i, payload(1000, i)) for i in range(n)]
    for how in ("object-del", "quit"):
        with start() as q:
            hold_primary_in(q, frames)
            if how == "object-del":
                q.qmp.settimeout(10)
                q.command("object-del", id="cc0")
                assert q.command("query-stats", target="netfilter") == []
                # The peer gets whole frames, in order: then nothing more,
                # or (the start of a frame was written: the batched writes
                # stop anywhere) that start and the end of the stream.
                got = []
                try:
                    while True:
                        got.append(read_frame(q.socks["ccout"], timeout=2)[0])
                except TimeoutError:
                    pass
                except EOFError as e:
                    assert "peer closed after" in str(e), e
                assert 0 < len(got) < n and got == frames[:len(got)]
            assert_alive(q)
