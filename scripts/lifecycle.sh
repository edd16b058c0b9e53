#!/usr/bin/env bash
# A longer run of tests/e2e/test_random_lifecycle.py on the sanitizer build
# (scripts/build-qemu.sh --full): SEEDS random seeds of STEPS steps each.
# A failure prints its seed and steps; replay it with
#   QNS_LIFECYCLE_SEEDS=SEED QNS_LIFECYCLE_STEPS=N scripts/lifecycle.sh
#
#   scripts/lifecycle.sh [SEEDS [STEPS]]     default: 200 seeds, 300 steps
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/build-qemu.sh" --full
first=$(( $(date +%s) % 100000 ))
export QNS_LIFECYCLE_SEEDS=${QNS_LIFECYCLE_SEEDS:-$(seq -s ' ' "$first" $((first + ${1:-200} - 1)))}
export QNS_LIFECYCLE_STEPS=${QNS_LIFECYCLE_STEPS:-${2:-300}}
export QNS_QEMU=$repo/build/qemu-full/qemu-system-x86_64
cd "$repo/tests/e2e"
exec python3 -m pytest -q -p no:cacheprovider --timeout=1800 test_random_lifecycle.py
