/*
 * The C side of the decoder benchmark: drives QEMU 10.2.2's own
 * net_fill_rstate() as filter-redirector does, with a finalize callback that
 * touches the frame the way the Rust benchmark's frame callback does.
 *
 * "qemu_rstate.h" and the function bodies are not part of this repository:
 * benches/decoder-counters/run.sh extracts struct SocketReadState,
 * net_socket_rs_init() and net_fill_rstate() from the QEMU source at run
 * time (into a scratch directory) and compiles them as their own object, so
 * that, as in QEMU, the finalize callback is an indirect call from another
 * translation unit.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <stdlib.h>

#include "qemu_rstate.h"

/* One reader: the state QEMU keeps per redirector, plus what finalize saw. */
typedef struct BenchReader {
    SocketReadState rs; /* first member: finalize gets &rs */
    uint64_t frames;
    uint64_t touched;
} BenchReader;

/* Like filter-redirector's redirector_rs_finalize(): look at the frame. */
static void bench_finalize(SocketReadState *rs)
{
    BenchReader *r = (BenchReader *)rs;

    r->frames++;
    r->touched += rs->buf[0] + rs->buf[rs->packet_len - 1] + rs->packet_len;
}

BenchReader *qns_bench_reader_new(bool vnet_hdr)
{
    BenchReader *r = calloc(1, sizeof(*r));

    if (r) {
        net_socket_rs_init(&r->rs, bench_finalize, vnet_hdr);
    }
    return r;
}

void qns_bench_reader_free(BenchReader *r)
{
    free(r);
}

/* What redirector_chr_read() does with each chunk the chardev hands over. */
int qns_bench_reader_fill(BenchReader *r, const uint8_t *buf, int size)
{
    return net_fill_rstate(&r->rs, buf, size);
}

uint64_t qns_bench_reader_frames(const BenchReader *r)
{
    return r->frames;
}

uint64_t qns_bench_reader_touched(const BenchReader *r)
{
    return r->touched;
}
