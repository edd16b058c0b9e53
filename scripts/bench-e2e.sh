#!/usr/bin/env bash
# End-to-end benchmark, stock QEMU 10.2.2 against the patched one, measured
# alternately in one run; prints markdown tables (progress goes to stderr).
#
#   scripts/bench-e2e.sh [--rounds N] [--budget SECONDS] [--json FILE] [--quick] [--no-syscalls]
#
# Uses build/qemu/qemu-system-x86_64 (patched) and
# build/qemu-stock/qemu-system-x86_64 (stock) as they are; builds either
# only if it is missing (scripts/build-qemu.sh [--stock]).  Needs a C
# compiler (the traffic generator is compiled at run time) and python3.
# The whole run is bounded (--budget, default 540 s, plus a hard timeout).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

for tool in python3 cc; do
    if ! command -v "$tool" >/dev/null; then
        echo "bench-e2e: $tool not found; run: apt-get install -y python3 gcc" >&2
        exit 1
    fi
done

if [ ! -x "$repo/build/qemu-stock/qemu-system-x86_64" ]; then
    echo "bench-e2e: building stock QEMU (scripts/build-qemu.sh --stock)" >&2
    "$repo/scripts/build-qemu.sh" --stock >&2
fi
if [ ! -x "$repo/build/qemu/qemu-system-x86_64" ]; then
    echo "bench-e2e: building patched QEMU (scripts/build-qemu.sh)" >&2
    "$repo/scripts/build-qemu.sh" >&2
fi

# QEMU runs with exit-with-parent, so a timeout leaves nothing behind.
exec timeout --signal=TERM --kill-after=10 900 python3 "$repo/benches/e2e.py" "$@"
