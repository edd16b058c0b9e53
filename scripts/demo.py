#!/usr/bin/env python3
"""The quick-start demo: start the patched QEMU with a redirector chain, send
real framed traffic through sockets, print `info netfilter-stats` and the QMP
reply of query-netfilter-stats, and quit QEMU cleanly.

    netdev n0 (socket; this script holds the other end)
      d0  filter-dump        queue=all   counts both directions
      r0  filter-redirector  queue=tx    outdev=out0: what n0 sends -> socket
      r1  filter-redirector  queue=rx    indev=in1:   socket -> into n0
"""

import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
from qemu import Qemu, frame, read_frame  # noqa: E402

TX = [60, 1514, 9000]  # frames the netdev sends (written to its socket)
RX = [42, 1500]  # frames injected through r1's indev


def main():
    pcap = os.path.join(tempfile.mkdtemp(prefix="qns-demo-"), "d0.pcap")
    with Qemu(
        chardevs=["out0", "in1"],
        extra_args=[
            "-object", f"filter-dump,id=d0,netdev=n0,queue=all,file={pcap}",
            "-object", "filter-redirector,id=r0,netdev=n0,queue=tx,outdev=out0",
            "-object", "filter-redirector,id=r1,netdev=n0,queue=rx,indev=in1",
        ],
    ) as q:
        print(f"QEMU: {q.binary}")
        out = q.connect_chardev("out0")
        inp = q.connect_chardev("in1")
        q.wait_connected()

        for n in TX:
            q.netdev_peer.sendall(frame(bytes(n)))
        for n in TX:
            payload, _ = read_frame(out)
            assert len(payload) == n
        print(f"sent {len(TX)} frames ({sum(TX)} bytes) into netdev n0; all came out of r0's outdev")

        for n in RX:
            inp.sendall(frame(bytes(n)))
        for n in RX:
            payload, _ = read_frame(q.netdev_peer)
            assert len(payload) == n
        print(f"sent {len(RX)} frames ({sum(RX)} bytes) into r1's indev; all came out of netdev n0")

        print("\n(qemu) info netfilter-stats")
        print(q.hmp("info netfilter-stats").replace("\r\n", "\n"), end="")
        print('\n-> { "execute": "query-netfilter-stats" }')
        print("<- " + json.dumps({"return": q.stats()}, indent=2))

        stats = q.stats_by_name()
        ok = (stats["r0"]["packets-tx"], stats["r0"]["bytes-tx"]) == (len(TX), sum(TX)) and (
            stats["r1"]["counters"][0] == {"name": "indev", "packets": len(RX), "bytes": sum(RX)}
        )
    print(f"\nQEMU quit cleanly (exit status {q.proc.returncode}); counters "
          + ("match the traffic sent." if ok else "DO NOT match the traffic sent!"))
    return 0 if ok and q.proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
