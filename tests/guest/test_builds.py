"""What scripts/build-qemu.sh builds: every filter and colo-compare in
both modes, and replication (the block side of a COLO pair) in the full
one. (TCG and the option ROMs: every guest test boots through them.)"""

import os

import pytest

from guest import FULL_BINARY
from qemu import DEFAULT_BINARY, Qemu

COLO_TYPES = {"filter-mirror", "filter-redirector", "filter-buffer", "filter-dump",
              "filter-rewriter", "filter-replay", "colo-compare"}


def block_drivers(q):
    schema = q.command("query-qmp-schema")
    names = {e["name"]: e for e in schema}
    (cmd,) = [e for e in schema if e["meta-type"] == "command" and e["name"] == "blockdev-add"]
    arg = names[cmd["arg-type"]]
    driver = next(m for m in arg.get("members", []) if m["name"] == "driver")
    return set(names[driver["type"]]["values"])


@pytest.mark.parametrize("binary", [DEFAULT_BINARY, FULL_BINARY], ids=["minimal", "full"])
def test_build_has_the_colo_filters(binary):
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} not built")
    with Qemu(binary=binary) as q:
        types = {t["name"] for t in q.command("qom-list-types")}
        assert COLO_TYPES <= types, COLO_TYPES - types
        if binary == FULL_BINARY:
            assert "replication" in block_drivers(q)
