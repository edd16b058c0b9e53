"""The COLO network chain of colo.py with two guests that each boot: no
COLO migration, so nothing is ever checkpointed (test_colo_pair.py runs
it as a real COLO pair), and what colo-compare cannot match stays queued,
and is counted as such."""


import pytest

from colo import Chain, check_chain_adds_up, colo_counters, comp0, ping, served_bytes, tcp_fetch
from qemu import wait_until

# the primary's netdev is a tap (tests/guest/conftest.py)
pytestmark = pytest.mark.needs_tap


@pytest.fixture
def chain():
    c = Chain()
    yield c
    c.close()


def test_colo_chain_releases_what_both_sides_agree_on(chain):
    before = chain.snapshot()
    assert ping(10) == 10
    data = tcp_fetch()
    assert data == served_bytes()
    after = chain.snapshot()
    released, queued = check_chain_adds_up(before, after)
    c0, c1 = colo_counters(before[2]), colo_counters(after[2])
    # The echo replies and the TCP stream were compared and matched.
    assert released[0] > 10 + len(data) // 1460
    assert queued == (0, 0), c1
    for kind in ("miscompare-tcp", "miscompare-udp", "miscompare-icmp", "miscompare-other"):
        assert c1[kind] == c0[kind], (kind, c1)
    # The secondary's own netdev got nothing: f2 takes all it sends.
    assert (after[1]["f2"]["packets-rx"] - before[1]["f2"]["packets-rx"]) > 0


def test_colo_chain_survives_a_link_drop_and_garbage(chain):
    expected = served_bytes()
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
    wait_until(lambda: comp0(chain.primary)["secondary-in-errors"] != errors0,
               "garbage not counted", 10, 0.1)
    wait_until(lambda: chain.links["secondary"].accepted != accepted0,
               "the secondary did not reconnect", 10, 0.1)
    chain.wait_links()
    assert tcp_fetch() == expected
