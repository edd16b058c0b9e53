/*
 * Decoder benchmark: QEMU 10.2.2's own net_fill_rstate() (extracted from the
 * QEMU source at build time by scripts/bench-decoder.sh; nothing of QEMU's
 * code is committed) against this library's decoder through its C ABI, as
 * QEMU's glue calls it, with memcpy as the physical limit.
 *
 * Every decoder is fed the same framed stream chunk by chunk, each chunk
 * first copied into a 64 KiB receive buffer as recv() would; the frame
 * callback of each touches the first and last byte of the frame. Each
 * measurement is the median of REPS runs, taken interleaved.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qemu_netfilter_stats.h"
#include "qemu_rstate.h" /* generated: SocketReadState, net_fill_rstate */

#define RECV_BUF (64 * 1024)
#define REPS 7
#define STREAM_BYTES (32u << 20)

static uint8_t recv_buf[RECV_BUF];
static volatile uint64_t sink;
static uint64_t touched;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void c_finalize(SocketReadState *rs)
{
    touched += rs->buf[0] + rs->buf[rs->packet_len - 1] + rs->packet_len;
}

static void rust_frame(void *opaque, const uint8_t *payload, size_t len,
                       uint32_t vnet_hdr_len)
{
    (void)opaque;
    (void)vnet_hdr_len;
    touched += payload[0] + payload[len - 1] + len;
}

/* The chunk sizes: 64 KiB, or a repeating uneven pattern. */
static size_t chunk_size(int uneven, size_t i)
{
    static const size_t pattern[] = { 1, 7, 100, 1000, 333, 4096, 13, 2900 };
    return uneven ? pattern[i % (sizeof(pattern) / sizeof(pattern[0]))]
                  : RECV_BUF;
}

enum { MEMCPY, C_DECODER, RUST_DECODER, N_KINDS };

static double run(int kind, const uint8_t *stream, size_t len, int uneven)
{
    static SocketReadState rs;
    QnsDecoder *dec = qns_decoder_new(false, 0);
    QnsCounters *counters = qns_counters_new("filter-redirector");
    size_t off = 0, i = 0;
    double t0;

    net_socket_rs_init(&rs, c_finalize, false);
    touched = 0;
    t0 = now();
    while (off < len) {
        size_t n = chunk_size(uneven, i++);
        if (n > len - off) {
            n = len - off;
        }
        memcpy(recv_buf, stream + off, n);
        switch (kind) {
        case MEMCPY:
            touched += recv_buf[0];
            break;
        case C_DECODER:
            net_fill_rstate(&rs, recv_buf, (int)n);
            break;
        case RUST_DECODER:
            qns_decoder_feed(dec, counters, recv_buf, n, rust_frame, NULL);
            break;
        }
        off += n;
    }
    t0 = now() - t0;
    sink += touched;
    qns_decoder_free(dec);
    qns_counters_free(counters);
    return t0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void)
{
    static const size_t sizes[] = { 64, 1514, 9000, 65535 };
    static const char *names[] = { "memcpy", "QEMU C", "Rust" };
    uint8_t *stream = malloc(STREAM_BYTES + 70000);

    printf("| frame | chunks | memcpy GB/s | QEMU C Mframes/s | Rust Mframes/s "
           "| Rust/C | Rust/memcpy | C/memcpy |\n");
    printf("|---|---|---|---|---|---|---|---|\n");
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t fs = sizes[s], len = 0, frames = 0;

        while (len + 4 + fs <= STREAM_BYTES) {
            stream[len] = fs >> 24;
            stream[len + 1] = fs >> 16;
            stream[len + 2] = fs >> 8;
            stream[len + 3] = fs;
            memset(stream + len + 4, (int)(frames & 0xff) | 1, fs);
            len += 4 + fs;
            frames++;
        }
        for (int uneven = 0; uneven < 2; uneven++) {
            double t[N_KINDS][REPS], med[N_KINDS];

            for (int r = 0; r < REPS; r++) {
                for (int k = 0; k < N_KINDS; k++) {
                    t[k][r] = run(k, stream, len, uneven);
                }
            }
            for (int k = 0; k < N_KINDS; k++) {
                qsort(t[k], REPS, sizeof(double), cmp_double);
                med[k] = t[k][REPS / 2];
            }
            printf("| %zu | %s | %.2f | %.2f | %.2f | %.2fx | %.0f%% | %.0f%% |\n",
                   fs, uneven ? "uneven" : "64 KiB",
                   len / med[MEMCPY] / 1e9,
                   frames / med[C_DECODER] / 1e6,
                   frames / med[RUST_DECODER] / 1e6,
                   med[C_DECODER] / med[RUST_DECODER],
                   100 * med[MEMCPY] / med[RUST_DECODER],
                   100 * med[MEMCPY] / med[C_DECODER]);
        }
    }
    (void)names;
    free(stream);
    return 0;
}
