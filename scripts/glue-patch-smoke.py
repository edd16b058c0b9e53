#!/usr/bin/env python3
"""Smoke-test one patch of the glue series: run the QEMU built at that patch
(scripts/glue-tree.sh --check runs this after every patch) with
filter-mirror, filter-redirector and filter-buffer on a socket netdev, pass
frames through them, and check what the patch so far provides:
query-netfilter-stats and info netfilter-stats (exact values), and
query-stats, once they exist. It must pass at every patch, from stock QEMU on.

    glue-patch-smoke.py QEMU_BINARY
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
from qemu import Qemu, frame, read_frame  # noqa: E402

SIZES = [60, 1514, 9000]


def main(binary):
    filters = [
        "filter-mirror,id=m0,netdev=n0,queue=tx,outdev=m0out",
        "filter-buffer,id=b0,netdev=n0,queue=rx,interval=1000000",
        "filter-redirector,id=r0,netdev=n0,queue=tx,indev=r0in,outdev=r0out",
        # after r0: sees only what r0 injects from its indev (r0 steals the rest)
        "filter-mirror,id=m1,netdev=n0,queue=tx,outdev=m1out",
    ]
    args = [a for f in filters for a in ("-object", f)]
    with Qemu(binary, chardevs=["m0out", "r0in", "r0out", "m1out"],
              extra_args=args) as q:
        m0out, r0in, r0out, m1out = (q.connect_chardev(c)
                                     for c in ("m0out", "r0in", "r0out", "m1out"))
        q.wait_connected()
        # netdev -> m0 (mirrored) -> r0 (redirected to r0out)
        for n in SIZES:
            q.netdev_peer.sendall(frame(bytes([n % 251]) * n))
        for n in SIZES:
            for out in (m0out, r0out):
                assert read_frame(out)[0] == bytes([n % 251]) * n, f"{n}-byte frame"
        # r0in -> r0 -> m1 (mirrored to m1out) -> the netdev's peer (the NIC)
        r0in.sendall(frame(b"x" * 100))
        assert read_frame(m1out)[0] == b"x" * 100, "r0's indev frame"

        commands = {c["name"] for c in q.command("query-commands")}
        if "query-netfilter-stats" in commands:
            tx = {"packets-tx": len(SIZES), "bytes-tx": sum(SIZES)}
            stats = q.wait_for(lambda s: s["r0"]["packets-tx"] == len(SIZES), what="r0's tx")
            assert [s["name"] for s in q.stats()] == ["m0", "b0", "r0", "m1"]
            for name, typ, want in [("m0", "filter-mirror", tx), ("b0", "filter-buffer", {}),
                                    ("r0", "filter-redirector", tx),
                                    ("m1", "filter-mirror", {"packets-tx": 1, "bytes-tx": 100})]:
                s = stats[name]
                assert (s["netdev"], s["type"]) == ("n0", typ), s
                for key in ("packets-tx", "bytes-tx", "packets-rx", "bytes-rx"):
                    assert s[key] == want.get(key, 0), (name, key, s)
            counters = {c["name"]: c for c in stats["r0"].get("counters", [])}
            if "outdev" in counters:
                assert (counters["outdev"]["packets"], counters["outdev"]["bytes"]) == \
                    (len(SIZES), sum(SIZES)), counters
            if "indev" in counters:
                assert (counters["indev"]["packets"], counters["indev"]["bytes"]) == \
                    (1, 100), counters
            # b0 (rx) saw nothing: no counters, or (from its patch on) all zero
            b0 = {c["name"]: (c["packets"], c["bytes"]) for c in stats["b0"].get("counters", [])}
            assert b0 in ({}, dict.fromkeys(("released", "dropped", "buffered"), (0, 0))), b0
            schemas = q.command_raw("query-stats-schemas", {"provider": "netfilter"})
            if "return" in schemas:
                (r0,) = [r for r in q.command("query-stats", target="netfilter")
                         if r["qom-path"] == "/objects/r0"]
                values = {v["name"]: v["value"] for v in r0["stats"]}
                assert (values["outdev-packets"], values["outdev-bytes"]) == \
                    (len(SIZES), sum(SIZES)), values
            assert q.command_raw("query-netfilter-stats", {"name": "nope"})["error"]["desc"] == \
                "netfilter 'nope' not found"
            if "netfilter-stats" in q.hmp("help info"):
                text = q.hmp("info netfilter-stats m0")
                assert text.startswith(
                    f"m0: netdev=n0 type=filter-mirror\r\n  tx: {len(SIZES)} packets, "
                    f"{sum(SIZES)} bytes\r\n  rx: 0 packets, 0 bytes\r\n"), text
        for s in (m0out, r0in, r0out, m1out):
            s.close()
    print(f"smoke: ok ({'stats' if 'query-netfilter-stats' in commands else 'no stats yet'})")


if __name__ == "__main__":
    main(sys.argv[1])
