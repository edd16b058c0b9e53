#!/usr/bin/env python3
"""End-to-end benchmarks: stock QEMU 10.2.2 against the patched one, same
configuration, measured alternately in one run (BENCHMARKS.md).

1. frames/s through netdev socket -> filter-redirector -> outdev socket;
2. frames/s through indev -> filter-redirector -> next filter -> outdev;
3. query-netfilter-stats latency with 1, 100 and 1000 filters (patched only;
   query-status is the QMP round-trip baseline);
4. RSS with 1000 filter-redirectors, stock against patched.

Python only moves big blocks (sendall of pre-framed data, recv of 1 MiB), so
QEMU is the bottleneck: see BENCHMARKS.md for the check.
"""

import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
from qemu import REPO, Qemu, frame  # noqa: E402

BINARIES = {
    "stock": os.path.join(REPO, "build", "qemu-stock", "qemu-system-x86_64"),
    "patched": os.path.join(REPO, "build", "qemu", "qemu-system-x86_64"),
}
ROUNDS = int(os.environ.get("ROUNDS", "3"))


def drain(sock, total, done):
    got = 0
    while got < total:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        got += len(chunk)
    done["bytes"] = got
    done["t"] = time.monotonic()


def throughput(binary, path, size, count):
    """Frames/s from our socket, through QEMU, back to our socket."""
    blob = frame(bytes(size)) * count
    if path == "netdev":
        chain = ["-object", "filter-redirector,id=r0,netdev=n0,queue=tx,outdev=out0"]
        chardevs = ["out0"]
    else:
        chain = ["-object", "filter-redirector,id=r0,netdev=n0,queue=rx,outdev=out0",
                 "-object", "filter-redirector,id=r1,netdev=n0,queue=rx,indev=in1"]
        chardevs = ["out0", "in1"]
    with Qemu(binary=binary, chardevs=chardevs, extra_args=chain) as q:
        out = q.connect_chardev("out0")
        src = q.connect_chardev("in1") if path == "indev" else q.netdev_peer
        q.wait_connected()
        out.settimeout(60)
        done = {}
        reader = threading.Thread(target=drain, args=(out, len(blob), done))
        reader.start()
        t0 = time.monotonic()
        view = memoryview(blob)
        for i in range(0, len(blob), 1 << 18):
            src.sendall(view[i:i + (1 << 18)])
        reader.join(120)
        if done.get("bytes") != len(blob):
            raise RuntimeError(f"{binary}: got {done.get('bytes')} of {len(blob)} bytes")
        return count / (done["t"] - t0)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rss_with_redirectors(binary, n):
    chardevs = [f"c{i}" for i in range(n)]
    chain = []
    for i in range(n):
        chain += ["-object", f"filter-redirector,id=r{i},netdev=n0,queue=tx,outdev=c{i}"]
    with Qemu(binary=binary, chardevs=chardevs, extra_args=chain) as q:
        q.command("query-status")
        time.sleep(0.5)
        return rss_kib(q.proc.pid)


def query_latency(n):
    chain = []
    for i in range(n):
        chain += ["-object", f"filter-buffer,id=b{i},netdev=n0,queue=all,interval=1000000"]
    with Qemu(binary=BINARIES["patched"], extra_args=chain) as q:
        def median_us(cmd, reps=200):
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                q.command_raw(cmd)
                times.append(time.perf_counter() - t0)
            return statistics.median(times) * 1e6
        assert len(q.stats()) == n
        return median_us("query-netfilter-stats"), median_us("query-status")


def main():
    for b in BINARIES.values():
        if not os.path.exists(b):
            sys.exit(f"missing {b}: run scripts/build-qemu.sh and scripts/build-qemu.sh --stock")
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; {ROUNDS} alternating rounds, medians")
    print()
    print("| path | frame | stock kframes/s | patched kframes/s | patched/stock |")
    print("|---|---|---|---|---|")
    for path in ("netdev", "indev"):
        for size, count in ((64, 200_000), (1514, 50_000), (9000, 10_000)):
            res = {"stock": [], "patched": []}
            for _ in range(ROUNDS):
                for name in ("stock", "patched"):
                    res[name].append(throughput(BINARIES[name], path, size, count))
            s, p = statistics.median(res["stock"]), statistics.median(res["patched"])
            print(f"| {path} | {size} | {s / 1e3:.0f} | {p / 1e3:.0f} | {p / s:.2f}x |", flush=True)
    print()
    print("| filters | query-netfilter-stats us | query-status us (baseline) | us per filter |")
    print("|---|---|---|---|")
    for n in (1, 100, 1000):
        lat, base = query_latency(n)
        print(f"| {n} | {lat:.0f} | {base:.0f} | {(lat - base) / n:.2f} |", flush=True)
    print()
    print("| 1000 filter-redirectors | stock RSS MiB | patched RSS MiB | patched/stock |")
    print("|---|---|---|---|")
    s = rss_with_redirectors(BINARIES["stock"], 1000)
    p = rss_with_redirectors(BINARIES["patched"], 1000)
    print(f"| RSS | {s / 1024:.1f} | {p / 1024:.1f} | {p / s:.2f}x |")


if __name__ == "__main__":
    main()
