"""End-to-end: the patched QEMU reports every network filter's counters
through QEMU's generic query-stats (target netfilter, provider netfilter),
with the same numbers as query-netfilter-stats, values its
query-stats-schemas describes, and info stats printing them.

The chain on netdev n0 (a socket netdev; the test holds the other end, "the
wire"), in filter order, one filter of every type built here:

    m0  filter-mirror      queue=tx  outdev=mir0    copies what n0 sends
    d0  filter-dump        queue=all maxlen=100     counts both directions
    w0  filter-rewriter    queue=all                tracks TCP connections
    b0  filter-buffer      queue=rx                 holds what n0 receives
    r0  filter-redirector  queue=tx  outdev=out0    steals what n0 sends
    r1  filter-redirector  queue=rx  indev=in1      injects frames n0 receives

plus one colo-compare object (c0, provider colo-compare: not a filter, its
values are tested elsewhere; here it is only the other provider).

Frames written to the wire are sent by n0 (tx): m0, d0, w0 and r0 see them,
r0 writes them to out0. Frames written to in1 are injected by r1 in the rx
direction and walk the filters before r1 backwards: b0 holds them (the
qtest accelerator's clock never advances, so its timer never fires) until
it is switched off, which releases them to w0 and d0 and out on the wire.
"""

import os
import time

from helpers import BUCKETS, assert_alive, assert_histogram, start_qemu
from qemu import TCP_SYN, frame, poll, read_frame, tcp_frame, udp_frame

SNAPLEN = 100

# Each counter's shape (src/counters.rs), which gives its query-stats values.
EVENTS = {"connections", "closed"}          # NAME: a count of events, in query-stats alone
# Everything else is frames: NAME-packets (= packets), NAME-bytes (= bytes).

# The counters each filter type reports in query-stats, in its order; those
# of frames are in query-netfilter-stats too (its counters are packets and
# bytes alone).
TYPE_COUNTERS = {
    "filter-mirror": ["outdev", "outdev-errors", "held"],
    "filter-redirector": ["indev", "outdev", "indev-errors", "outdev-errors", "held"],
    "filter-buffer": ["released", "dropped", "buffered"],
    "filter-rewriter": ["connections", "rewritten", "closed"],
    "filter-dump": ["written", "truncated", "write-errors"],
}
# And the durations it reports in query-stats alone, after those: NAME, a
# log2 histogram of microseconds, and NAME-sum.
TYPE_DURATIONS = {"filter-mirror": ["hold-time"], "filter-redirector": ["hold-time"],
                  "filter-buffer": ["delay"]}
DURATIONS = {d for ds in TYPE_DURATIONS.values() for d in ds}


def netfilter_counters(type_):
    """The counters of `type_` in query-netfilter-stats, in its order."""
    return [c for c in TYPE_COUNTERS.get(type_, []) if c not in EVENTS]


NO_EVENTS = ([0] * BUCKETS, 0)                # an empty histogram, and its sum
DIRECTION_VALUES = ["packets-tx", "packets-rx", "bytes-tx", "bytes-rx"]
INSTANT = {"buffered-packets", "buffered-bytes", "connections"}


def value_names(counter):
    if counter in EVENTS:
        return [counter]
    if counter in DURATIONS:
        return [counter, f"{counter}-sum"]
    return [f"{counter}-packets", f"{counter}-bytes"]


# Every value a netfilter result can hold.
ALL_VALUES = set(DIRECTION_VALUES) | {
    v for counters in [*TYPE_COUNTERS.values(), *TYPE_DURATIONS.values()]
    for c in counters for v in value_names(c)}


def expected_schema_value(name):
    """What query-stats-schemas says of one netfilter value."""
    v = {"name": name, "type": "instant" if name in INSTANT else "cumulative", "exponent": 0}
    if name in DURATIONS:
        v.update(type="log2-histogram", unit="seconds", base=10, exponent=-6)
    elif name.removesuffix("-sum") in DURATIONS:
        v.update(unit="seconds", base=10, exponent=-6)
    elif name.endswith("-bytes") or name.startswith("bytes-"):
        v["unit"] = "bytes"
    return v


# --- the chain -----------------------------------------------------------------

CHAIN = [
    "iothread,id=iot0",
    "colo-compare,id=c0,primary_in=cp,secondary_in=cs,outdev=co,iothread=iot0",
    "filter-mirror,id=m0,netdev=n0,queue=tx,outdev=mir0",
    "filter-dump,id=d0,netdev=n0,queue=all,file={tmp}/d0.pcap,maxlen=" + str(SNAPLEN),
    "filter-rewriter,id=w0,netdev=n0,queue=all",
    "filter-buffer,id=b0,netdev=n0,queue=rx,interval=1000000",
    "filter-redirector,id=r0,netdev=n0,queue=tx,outdev=out0",
    "filter-redirector,id=r1,netdev=n0,queue=rx,indev=in1",
]

# tx: UDP frames of these sizes (at and around the snap length). rx: UDP
# frames, and a TCP SYN from the guest (54 bytes) between them, the one
# connection the rewriter tracks. (Not in tx: the rewriter passes a TCP
# packet on only when n0's peer can take it, and a guestless NIC takes
# nothing, although r0 would steal it first.)
TX_SIZES = [60, 100, 101, 1514]
RX_SIZES = [64, 300]


def start_chain(tmp_path):
    q = start_qemu([o.format(tmp=tmp_path) for o in CHAIN],
                   ["mir0", "out0", "in1", "cp", "cs", "co"], connect=["mir0", "out0", "in1"])
    q.mir, q.out, q.inp = (q.socks[n] for n in ("mir0", "out0", "in1"))
    return q


def udp(sizes, seed):
    """UDP frames of these total sizes (42 bytes of headers)."""
    return [udp_frame(1000 + seed + i, bytes((seed + i + j) % 251 for j in range(n - 42)))
            for i, n in enumerate(sizes)]


def tx_frames(seed=0):
    return udp(TX_SIZES, seed)


def rx_frames(seed=100):
    frames = udp(RX_SIZES, seed)
    return frames[:1] + [tcp_frame(TCP_SYN, 5000, 0, to_guest=False)] + frames[1:]


def send_tx(q, frames):
    """Send frames into n0 from the wire; they come out of out0 and mir0."""
    for f in frames:
        q.netdev_peer.sendall(frame(f))
    for f in frames:
        assert read_frame(q.out)[0] == f
        assert read_frame(q.mir)[0] == f


def send_rx(q, frames):
    """Inject frames through r1's indev (b0 holds them while it is on)."""
    for f in frames:
        q.inp.sendall(frame(f))


def total(frames):
    return (len(frames), sum(map(len, frames)))


def entry(name, type_, tx=(0, 0), rx=(0, 0), **counters):
    """A query-netfilter-stats entry; counters not given are (0, 0)."""
    counters = {k.replace("_", "-"): v for k, v in counters.items()}
    assert set(counters) <= set(netfilter_counters(type_))
    return {
        "name": name, "netdev": "n0", "type": type_,
        "packets-tx": tx[0], "bytes-tx": tx[1], "packets-rx": rx[0], "bytes-rx": rx[1],
        "counters": [{"name": c, "packets": counters.get(c, (0, 0))[0],
                      "bytes": counters.get(c, (0, 0))[1]} for c in netfilter_counters(type_)],
    }


def expected_chain(tx, rx, released):
    """The whole query-netfilter-stats list after `tx` frames sent and `rx`
    injected, b0 having released them or not (w0's connections, a count of
    events, are in query-stats alone: expected_events())."""
    both = tx + (rx if released else [])
    written = (len(both), sum(min(len(f), SNAPLEN) for f in both))
    cut = [len(f) - SNAPLEN for f in both if len(f) > SNAPLEN]
    rx_past_b0 = total(rx if released else [])
    return [
        entry("m0", "filter-mirror", tx=total(tx), outdev=total(tx)),
        entry("d0", "filter-dump", tx=total(tx), rx=rx_past_b0,
              written=written, truncated=(len(cut), sum(cut))),
        entry("w0", "filter-rewriter", tx=total(tx), rx=rx_past_b0),
        entry("b0", "filter-buffer", rx=total(rx),
              **({"released": total(rx)} if released else {"buffered": total(rx)})),
        entry("r0", "filter-redirector", tx=total(tx), outdev=total(tx)),
        entry("r1", "filter-redirector", indev=total(rx)),
    ]


def expected_events(tx, rx, released):
    """The counts of events of expected_chain()'s filters: {filter: {name: n}}."""
    both = tx + (rx if released else [])
    return {"w0": {"connections": sum(1 for f in both if f[23] == 6)}}  # IP protocol TCP


def wait_netfilter_stats(q, expected, timeout=10.0):
    """Poll query-netfilter-stats until it is exactly `expected`."""
    got = poll(q.stats, lambda got: got == expected, timeout)
    assert got == expected
    return got


# --- query-stats ---------------------------------------------------------------

def query_stats(q, target="netfilter", **args):
    return q.command("query-stats", target=target, **args)


def netfilter_results(results):
    return [r for r in results if r["provider"] == "netfilter"]


def mapped_values(e, durations, events):
    """The query-stats values of one query-netfilter-stats entry, its type's
    counts of events ({name: n}, 0 where not given) and its type's durations
    ({name: (buckets, sum)}, NO_EVENTS where not given)."""
    values = [(name, e[name]) for name in DIRECTION_VALUES]
    counters = {c["name"]: (c["packets"], c["bytes"]) for c in e.get("counters", [])}
    assert list(counters) == netfilter_counters(e["type"]), e
    for name in TYPE_COUNTERS.get(e["type"], []):
        if name in EVENTS:
            values.append((name, events.get(name, 0)))
        else:
            values += zip(value_names(name), counters[name])
    for name in TYPE_DURATIONS.get(e["type"], []):
        values += zip(value_names(name), durations.get(name, NO_EVENTS))
    return values


def mapped_result(e, names=None, durations=None, events=None):
    stats = [{"name": n, "value": v} for n, v in mapped_values(e, durations or {}, events or {})
             if names is None or n in names]
    return {"provider": "netfilter", "qom-path": f"/objects/{e['name']}", "stats": stats}


def mapped_results(entries, names=None, durations=None, events=None):
    """query-stats' netfilter results for this query-netfilter-stats list
    (with a names filter: only those values, and no result left empty);
    `durations` gives some filters' durations: {filter: {name: (buckets,
    sum)}}, no events in the others; `events` some filters' counts of
    events: {filter: {name: n}}, 0 in the others."""
    durations, events = durations or {}, events or {}
    results = [mapped_result(e, names, durations.get(e["name"]), events.get(e["name"]))
               for e in entries]
    return [r for r in results if r["stats"]]



def snapshot(q, **args):
    """query-netfilter-stats and query-stats, taken while nothing changes
    (query-netfilter-stats is the same before and after)."""
    before = q.stats()
    results = query_stats(q, **args)
    assert q.stats() == before
    return before, results


def schema(q, provider="netfilter"):
    (s,) = q.command("query-stats-schemas", provider=provider)
    assert (s["provider"], s["target"]) == (provider, "netfilter")
    return s["stats"]


def assert_in_schema_order(results, schemas):
    """Every value of every result is in its provider's schema, in the
    schema's order (info stats walks both lists together)."""
    for r in results:
        order = [v["name"] for v in schemas[r["provider"]]]
        names = [s["name"] for s in r["stats"]]
        assert set(names) <= set(order), (r["qom-path"], set(names) - set(order))
        positions = [order.index(n) for n in names]
        assert positions == sorted(set(positions)), (r["qom-path"], names)


def all_schemas(q):
    return {s["provider"]: s["stats"] for s in q.command("query-stats-schemas")
            if s["target"] == "netfilter"}


def test_query_stats_matches_query_netfilter_stats(tmp_path):
    """For every filter, before and after b0 releases what it holds:
    query-stats has exactly the numbers of query-netfilter-stats, mapped by
    each counter's shape, and those are the exact counts of the traffic."""
    tx, rx = tx_frames(), rx_frames()
    with start_chain(tmp_path) as q:
        schemas = all_schemas(q)
        send_tx(q, tx)
        queued_from = time.monotonic()
        send_rx(q, rx)
        wait_netfilter_stats(q, expected_chain(tx, rx, released=False))
        queued_by = time.monotonic()
        entries, results = snapshot(q)
        assert entries == expected_chain(tx, rx, released=False)
        assert netfilter_results(results) == mapped_results(entries)
        assert_in_schema_order(results, schemas)
        # spot checks of the mapping, written out
        by_path = {r["qom-path"]: dict((s["name"], s["value"]) for s in r["stats"])
                   for r in netfilter_results(results)}
        # tx: 60 + 100 + 101 + 1514 = 1775 bytes; rx: 64 + 54 + 300 = 418
        assert (by_path["/objects/m0"]["packets-tx"], by_path["/objects/m0"]["bytes-tx"],
                by_path["/objects/m0"]["outdev-packets"], by_path["/objects/m0"]["outdev-bytes"]) \
            == (4, 1775, 4, 1775)
        assert (by_path["/objects/m0"]["hold-time"], by_path["/objects/m0"]["hold-time-sum"]) \
            == NO_EVENTS
        assert (by_path["/objects/b0"]["packets-rx"], by_path["/objects/b0"]["bytes-rx"],
                by_path["/objects/b0"]["buffered-packets"],
                by_path["/objects/b0"]["buffered-bytes"]) == (3, 418, 3, 418)
        assert (by_path["/objects/r1"]["indev-packets"], by_path["/objects/r1"]["indev-bytes"],
                by_path["/objects/r1"]["packets-rx"]) == (3, 418, 0)
        # nothing past b0 has seen the rx frames yet
        assert (by_path["/objects/w0"]["packets-rx"], by_path["/objects/w0"]["connections"]) \
            == (0, 0)
        assert "connections-bytes" not in by_path["/objects/w0"]
        # 101 and 1514 bytes are cut to 100
        assert (by_path["/objects/d0"]["written-packets"], by_path["/objects/d0"]["written-bytes"],
                by_path["/objects/d0"]["truncated-packets"],
                by_path["/objects/d0"]["truncated-bytes"]) == (4, 360, 2, 1 + 1414)

        # b0 switched off releases what it holds, to w0, d0 and the wire,
        # each frame after the time it waited (delay)
        released_from = time.monotonic()
        q.command("qom-set", path="/objects/b0", property="status", value="off")
        released_by = time.monotonic()
        for f in rx:
            assert read_frame(q.netdev_peer)[0] == f
        wait_netfilter_stats(q, expected_chain(tx, rx, released=True))
        entries, results = snapshot(q)
        by_path = {r["qom-path"]: dict((s["name"], s["value"]) for s in r["stats"])
                   for r in netfilter_results(results)}
        delay = (by_path["/objects/b0"]["delay"], by_path["/objects/b0"]["delay-sum"])
        assert_histogram(*delay, events=len(rx), shortest_us=(released_from - queued_by) * 1e6,
                         longest_us=(released_by - queued_from) * 1e6)
        assert netfilter_results(results) == mapped_results(
            entries, durations={"b0": {"delay": delay}},
            events=expected_events(tx, rx, released=True))
        assert_in_schema_order(results, schemas)
        assert (by_path["/objects/b0"]["released-packets"],
                by_path["/objects/b0"]["released-bytes"],
                by_path["/objects/b0"]["buffered-packets"],
                by_path["/objects/b0"]["buffered-bytes"]) == (3, 418, 0, 0)
        assert (by_path["/objects/d0"]["packets-rx"], by_path["/objects/d0"]["bytes-rx"]) \
            == (3, 418)
        # the guest's SYN made one connection
        assert (by_path["/objects/w0"]["packets-rx"], by_path["/objects/w0"]["connections"],
                by_path["/objects/w0"]["rewritten-packets"], by_path["/objects/w0"]["closed"]) \
            == (3, 1, 0, 0)
        assert (by_path["/objects/d0"]["truncated-packets"],
                by_path["/objects/d0"]["truncated-bytes"]) == (3, 1415 + 200)
        # d0's file holds what it says it wrote: a pcap header, then a
        # record header and the captured bytes for each frame.
        written = (by_path["/objects/d0"]["written-packets"],
                   by_path["/objects/d0"]["written-bytes"])
        assert written == (7, 60 + 100 + 100 + 100 + 64 + 54 + 100)
        assert os.path.getsize(tmp_path / "d0.pcap") == 24 + 16 * written[0] + written[1]
        # every value of every type is in a result: the schema has nothing
        # that no filter built here can report
        reported = {s["name"] for r in netfilter_results(results) for s in r["stats"]}
        assert reported == ALL_VALUES
        assert_alive(q)


def test_schemas(tmp_path):
    with start_chain(tmp_path) as q:
        netfilter = schema(q)
        names = [v["name"] for v in netfilter]
        assert len(names) == len(set(names)), names
        assert set(names) == ALL_VALUES
        assert names[:4] == DIRECTION_VALUES
        for v in netfilter:
            assert v == expected_schema_value(v["name"])
        # each type's values, in its counters' order, are in schema order
        for counters in TYPE_COUNTERS.values():
            want = DIRECTION_VALUES + [v for c in counters for v in value_names(c)]
            assert [n for n in names if n in want] == want

        # without a provider: every provider's schema, netfilter's and
        # colo-compare's once each, for target netfilter
        everything = q.command("query-stats-schemas")
        targets = [(s["provider"], s["target"]) for s in everything]
        assert targets.count(("netfilter", "netfilter")) == 1
        assert targets.count(("colo-compare", "netfilter")) == 1
        assert all_schemas(q)["netfilter"] == netfilter
        assert all_schemas(q)["colo-compare"] == schema(q, "colo-compare")
        assert not set(DIRECTION_VALUES) & {v["name"] for v in schema(q, "colo-compare")}

        # an idle chain: all results follow their schemas too
        assert_in_schema_order(query_stats(q), all_schemas(q))


def test_names_providers_and_targets(tmp_path):
    tx = tx_frames()
    with start_chain(tmp_path) as q:
        send_tx(q, tx)
        wait_netfilter_stats(q, expected_chain(tx, [], released=False))
        entries = q.stats()
        everything = query_stats(q)
        assert [r["provider"] for r in everything].count("colo-compare") == 1
        assert netfilter_results(everything) == mapped_results(entries)

        def by_names(*names, provider="netfilter"):
            return query_stats(q, providers=[{"provider": provider, "names": list(names)}])

        # names keep those values, in the result's order, whatever the
        # order asked; a result with none left is left out
        got = by_names("hold-time", "packets-tx", "connections", "buffered-bytes")
        assert got == mapped_results(entries, {"packets-tx", "hold-time", "connections",
                                               "buffered-bytes"})
        assert [r["stats"] for r in got if r["qom-path"] == "/objects/w0"] == \
            [[{"name": "packets-tx", "value": 4}, {"name": "connections", "value": 0}]]
        assert by_names("connections") == [
            {"provider": "netfilter", "qom-path": "/objects/w0",
             "stats": [{"name": "connections", "value": 0}]}]
        assert [r["qom-path"] for r in by_names("indev-packets")] == \
            ["/objects/r0", "/objects/r1"]
        assert by_names("outdev-bytes") == [
            {"provider": "netfilter", "qom-path": f"/objects/{n}",
             "stats": [{"name": "outdev-bytes", "value": v}]}
            for n, v in [("m0", sum(map(len, tx))), ("r0", sum(map(len, tx))), ("r1", 0)]]
        assert by_names("hold-time-sum") == mapped_results(entries, {"hold-time-sum"})
        assert [r["qom-path"] for r in by_names("delay")] == ["/objects/b0"]
        assert by_names("nope") == []
        assert by_names() == []
        # a colo-compare name asked of the netfilter provider: nothing
        assert by_names("primary-packets") == []

        # providers
        only_netfilter = query_stats(q, providers=[{"provider": "netfilter"}])
        assert only_netfilter == mapped_results(entries)
        only_colo = query_stats(q, providers=[{"provider": "colo-compare"}])
        assert [(r["provider"], r["qom-path"]) for r in only_colo] == [("colo-compare",
                                                                        "/objects/c0")]
        assert netfilter_results(query_stats(q, providers=[
            {"provider": "colo-compare"}, {"provider": "netfilter"}])) == mapped_results(entries)
        assert netfilter_results(by_names("packets-tx", provider="colo-compare")) == []

        # other targets have no netfilter results (nor colo-compare ones)
        for target in ("vm", "vcpu"):
            got = query_stats(q, target)
            assert [r for r in got if r["provider"] in ("netfilter", "colo-compare")] == [], got
            got = query_stats(q, target, providers=[{"provider": "netfilter"}])
            assert got == [], got
        assert_alive(q)


def test_object_del_and_add(tmp_path):
    tx = tx_frames()
    with start_chain(tmp_path) as q:
        send_tx(q, tx[:2])
        q.command("object-del", id="d0")
        entries, results = snapshot(q)
        assert [e["name"] for e in entries] == ["m0", "w0", "b0", "r0", "r1"]
        assert netfilter_results(results) == mapped_results(entries)
        assert "/objects/d0" not in [r["qom-path"] for r in results]

        q.command("object-add", **{"qom-type": "filter-dump", "id": "d1", "netdev": "n0",
                                   "queue": "tx", "file": f"{tmp_path}/d1.pcap",
                                   "position": "head"})
        q.command("object-add", **{"qom-type": "filter-rewriter", "id": "w1", "netdev": "n0"})
        entries, results = snapshot(q)
        assert [e["name"] for e in entries] == ["d1", "m0", "w0", "b0", "r0", "r1", "w1"]
        assert netfilter_results(results) == mapped_results(entries)
        assert netfilter_results(results)[0] == {
            "provider": "netfilter", "qom-path": "/objects/d1",
            "stats": [{"name": n, "value": 0} for n in DIRECTION_VALUES + [
                "written-packets", "written-bytes", "truncated-packets", "truncated-bytes",
                "write-errors-packets", "write-errors-bytes"]]}

        # the new filter counts; the query-stats numbers follow
        send_tx(q, tx[2:3])
        got = query_stats(q, providers=[{"provider": "netfilter",
                                         "names": ["packets-tx", "bytes-tx", "written-bytes"]}])
        assert got[0] == {"provider": "netfilter", "qom-path": "/objects/d1",
                          "stats": [{"name": "packets-tx", "value": 1},
                                    {"name": "bytes-tx", "value": 101},
                                    {"name": "written-bytes", "value": 101}]}
        assert got[-1]["qom-path"] == "/objects/w1"
        entries, results = snapshot(q)
        assert netfilter_results(results) == mapped_results(entries)
        assert_in_schema_order(results, all_schemas(q))

        for name in ("d1", "w1", "m0", "w0", "b0", "r0", "r1"):
            q.command("object-del", id=name)
        assert netfilter_results(query_stats(q)) == []
        assert q.stats() == []
        assert [r["provider"] for r in query_stats(q)] == ["colo-compare"]
        assert q.hmp("info stats netfilter * netfilter") == ""


# --- info stats ----------------------------------------------------------------

def hmp_unit(v):
    """The unit info stats prints for a schema value (only those used here)."""
    if "unit" not in v:
        assert v["exponent"] == 0, v
        return ""
    if v["unit"] == "bytes" and v["exponent"] == 0:
        return ", B"
    if v["unit"] == "seconds" and (v.get("base"), v["exponent"]) == (10, -6):
        return ", us"
    raise AssertionError(f"unexpected unit {v}")


def hmp_value(value):
    """How info stats prints a value: a number, or each bucket from [1]."""
    if isinstance(value, list):
        return "".join(f"[{i}]={n} " for i, n in enumerate(value, 1))
    return str(value)


def hmp_text(results, schemas, show_provider=True):
    """What info stats netfilter prints for these query-stats results."""
    lines = []
    for r in results:
        schema_of = {v["name"]: v for v in schemas[r["provider"]]}
        if show_provider:
            lines.append(f"provider: {r['provider']}")
        lines.append(f"  {r['qom-path']}")
        for s in r["stats"]:
            v = schema_of[s["name"]]
            lines.append(f"    {s['name']} ({v['type']}{hmp_unit(v)}): {hmp_value(s['value'])}")
    return "".join(line + "\r\n" for line in lines)


def test_hmp_info_stats(tmp_path):
    tx, rx = tx_frames(), rx_frames()
    with start_chain(tmp_path) as q:
        send_tx(q, tx)
        send_rx(q, rx)
        wait_netfilter_stats(q, expected_chain(tx, rx, released=False))
        # the exact text, for a few values (c0 has connections too)
        NO_HOLDS = hmp_value([0] * BUCKETS)
        assert q.hmp("info stats netfilter hold-time,connections,truncated-bytes") == (
            "provider: colo-compare\r\n"
            "  /objects/c0\r\n"
            "    connections (instant): 0\r\n"
            "provider: netfilter\r\n"
            "  /objects/m0\r\n"
            f"    hold-time (log2-histogram, us): {NO_HOLDS}\r\n"
            "provider: netfilter\r\n"
            "  /objects/d0\r\n"
            "    truncated-bytes (cumulative, B): 1415\r\n"
            "provider: netfilter\r\n"
            "  /objects/w0\r\n"
            "    connections (instant): 0\r\n"
            "provider: netfilter\r\n"
            "  /objects/r0\r\n"
            f"    hold-time (log2-histogram, us): {NO_HOLDS}\r\n"
            "provider: netfilter\r\n"
            "  /objects/r1\r\n"
            f"    hold-time (log2-histogram, us): {NO_HOLDS}\r\n"
        )
        assert q.hmp("info stats netfilter packets-tx,bytes-tx,buffered-bytes netfilter") == (
            "  /objects/m0\r\n"
            "    packets-tx (cumulative): 4\r\n"
            "    bytes-tx (cumulative, B): 1775\r\n"
            "  /objects/d0\r\n"
            "    packets-tx (cumulative): 4\r\n"
            "    bytes-tx (cumulative, B): 1775\r\n"
            "  /objects/w0\r\n"
            "    packets-tx (cumulative): 4\r\n"
            "    bytes-tx (cumulative, B): 1775\r\n"
            "  /objects/b0\r\n"
            "    packets-tx (cumulative): 0\r\n"
            "    bytes-tx (cumulative, B): 0\r\n"
            "    buffered-bytes (instant, B): 418\r\n"
            "  /objects/r0\r\n"
            "    packets-tx (cumulative): 4\r\n"
            "    bytes-tx (cumulative, B): 1775\r\n"
            "  /objects/r1\r\n"
            "    packets-tx (cumulative): 0\r\n"
            "    bytes-tx (cumulative, B): 0\r\n"
        )
        assert q.hmp("info stats netfilter written-packets") == (
            "provider: netfilter\r\n"
            "  /objects/d0\r\n"
            "    written-packets (cumulative): 4\r\n"
        )

        # everything: what query-stats returns, with each value's schema
        schemas = all_schemas(q)
        _, results = snapshot(q)
        assert q.hmp("info stats netfilter") == hmp_text(results, schemas)
        assert q.hmp("info stats netfilter * netfilter") == \
            hmp_text(netfilter_results(results), schemas, show_provider=False)
        assert q.hmp("info stats netfilter * colo-compare") == \
            hmp_text([r for r in results if r["provider"] == "colo-compare"], schemas,
                     show_provider=False)
        assert q.hmp("info stats netfilter nope") == ""
        assert q.hmp("info stats netfilter written-packets colo-compare") == ""

        assert q.hmp("info stats bogus") == "invalid stats target bogus\r\n"
        assert q.hmp("info stats netfilter * bogus") == "invalid stats provider bogus\r\n"
        assert_alive(q)


# --- bad arguments -------------------------------------------------------------

BAD_ARGUMENTS = [
    ({"target": "nope"}, "Parameter 'target' does not accept value 'nope'"),
    ({"target": "netfilter", "providers": [{"provider": "nope"}]},
     "Parameter 'provider' does not accept value 'nope'"),
    ({"target": "netfilter", "providers": [{"provider": "netfilter"}, {"provider": "nope"}]},
     "Parameter 'provider' does not accept value 'nope'"),
    ({}, "Parameter 'target' is missing"),
]


def test_bad_arguments(tmp_path):
    with start_chain(tmp_path) as q:
        for arguments, desc in BAD_ARGUMENTS:
            reply = q.command_raw("query-stats", arguments)
            assert reply.get("error") == {"class": "GenericError", "desc": desc}, (arguments, reply)
        reply = q.command_raw("query-stats-schemas", {"provider": "nope"})
        assert reply.get("error") == {
            "class": "GenericError",
            "desc": "Parameter 'provider' does not accept value 'nope'"}, reply
        # QEMU is still fine, and still answers
        assert netfilter_results(query_stats(q)) == mapped_results(q.stats())
        assert_alive(q)
