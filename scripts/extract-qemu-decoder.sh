#!/usr/bin/env bash
# Extract QEMU 10.2.2's own stream decoder (struct SocketReadState,
# net_socket_rs_init(), net_fill_rstate()) verbatim into OUTDIR as
# qemu_rstate.h and qemu_rstate.c, the C baseline of the decoder benchmarks.
# The source is the tree in $QEMU_SRC, or the verified tarball
# (scripts/fetch-qemu.sh). Nothing of QEMU's code is committed. Prints where
# the code came from.
#
#   scripts/extract-qemu-decoder.sh OUTDIR
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
gen=${1:?usage: $0 OUTDIR}
mkdir -p "$gen"

if [ -n "${QEMU_SRC:-}" ]; then
    cp "$QEMU_SRC/include/net/net.h" "$gen/net.h"
    cp "$QEMU_SRC/net/net.c" "$gen/net.c"
    qemu_from=$(cd "$QEMU_SRC" && pwd)
else
    tarball=$("$repo/scripts/fetch-qemu.sh")
    for f in include/net/net.h net/net.c; do
        tar -xOf "$tarball" --wildcards --no-wildcards-match-slash "qemu-*/$f" \
            >"$gen/$(basename "$f")"
    done
    qemu_from="$tarball"
fi

# Pieces of QEMU's code, verbatim: the lines from one matching START to the
# next matching END (or just the START line when END is empty). START must
# match exactly once, so that a changed source fails loudly here.
piece() { # file start end what
    local out
    if ! out=$(S="$2" E="$3" awk '
            !inside && $0 ~ ENVIRON["S"] { n++; inside = 1 }
            inside { print }
            inside && (ENVIRON["E"] == "" || $0 ~ ENVIRON["E"]) { inside = 0 }
            END { exit n == 1 ? 0 : 3 }' "$1") || [ -z "$out" ]; then
        echo "extract-qemu-decoder: could not extract $4 (exactly once) from $1" >&2
        exit 1
    fi
    printf '%s\n' "$out"
}
{
    echo '/* Extracted from QEMU ('"$(basename "$qemu_from")"'); not committed. */'
    echo '#include <arpa/inet.h>'
    echo '#include <assert.h>'
    echo '#include <stdbool.h>'
    echo '#include <stdint.h>'
    echo '#include <stdio.h>'
    echo '#include <string.h>'
    piece "$gen/net.h" '^#define NET_BUFSIZE ' '' NET_BUFSIZE
    echo 'typedef struct SocketReadState SocketReadState;'
    piece "$gen/net.h" '^typedef void \(SocketReadStateFinalize\)' '' SocketReadStateFinalize
    piece "$gen/net.h" '^struct SocketReadState \{' '^\};' 'struct SocketReadState'
    echo 'void net_socket_rs_init(SocketReadState *rs, SocketReadStateFinalize *finalize, bool vnet_hdr);'
    echo 'int net_fill_rstate(SocketReadState *rs, const uint8_t *buf, int size);'
} >"$gen/qemu_rstate.h"
{
    echo '#include "qemu_rstate.h"'
    piece "$gen/net.c" '^void net_socket_rs_init\(' '^\}' net_socket_rs_init
    piece "$gen/net.c" '^int net_fill_rstate\(' '^\}' net_fill_rstate
} >"$gen/qemu_rstate.c"
echo "$qemu_from"
