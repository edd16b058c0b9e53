#!/usr/bin/env bash
# Regenerate include/qemu_netfilter_stats.h from src/ffi/ (cbindgen, build.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
UPDATE_HEADER=1 cargo test --quiet --test header
