"""A real COLO pair with its network (colo.py): the primary's guest is
migrated to the secondary with x-colo, both run, colo-compare releases
what both guests send alike, and the pair is checkpointed, periodically and
whenever colo-compare finds the guests diverged. Traffic from the host runs
through it while it checkpoints, then one side is lost and the other takes
over, with the filters torn down as docs/COLO-FT.txt says.

Each test writes what it measured (time to COLO, checkpoints per minute,
the pause of each) to target/colo/, which BENCHMARKS.md reports.
"""

import statistics
import threading
import time

import pytest

from colo import (Chain, check_chain_adds_up, colo_counters, comp0, delta, ping, served_bytes,
                  tcp_echo, tcp_fetch, udp_echo)
from guest import record
from qemu import GUEST_MAC, Qemu, QmpError, poll, wait_until

pytestmark = [pytest.mark.needs_tap, pytest.mark.needs_full]

# periodic checkpoints (x-checkpoint-delay), and one long enough that only
# colo-compare asks for them
CHECKPOINT_MS, QUIET_MS = 2000, 600_000
MISCOMPARES = ("miscompare-tcp", "miscompare-udp", "miscompare-icmp", "miscompare-other",
               "miscompare-timeout")
ECHO_DATA = bytes((i * 7 + i // 251) % 256 for i in range(200_000))


@pytest.fixture
def pair():
    c = Chain(colo=True)
    yield c
    c.close()


def pauses(checkpoints):
    p = [pause * 1000 for _, pause in checkpoints]
    return {"count": len(p), "median-ms": statistics.median(p) if p else None,
            "max-ms": max(p) if p else None}


def wait_checkpoints(pair, n, timeout=60):
    got = poll(pair.checkpoints, lambda c: len(c) >= n, timeout, 0.1)
    assert len(got) >= n, f"{len(got)} checkpoints, not {n}"
    return pair.checkpoints()


def misses(pair):
    """comp0's checkpoint requests, and why."""
    c = comp0(pair.primary)
    return {k: c[k] for k in (*MISCOMPARES, "checkpoint-requests")}


def traffic():
    """Ping, a TCP stream each way, UDP, all checked whole."""
    assert ping(10) == 10
    assert tcp_fetch() == served_bytes()
    assert tcp_echo(ECHO_DATA) == ECHO_DATA
    assert udp_echo(50) == list(range(50))


def direct_traffic():
    """The same, once one guest is left and no filter is on its path."""
    assert ping(5) == 5
    assert tcp_fetch() == served_bytes()
    assert tcp_echo(ECHO_DATA) == ECHO_DATA
    assert udp_echo(20) == list(range(20))


def test_colo_refuses_return_path():
    """COLO carries its messages on the return path: x-colo together with
    the return-path capability is refused when set, with the reason (stock
    accepts it, and the migration fails once COLO starts)."""
    caps = [{"capability": "return-path", "state": True}, {"capability": "x-colo", "state": True}]
    with Qemu() as q:
        with pytest.raises(QmpError, match="COLO is not compatible with return-path"):
            q.command("migrate-set-capabilities", capabilities=caps)
        for cap in caps:
            q.command("migrate-set-capabilities", capabilities=[cap])
            q.command("migrate-set-capabilities", capabilities=[dict(cap, state=False)])
        # one after the other, too
        q.command("migrate-set-capabilities", capabilities=caps[:1])
        with pytest.raises(QmpError, match="COLO is not compatible with return-path"):
            q.command("migrate-set-capabilities", capabilities=caps[1:])


def test_colo_pair_checkpoints_under_traffic_then_loses_its_secondary(pair):
    to_colo = pair.start_colo(CHECKPOINT_MS)
    # Idle: the periodic checkpoints only.
    t0, n0 = time.monotonic(), len(pair.checkpoints())
    time.sleep(10)
    idle = pair.checkpoints()[n0:]
    idle_per_min = len(idle) * 60 / (time.monotonic() - t0)
    # Traffic through the pair while it checkpoints.
    before = pair.snapshot()
    m0, t1, n1 = misses(pair), time.monotonic(), len(pair.checkpoints())
    # rounds of traffic until the pair has checkpointed three times
    rounds = 0
    while rounds == 0 or len(pair.checkpoints()) < n1 + 3:
        traffic()
        rounds += 1
    busy_seconds = time.monotonic() - t1
    # A packet whose twin never comes (a pure ACK the secondary did not
    # send) waits for compare_timeout or the next checkpoint: both come.
    wait_until(lambda: comp0(pair.primary)["primary-queued"] == (0, 0),
               lambda _: comp0(pair.primary), 10, 0.1)
    after = pair.snapshot()
    busy = pair.checkpoints()[n1:]
    released, queued = check_chain_adds_up(before, after)
    assert queued == (0, 0), colo_counters(after[2])
    assert released[0] > rounds * (10 + len(served_bytes()) // 1460)
    m1 = misses(pair)
    latency = delta(colo_counters(after[2])["release-latency"],
                    colo_counters(before[2])["release-latency"])
    record("colo", "pair-traffic", seconds_to_colo=round(to_colo, 2), traffic_rounds=rounds,
           idle_checkpoints_per_minute=round(idle_per_min, 1),
           busy_checkpoints_per_minute=round(len(busy) * 60 / busy_seconds, 1),
           idle_pause=pauses(idle), busy_pause=pauses(busy),
           colo_compare_requests={k: m1[k] - m0[k] for k in MISCOMPARES},
           checkpoint_requests=m1["checkpoint-requests"] - m0["checkpoint-requests"],
           release_latency_buckets=list(latency))
    # The secondary is lost: the primary goes on, its traffic direct.
    pair.primary.command("migrate-set-parameters", **{"x-checkpoint-delay": QUIET_MS})
    pair.kill("secondary")
    pair.failover_to_primary()
    assert pair.primary.stats() == []
    direct_traffic()


def test_colo_pair_checkpoints_when_the_guests_diverge(pair):
    """One miscompare, one checkpoint: with the periodic ones far apart,
    the two guests send different UDP datagrams on the same flow (each
    console runs its own command), colo-compare counts a miscompare and
    asks for a checkpoint, and the pair takes exactly one."""
    pair.start_colo(QUIET_MS)
    time.sleep(2)
    n0, m0 = len(pair.checkpoints()), misses(pair)
    released0, unsupported0 = (comp0(pair.primary)[k] for k in ("released", "unsupported"))
    pair.primary.sh("qns-guest send eth0 1 100")
    # the secondary's console is its own: its guest runs the command too,
    # with another size
    pair.secondary.console.sendall(b"qns-guest send eth0 1 200\n")
    checkpoints = wait_checkpoints(pair, n0 + 1, timeout=30)
    time.sleep(3)
    assert len(pair.checkpoints()) == n0 + 1, pair.checkpoints()
    m1 = misses(pair)
    assert {k: m1[k] - m0[k] for k in m1} == {
        k: int(k in ("miscompare-udp", "checkpoint-requests")) for k in m1}
    # the primary's datagram was released by that checkpoint
    released = comp0(pair.primary)["released"]
    assert (released[0] - released0[0], released[1] - released0[1]) == (1, 100)
    # and the secondary, which loaded the primary's state, did not announce
    # itself as if it had moved (nothing that colo-compare cannot compare)
    assert comp0(pair.primary)["unsupported"] == unsupported0
    record("colo", "pair-diverge", pause=pauses(checkpoints[n0:]))
    traffic()


def test_colo_pair_primary_lost_mid_stream(pair):
    """The primary dies while the host reads a TCP stream from the pair:
    the secondary's guest takes over and the stream completes intact."""
    pair.start_colo(CHECKPOINT_MS)
    wait_checkpoints(pair, 2)
    assert ping(3) == 3
    result = {}

    def fetch():
        try:
            result["data"] = tcp_echo(ECHO_DATA * 10, timeout=120)
        except Exception as e:  # reported below
            result["error"] = e
    reader = threading.Thread(target=fetch)
    reader.start()
    time.sleep(3)
    pair.kill("primary")
    pair.failover_to_secondary()
    # the new primary announces itself on its network, once
    rarp = pair.taps[1].wait_frame(lambda f: f[6:12] == GUEST_MAC and f[12:14] == b"\x80\x35")
    assert rarp, "no RARP from the secondary after it took over"
    reader.join(180)
    assert "error" not in result, result.get("error")
    assert result["data"] == ECHO_DATA * 10
    assert [s["name"] for s in pair.secondary.stats()] == ["rew0"]
    direct_traffic()


def test_colo_pair_loses_its_secondary_during_a_checkpoint(pair):
    """A checkpoint that cannot finish (the migration link stops moving
    while the primary's VM is stopped for it): the secondary is declared
    lost, and the primary's guest resumes and runs on."""
    pair.start_colo(QUIET_MS, relayed=True)
    n0 = len(pair.checkpoints())
    # the secondary's VMSTATE_RECEIVED (COLOMessage 5) will not arrive
    pair.links["migration"].hold_before(5)
    # ask for a checkpoint now: its STOP comes, its RESUME cannot
    pair.primary.command("migrate-set-parameters", **{"x-checkpoint-delay": 100})
    wait_until(lambda: not pair.primary.command("query-status")["running"],
               "no checkpoint began", 30, 0.05)
    time.sleep(1)
    assert pair.primary.command("query-status")["status"] == "colo"
    assert len(pair.checkpoints()) == n0
    pair.kill("secondary")
    pair.failover_to_primary()
    assert pair.primary.command("query-status")["running"]
    direct_traffic()
