#!/usr/bin/env bash
# Every benchmark behind BENCHMARKS.md, each against baselines measured in
# the same run:
#   1. the indev decoder against QEMU 10.2.2's C net_fill_rstate and memcpy,
#      and the cost of counting (benches/decoder-counters/run.sh, ~15 s);
#   2. end to end, stock QEMU 10.2.2 against the patched one: throughput,
#      syscalls, the counters' share of QEMU's time, query-netfilter-stats
#      latency with 1-2000 filters, RSS with 1000 redirectors
#      (scripts/bench-e2e.sh, ~3.5 minutes; builds both QEMUs if missing);
#   3. a real guest sending through filter-mirror and filter-redirector,
#      stock against patched, with no filter as the baseline, with
#      virtio-net's default transmit mitigation and again with tx=timer
#      (benches/guest.py, ~3 minutes each; the guest from
#      scripts/build-guest.sh).
# The reports are printed and kept in target/bench/ (decoder.md, e2e.md,
# e2e.json, guest.md, guest-tx-timer.md). Run it on a quiet machine: the ratios hold under load, the
# absolute rates do not.
#
#   scripts/bench.sh [--quick] [bench-e2e options]
#     --quick: a 1-minute smoke run of both; other options go to
#     scripts/bench-e2e.sh (e.g. --before OLD-QEMU for a before/after table)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out="$repo/target/bench"
mkdir -p "$out"

e2e_args=()
for arg in "$@"; do
    if [ "$arg" = --quick ]; then
        export QNS_BENCH_REPS=5
    fi
    e2e_args+=("$arg")
done

echo "== decoder and counters (benches/decoder-counters/run.sh)" >&2
"$repo/benches/decoder-counters/run.sh" | tee "$out/decoder.md"
echo "== end to end (scripts/bench-e2e.sh)" >&2
"$repo/scripts/bench-e2e.sh" "${e2e_args[@]}" --json "$out/e2e.json" | tee "$out/e2e.md"
echo "== a real guest (benches/guest.py)" >&2
guest_args=()
[ -z "${QNS_BENCH_REPS:-}" ] || guest_args=(--quick --rounds 2)
"$repo/scripts/build-guest.sh" >/dev/null
timeout 1200 python3 "$repo/benches/guest.py" "${guest_args[@]}" | tee "$out/guest.md"
timeout 1200 python3 "$repo/benches/guest.py" "${guest_args[@]}" --tx timer |
    tee "$out/guest-tx-timer.md"
echo "bench: reports in $out" >&2
