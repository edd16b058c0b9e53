#!/usr/bin/env python3
"""Guest throughput: a real Linux guest (scripts/build-guest.sh) sends UDP
frames through filter-mirror and through filter-redirector on its netdev,
stock QEMU 10.2.2 against the patched one, alternately in one run.

Each binary boots the guest once per filter (microvm, virtio-net-device,
socket netdev n0; TCG unless KVM can boot it): filter-mirror f0
(queue=rx, outdev=out0) or filter-redirector f0 (queue=rx, outdev=out0).
A round sends, for each UDP payload size, COUNT frames from the guest
(`qns-guest send`, a packet socket) and times the send command until the
last frame has arrived at out0 (and, for the mirror, at the netdev's
peer), as the C receiver of benches/e2e.py (`pump drain`, one process per
output) counts them; QEMU's CPU (all its threads, and the main loop's and the vCPU's
apart) is read from /proc/PID/task/*/stat around it. Frames/s and CPU per frame are medians over the
rounds; the worst round is the lowest patched/stock ratio of one round.

With --counts it also counts, per 1000 frames: the guest's transmit
notifications (virtio_queue_notify on the TX queue: frames per kick), the
interrupts QEMU raises (virtio_notify), and the context switches of the
main loop (its wake-ups) and of the vCPU thread. The counts come from
QEMU's trace events, whose logging slows QEMU down: with --counts the
frames/s and CPU columns are not the benchmark's.

With --tx timer the NIC is virtio-net-device,tx=timer: virtio-net's other
transmit mitigation, which looks at the guest's queue every 150 us while it
sends instead of taking a notification for every few frames; the rate
then no longer depends on how long QEMU takes per frame (see BENCHMARKS.md,
issue 23).

Usage: benches/guest.py [--rounds N] [--quick] [--counts] [--tx bh|timer]
                        [--filter none|filter-mirror|filter-redirector]
Markdown goes to stdout, progress to stderr.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "guest"))
from guest import Guest, accel  # noqa: E402
from qemu import REPO  # noqa: E402
from e2e import build_pump  # noqa: E402

BINARIES = {
    "stock": os.path.join(REPO, "build", "qemu-stock", "qemu-system-x86_64"),
    "patched": os.path.join(REPO, "build", "qemu", "qemu-system-x86_64"),
}
FILTERS = ("filter-mirror", "filter-redirector")
# The baseline: no filter, frames go to the netdev's peer.
NO_FILTER = "none"
# (UDP payload bytes, frames per run): Ethernet + IPv4 + UDP headers are 42 B.
SIZES = ((64, 40_000), (1472, 20_000))
QUICK_SIZES = ((64, 5_000), (1472, 2_000))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def thread_cpu(pid):
    """CPU seconds of QEMU's threads: (all, main loop, vCPUs), and their
    context switches: (main loop, vCPUs)."""
    total = main = vcpu = 0.0
    switches = {"main": 0, "vcpu": 0}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                head, tail = f.read().rsplit(")", 1)
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                ctx = sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
        except FileNotFoundError:
            continue
        fields = tail.split()
        t = (int(fields[11]) + int(fields[12])) / CLK_TCK
        total += t
        if tid == str(pid):
            main += t
            switches["main"] += ctx
        elif "/TCG" in head or "/KVM" in head:
            vcpu += t
            switches["vcpu"] += ctx
    return total, main, vcpu, switches


# --counts: the trace events counted, and how their log lines are told apart.
TRACE_EVENTS = ("virtio_queue_notify", "virtio_notify")
TX_KICK = re.compile(r"virtio_queue_notify vdev \S+ n 1 ")


class Setup:
    """One booted guest with one filter, its outputs drained."""

    def __init__(self, binary, kind, pump, counts=False, tx="bh"):
        self.kind, self.pump = kind, pump
        objects = [] if kind == NO_FILTER else [
            "-object", f"{kind},id=f0,netdev=n0,queue=rx,outdev=out0"]
        self.trace = None
        if counts:
            fd, events = tempfile.mkstemp(prefix="qns-guest-bench-", suffix=".events")
            with os.fdopen(fd, "w") as f:
                f.write("\n".join(TRACE_EVENTS) + "\n")
            self.trace = events[:-len(".events")] + ".log"
            objects += ["-trace", f"events={events}", "-D", self.trace]
            self.trace_files = (events, self.trace)
        self.g = Guest(binary=binary, nic=f"virtio-net-device,tx={tx}",
                       chardevs=[] if kind == NO_FILTER else ["out0"],
                       extra_args=objects)
        # where the frames come out: read by a C receiver, which takes
        # little CPU from QEMU and the guest on a small machine
        self.outputs = [] if kind == NO_FILTER else [self.g.connect_chardev("out0")]
        if kind != "filter-redirector":
            self.outputs.append(self.g.netdev_peer)
        self.g.wait_connected()

    def run(self, payload, count):
        frame = payload + 42
        traced = os.path.getsize(self.trace) if self.trace else 0
        drains = [subprocess.Popen([self.pump, "drain", str(out.fileno()), str(frame), str(count),
                                    "10000"], pass_fds=[out.fileno()], stdout=subprocess.PIPE,
                                   text=True) for out in self.outputs]
        cpu0, t0 = thread_cpu(self.g.proc.pid), time.monotonic()
        self.g.sh(f"qns-guest send eth0 {count} {frame} >/dev/null", timeout=600)
        got = [json.loads(d.communicate(timeout=120)[0]) for d in drains]
        cpu1 = thread_cpu(self.g.proc.pid)
        if any(r["frames"] != count or r["bad"] for r in got):
            raise AssertionError(f"{self.kind}: frames missing or bad: {got}, {count} sent")
        # the drains time the last frame with the same clock (CLOCK_MONOTONIC)
        elapsed = max(r["t_last"] for r in got) - t0
        cpu = [b - a for a, b in zip(cpu0[:3], cpu1[:3])]
        res = {"fps": count / elapsed, "cpu_per_frame": cpu[0] / count,
               "main_per_frame": cpu[1] / count, "vcpu_per_frame": cpu[2] / count}
        if self.trace:
            with open(self.trace) as f:
                f.seek(traced)
                log = f.read()
            per_kframe = 1000 / count
            res["counts"] = {
                "tx_kicks": len(TX_KICK.findall(log)) * per_kframe,
                "interrupts": log.count("virtio_notify ") * per_kframe,
                "main_wakeups": (cpu1[3]["main"] - cpu0[3]["main"]) * per_kframe,
                "vcpu_switches": (cpu1[3]["vcpu"] - cpu0[3]["vcpu"]) * per_kframe}
        return res

    def close(self):
        self.g.close()
        for path in self.trace_files if self.trace else ():
            os.unlink(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--counts", action="store_true",
                    help="also count notifications, interrupts and wake-ups per frame "
                         "(trace events on: the timings are not the benchmark's)")
    ap.add_argument("--tx", choices=("bh", "timer"), default="bh",
                    help="virtio-net's transmit mitigation (default bh, as QEMU's)")
    ap.add_argument("--filter", choices=FILTERS + (NO_FILTER,), action="append",
                    help="only this filter (repeatable; default: none and both)")
    args = ap.parse_args()
    filters = tuple(args.filter or (NO_FILTER,) + FILTERS)
    sizes = QUICK_SIZES if args.quick else SIZES
    for name, b in BINARIES.items():
        if not os.access(b, os.X_OK):
            flag = " --stock" if name == "stock" else ""
            sys.exit(f"guest bench: {b} missing: run scripts/build-qemu.sh{flag}")

    work = tempfile.mkdtemp(prefix="qns-guest-bench-")
    pump = build_pump(work)
    runs = {}
    for kind in filters:
        setups = {name: Setup(b, kind, pump, args.counts, args.tx)
                  for name, b in BINARIES.items()}
        try:
            for payload, count in sizes:  # warm-up, not recorded
                for s in setups.values():
                    s.run(payload, count // 10)
            for r in range(args.rounds):
                for payload, count in sizes:
                    for name, s in setups.items():
                        res = s.run(payload, count)
                        runs.setdefault((kind, payload, name), []).append(res)
                        log(f"round {r + 1} {kind} {payload} B {name}: "
                            f"{res['fps'] / 1e3:.1f} kframes/s, "
                            f"{res['cpu_per_frame'] * 1e6:.2f} us CPU/frame")
        finally:
            for s in setups.values():
                s.close()
    shutil.rmtree(work)

    med = statistics.median

    def per(rs, thread):
        return f"{med([x[f'{thread}_per_frame'] for x in rs]) * 1e6:.2f}"

    print(f"Guest -> netdev, {args.rounds} alternating rounds (stock, patched), "
          f"accelerator {accel()}, {os.cpu_count()} CPUs, virtio-net-device,tx={args.tx}\n")
    print("| filter | UDP payload | stock kframes/s | patched kframes/s | patched/stock "
          "| worst round | stock CPU/frame | patched CPU/frame | patched/stock CPU "
          "| main loop, stock / patched | vCPU, stock / patched |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in filters:
        for payload, _ in sizes:
            s, p = runs[(kind, payload, "stock")], runs[(kind, payload, "patched")]
            sf, pf = [x["fps"] for x in s], [x["fps"] for x in p]
            sc, pc = med([x["cpu_per_frame"] for x in s]), med([x["cpu_per_frame"] for x in p])
            worst = min(b["fps"] / a["fps"] for a, b in zip(s, p))
            print(f"| {kind} | {payload} B | {med(sf) / 1e3:.1f} [{min(sf) / 1e3:.1f}-{max(sf) / 1e3:.1f}] "
                  f"| {med(pf) / 1e3:.1f} [{min(pf) / 1e3:.1f}-{max(pf) / 1e3:.1f}] "
                  f"| **{med(pf) / med(sf):.2f}x** | {worst:.2f}x "
                  f"| {sc * 1e6:.2f} us | {pc * 1e6:.2f} us | {pc / sc:.2f}x "
                  f"| {per(s, 'main')} / {per(p, 'main')} us "
                  f"| {per(s, 'vcpu')} / {per(p, 'vcpu')} us |")
    if not args.counts:
        return
    print("\nPer 1000 frames, median of the rounds, stock / patched (trace events on):\n")
    print("| filter | UDP payload | guest TX kicks | interrupts | main-loop wake-ups "
          "| vCPU context switches |")
    print("|---|---|---|---|---|---|")
    for kind in filters:
        for payload, _ in sizes:
            s, p = runs[(kind, payload, "stock")], runs[(kind, payload, "patched")]
            cells = [f"{med([x['counts'][c] for x in s]):.0f} / {med([x['counts'][c] for x in p]):.0f}"
                     for c in ("tx_kicks", "interrupts", "main_wakeups", "vcpu_switches")]
            print(f"| {kind} | {payload} B | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
