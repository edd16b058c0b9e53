#!/usr/bin/env bash
# The README's first command: build what is missing (the patched QEMU), then
# run the demo (scripts/demo.py).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/build-qemu.sh"
exec python3 "$repo/scripts/demo.py"
