#!/usr/bin/env bash
# Decoder benchmark (BENCHMARKS.md): this library's decoder, through its C
# ABI, against QEMU 10.2.2's own net_fill_rstate() and memcpy, in one run.
# QEMU's function is extracted from the verified QEMU tarball into a scratch
# directory at run time; nothing of QEMU's code is committed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
tarball=$(scripts/fetch-qemu.sh)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

tar -xOf "$tarball" qemu-10.2.2/include/net/net.h >"$work/net.h"
tar -xOf "$tarball" qemu-10.2.2/net/net.c >"$work/net.c"
{
    echo '#include <arpa/inet.h>'
    echo '#include <assert.h>'
    echo '#include <stdbool.h>'
    echo '#include <stdint.h>'
    echo '#include <stdio.h>'
    echo '#include <string.h>'
    grep -m1 '^#define NET_BUFSIZE' "$work/net.h"
    echo 'typedef struct SocketReadState SocketReadState;'
    echo 'typedef void (SocketReadStateFinalize)(SocketReadState *rs);'
    awk '/^struct SocketReadState \{/,/^\};/' "$work/net.h"
    echo 'static void net_socket_rs_init(SocketReadState *rs, SocketReadStateFinalize *finalize, bool vnet_hdr);'
    echo 'static int net_fill_rstate(SocketReadState *rs, const uint8_t *buf, int size);'
    awk '/^void net_socket_rs_init\(/,/^\}/' "$work/net.c" | sed 's/^void /static void /'
    awk '/^int net_fill_rstate\(/,/^\}/' "$work/net.c" | sed 's/^int /static int /'
} >"$work/qemu_net_fill_rstate.h"
grep -q net_fill_rstate "$work/qemu_net_fill_rstate.h"

cargo rustc --quiet --release --lib --crate-type staticlib
cc -O2 -std=gnu11 -Wall -I include -I "$work" benches/decoder_bench.c \
    target/release/libqemu_netfilter_stats.a -lpthread -ldl -lm -lgcc_s \
    -o "$work/decoder_bench"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(rustc --version), $(cc --version | head -1); load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$work/decoder_bench"
