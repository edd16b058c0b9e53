#!/usr/bin/env bash
# Decoder benchmark (BENCHMARKS.md): this library's decoder, through its C
# ABI, against QEMU 10.2.2's own net_fill_rstate() and memcpy, in one run.
# QEMU's function is extracted at run time (scripts/extract-qemu-decoder.sh);
# nothing of QEMU's code is committed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

scripts/extract-qemu-decoder.sh "$work" >/dev/null

cargo rustc --quiet --release --lib --crate-type staticlib
cc -O2 -std=gnu11 -Wall -I include -I "$work" benches/decoder_bench.c "$work/qemu_rstate.c" \
    target/release/libqemu_netfilter_stats.a -lpthread -ldl -lm -lgcc_s \
    -o "$work/decoder_bench"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(rustc --version), $(cc --version | head -1); load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$work/decoder_bench"
