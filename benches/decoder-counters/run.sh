#!/usr/bin/env bash
# Decoder and counter benchmarks (BENCHMARKS.md, "Decoder and counters"), in
# one command. Prints the machine, then markdown tables.
#
# 1. Extracts QEMU 10.2.2's struct SocketReadState, net_socket_rs_init() and
#    net_fill_rstate() from the QEMU source (the verified tarball from
#    scripts/fetch-qemu.sh, or the tree in $QEMU_SRC) into a scratch
#    directory under target/, and compiles them with cc -O2 (plus QEMU's own
#    -fno-strict-aliasing -fwrapv; override with QNS_BENCH_CFLAGS) into a
#    static library. Nothing of QEMU's code is committed.
# 2. Builds benches/decoder-counters (release) against that library and runs
#    it. Knobs (environment): QNS_BENCH_REPS (samples per measurement,
#    default 61), QNS_BENCH_STREAM_MIB (size of the framed stream, default
#    8), QNS_BENCH_PASSES (passes over it per sample, default 2),
#    QNS_BENCH_COUNT_ITERS (calls per counter sample, default 2000000),
#    QNS_BENCH_ONLY ("decoder", "counters", or one decoder configuration
#    such as 1514:uneven or 9000:4, e.g. for perf). Many short samples, taken
#    interleaved, keep the medians stable on a machine shared with other jobs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
target="${CARGO_TARGET_DIR:-$repo/target}/bench-decoder-counters"
gen="$target/qemu-c"
rm -rf "$gen"
mkdir -p "$gen"

qemu_from=$("$repo/scripts/extract-qemu-decoder.sh" "$gen")

cflags=${QNS_BENCH_CFLAGS:--O2 -fno-strict-aliasing -fwrapv}
# shellcheck disable=SC2086 # word splitting of the flags is intended
cc $cflags -std=gnu11 -Wall -Werror -c "$gen/qemu_rstate.c" -o "$gen/qemu_rstate.o"
# shellcheck disable=SC2086
cc $cflags -std=gnu11 -Wall -Werror -I "$gen" -c "$here/c/qemu_rstate_driver.c" \
    -o "$gen/qemu_rstate_driver.o"
ar rcs "$gen/libqns_bench_qemu_c.a" "$gen/qemu_rstate.o" "$gen/qemu_rstate_driver.o"

QNS_BENCH_QEMU_C_LIB_DIR="$gen" CARGO_TARGET_DIR="$target" \
    cargo build --quiet --release --manifest-path "$here/Cargo.toml"

cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "Machine: $(nproc) CPUs, $cpu; $(rustc --version); $(cc --version | head -1)"
echo "C decoder: QEMU's net_fill_rstate from $(basename "$qemu_from"), cc $cflags"
echo "Load before: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min)"
echo
"$target/release/qns-bench-decoder-counters"
echo
echo "Load after: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min)"
