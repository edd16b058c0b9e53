#!/usr/bin/env bash
# End-to-end benchmarks, stock against patched QEMU (BENCHMARKS.md).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/build-qemu.sh"
"$repo/scripts/build-qemu.sh" --stock
exec python3 "$repo/benches/e2e.py"
