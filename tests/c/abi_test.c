/*
 * Drives the whole C ABI of the qemu-netfilter-stats library the way QEMU's
 * C code does, knowing nothing but include/qemu_netfilter_stats.h.
 *
 * Built and run (under valgrind) by scripts/test-c-abi.sh. Every CHECK that
 * fails prints file:line and the expression and exits non-zero; the last line
 * on stdout is always "N passed, M failed".
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu_netfilter_stats.h"

/* ------------------------------------------------------------------------ */
/* Checks */

static unsigned long n_passed;

static void check_failed(const char *file, int line, const char *expr,
                         const char *detail)
{
    fprintf(stderr, "%s:%d: CHECK failed: %s%s%s\n", file, line, expr,
            detail ? ": " : "", detail ? detail : "");
    printf("%lu passed, 1 failed\n", n_passed);
    fflush(stdout);
    exit(1);
}

#define CHECK(expr)                                                     \
    do {                                                                \
        if (expr) {                                                     \
            n_passed++;                                                 \
        } else {                                                        \
            check_failed(__FILE__, __LINE__, #expr, NULL);              \
        }                                                               \
    } while (0)

/* Integers of any type, compared as unsigned long long. */
#define CHECK_EQ(actual, expected)                                      \
    do {                                                                \
        unsigned long long a_ = (unsigned long long)(actual);           \
        unsigned long long e_ = (unsigned long long)(expected);         \
        if (a_ == e_) {                                                 \
            n_passed++;                                                 \
        } else {                                                        \
            char d_[128];                                               \
            snprintf(d_, sizeof(d_), "got %llu, expected %llu", a_, e_); \
            check_failed(__FILE__, __LINE__, #actual " == " #expected, d_); \
        }                                                               \
    } while (0)

/* A QnsResult, reported by its message when it is not the expected one. */
#define CHECK_RESULT(call, expected)                                    \
    do {                                                                \
        QnsResult r_ = (call);                                          \
        if (r_ == (expected)) {                                         \
            n_passed++;                                                 \
        } else {                                                        \
            char d_[256];                                               \
            snprintf(d_, sizeof(d_), "got %u (%s), expected %s",        \
                     (unsigned)r_, qns_result_message(r_), #expected);  \
            check_failed(__FILE__, __LINE__, #call, d_);                \
        }                                                               \
    } while (0)

#define CHECK_STR(actual, expected)                                     \
    do {                                                                \
        const char *a_ = (actual);                                      \
        if (a_ != NULL && strcmp(a_, (expected)) == 0) {                \
            n_passed++;                                                 \
        } else {                                                        \
            char d_[256];                                               \
            snprintf(d_, sizeof(d_), "got \"%s\", expected \"%s\"",     \
                     a_ ? a_ : "(NULL)", (expected));                   \
            check_failed(__FILE__, __LINE__, #actual, d_);              \
        }                                                               \
    } while (0)

/* The filter-specific counter `id` of `counters` is exactly (p, b). */
#define CHECK_COUNT(counters, id, p, b)                                 \
    do {                                                                \
        QnsCount c_ = { UINT64_MAX, UINT64_MAX };                       \
        CHECK_RESULT(qns_counters_get((counters), (id), &c_), QNS_RESULT_OK); \
        CHECK_EQ(c_.packets, (p));                                      \
        CHECK_EQ(c_.bytes, (b));                                        \
    } while (0)

/* The packets and bytes counted in `dir` are exactly (p, b). */
#define CHECK_DIRECTION(counters, dir, p, b)                            \
    do {                                                                \
        QnsCount c_ = { UINT64_MAX, UINT64_MAX };                       \
        CHECK_RESULT(qns_counters_get_direction((counters), (dir), &c_), \
                     QNS_RESULT_OK);                                    \
        CHECK_EQ(c_.packets, (p));                                      \
        CHECK_EQ(c_.bytes, (b));                                        \
    } while (0)

/* The decoder has a non-empty error message. */
#define CHECK_ERROR_MESSAGE(decoder)                                    \
    do {                                                                \
        const char *m_ = qns_decoder_error_message(decoder);            \
        CHECK(m_ != NULL);                                              \
        CHECK(m_[0] != '\0');                                           \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Building streams in the redirector wire format */

typedef struct Buf {
    uint8_t *data;
    size_t len, cap;
} Buf;

static void buf_put(Buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n) {
            cap *= 2;
        }
        b->data = realloc(b->data, cap);
        if (!b->data) {
            abort();
        }
        b->cap = cap;
    }
    if (n) {
        memcpy(b->data + b->len, p, n);
    }
    b->len += n;
}

static void buf_be32(Buf *b, uint32_t v)
{
    uint8_t x[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16),
                     (uint8_t)(v >> 8), (uint8_t)v };
    buf_put(b, x, sizeof(x));
}

/* One frame: length, [vnet header length], payload. */
static void buf_frame(Buf *b, bool vnet, const void *payload, uint32_t len,
                      uint32_t vnet_hdr_len)
{
    buf_be32(b, len);
    if (vnet) {
        buf_be32(b, vnet_hdr_len);
    }
    buf_put(b, payload, len);
}

static void buf_free(Buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* A payload of `len` bytes that differs with `seed`. */
static uint8_t *make_payload(size_t len, unsigned seed)
{
    uint8_t *p = malloc(len ? len : 1);
    if (!p) {
        abort();
    }
    for (size_t i = 0; i < len; i++) {
        p[i] = (uint8_t)(i * 7 + seed * 13 + (i >> 8));
    }
    return p;
}

/* ------------------------------------------------------------------------ */
/* A frame callback that checks every frame against the expected ones */

typedef struct Expected {
    const uint8_t *payload;
    size_t len;
    uint32_t vnet_hdr_len;
} Expected;

typedef struct Recorder {
    const Expected *frames;
    size_t n_expected;
    size_t n_seen;
} Recorder;

static void on_frame(void *opaque, const uint8_t *payload, size_t len,
                     uint32_t vnet_hdr_len)
{
    Recorder *r = opaque;
    const Expected *e;

    CHECK(payload != NULL);
    CHECK(len > 0);
    CHECK(r->n_seen < r->n_expected);
    e = &r->frames[r->n_seen++];
    CHECK_EQ(len, e->len);
    CHECK(memcmp(payload, e->payload, len) == 0);
    CHECK_EQ(vnet_hdr_len, e->vnet_hdr_len);
}

static void on_frame_ignore(void *opaque, const uint8_t *payload, size_t len,
                            uint32_t vnet_hdr_len)
{
    (void)opaque;
    (void)payload;
    (void)len;
    (void)vnet_hdr_len;
}

/*
 * Feed `n` bytes, copied into an allocation of exactly that size so that
 * valgrind sees any read past the chunk.
 */
static QnsResult feed_copy(QnsDecoder *d, QnsCounters *c, const uint8_t *p,
                           size_t n, Recorder *r)
{
    uint8_t *copy = malloc(n ? n : 1);
    QnsResult result;

    if (!copy) {
        abort();
    }
    if (n) {
        memcpy(copy, p, n);
    }
    result = qns_decoder_feed(d, c, copy, n, on_frame, r);
    free(copy);
    return result;
}

/* ------------------------------------------------------------------------ */
/* qns_result_message */

static void test_result_messages(void)
{
    const char *msgs[QNS_RESULT_BACKLOG_FULL + 1];
    const char *unknown = qns_result_message(QNS_RESULT_BACKLOG_FULL + 1);

    for (uint32_t code = QNS_RESULT_OK; code <= QNS_RESULT_BACKLOG_FULL; code++) {
        msgs[code] = qns_result_message(code);
        CHECK(msgs[code] != NULL);
        CHECK(msgs[code][0] != '\0');
        for (uint32_t other = 0; other < code; other++) {
            CHECK(strcmp(msgs[code], msgs[other]) != 0);
        }
    }
    CHECK(unknown != NULL);
    CHECK(unknown[0] != '\0');
    for (uint32_t code = QNS_RESULT_OK; code <= QNS_RESULT_BACKLOG_FULL; code++) {
        CHECK(strcmp(unknown, msgs[code]) != 0);
    }
    CHECK_STR(qns_result_message(99), unknown);
    CHECK_STR(qns_result_message(UINT32_MAX), unknown);
}

/* ------------------------------------------------------------------------ */
/* Counters */

static void test_counters(void)
{
    const char *types[] = { "filter-redirector", "filter-mirror",
                            "filter-buffer" };

    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        QnsCounters *c = qns_counters_new(types[t]);
        QnsCount out = { 0xdead, 0xbeef };

        CHECK(c != NULL);
        /* All zero to start with. */
        CHECK_DIRECTION(c, QNS_DIRECTION_TX, 0, 0);
        CHECK_DIRECTION(c, QNS_DIRECTION_RX, 0, 0);
        for (uint32_t id = QNS_COUNTER_ID_INDEV;
             id <= QNS_COUNTER_ID_OUTDEV_ERRORS; id++) {
            CHECK_COUNT(c, id, 0, 0);
        }

        /* Both directions, counted apart. */
        CHECK_RESULT(qns_counters_count_packet(c, QNS_DIRECTION_TX, 60),
                     QNS_RESULT_OK);
        CHECK_RESULT(qns_counters_count_packet(c, QNS_DIRECTION_TX, 1514),
                     QNS_RESULT_OK);
        CHECK_RESULT(qns_counters_count_packet(c, QNS_DIRECTION_RX, 42),
                     QNS_RESULT_OK);
        CHECK_RESULT(qns_counters_count_packet(c, QNS_DIRECTION_RX, 0),
                     QNS_RESULT_OK);
        CHECK_DIRECTION(c, QNS_DIRECTION_TX, 2, 1574);
        CHECK_DIRECTION(c, QNS_DIRECTION_RX, 2, 42);

        /* Every filter-specific counter, whatever the type reports. */
        for (uint32_t id = QNS_COUNTER_ID_INDEV;
             id <= QNS_COUNTER_ID_OUTDEV_ERRORS; id++) {
            CHECK_RESULT(qns_counters_add(c, id, id + 1, 100 * (id + 1)),
                         QNS_RESULT_OK);
            CHECK_RESULT(qns_counters_add(c, id, 1, 1), QNS_RESULT_OK);
        }
        for (uint32_t id = QNS_COUNTER_ID_INDEV;
             id <= QNS_COUNTER_ID_OUTDEV_ERRORS; id++) {
            CHECK_COUNT(c, id, id + 2, 100 * (id + 1) + 1);
        }

        /* Out-of-range enum values; out-parameters untouched. */
        CHECK_RESULT(qns_counters_count_packet(c, 2, 1),
                     QNS_RESULT_INVALID_ARGUMENT);
        CHECK_RESULT(qns_counters_count_packet(c, UINT32_MAX, 1),
                     QNS_RESULT_INVALID_ARGUMENT);
        CHECK_RESULT(qns_counters_get_direction(c, 2, &out),
                     QNS_RESULT_INVALID_ARGUMENT);
        CHECK_RESULT(qns_counters_get_direction(c, UINT32_MAX, &out),
                     QNS_RESULT_INVALID_ARGUMENT);
        CHECK_RESULT(qns_counters_add(c, 4, 1, 1),
                     QNS_RESULT_INVALID_ARGUMENT);
        CHECK_RESULT(qns_counters_add(c, UINT32_MAX, 1, 1),
                     QNS_RESULT_INVALID_ARGUMENT);
        CHECK_RESULT(qns_counters_get(c, 4, &out),
                     QNS_RESULT_INVALID_ARGUMENT);
        CHECK_RESULT(qns_counters_get(c, UINT32_MAX, &out),
                     QNS_RESULT_INVALID_ARGUMENT);
        CHECK_EQ(out.packets, 0xdead);
        CHECK_EQ(out.bytes, 0xbeef);
        /* ... and nothing was counted by them. */
        CHECK_DIRECTION(c, QNS_DIRECTION_TX, 2, 1574);
        CHECK_DIRECTION(c, QNS_DIRECTION_RX, 2, 42);
        for (uint32_t id = QNS_COUNTER_ID_INDEV;
             id <= QNS_COUNTER_ID_OUTDEV_ERRORS; id++) {
            CHECK_COUNT(c, id, id + 2, 100 * (id + 1) + 1);
        }

        /* NULL pointers. */
        CHECK_RESULT(qns_counters_count_packet(NULL, QNS_DIRECTION_TX, 1),
                     QNS_RESULT_NULL_POINTER);
        CHECK_RESULT(qns_counters_add(NULL, QNS_COUNTER_ID_INDEV, 1, 1),
                     QNS_RESULT_NULL_POINTER);
        CHECK_RESULT(qns_counters_get_direction(NULL, QNS_DIRECTION_TX, &out),
                     QNS_RESULT_NULL_POINTER);
        CHECK_RESULT(qns_counters_get_direction(c, QNS_DIRECTION_TX, NULL),
                     QNS_RESULT_NULL_POINTER);
        CHECK_RESULT(qns_counters_get(NULL, QNS_COUNTER_ID_INDEV, &out),
                     QNS_RESULT_NULL_POINTER);
        CHECK_RESULT(qns_counters_get(c, QNS_COUNTER_ID_INDEV, NULL),
                     QNS_RESULT_NULL_POINTER);
        CHECK_EQ(out.packets, 0xdead);
        CHECK_EQ(out.bytes, 0xbeef);

        qns_counters_free(c);
    }

    /* Any type name, even one the library does not know. */
    {
        QnsCounters *c = qns_counters_new("");
        CHECK(c != NULL);
        qns_counters_free(c);
    }
    CHECK(qns_counters_new(NULL) == NULL);
    qns_counters_free(NULL);
}

/* Several threads count into the same counters at once: nothing is lost. */
#define N_THREADS 4
#define N_PER_THREAD 20000

static void *count_thread(void *opaque)
{
    QnsCounters *c = opaque;
    uintptr_t failures = 0;

    for (int i = 0; i < N_PER_THREAD; i++) {
        failures += qns_counters_count_packet(c, QNS_DIRECTION_RX, 3) !=
                    QNS_RESULT_OK;
        failures += qns_counters_add(c, QNS_COUNTER_ID_INDEV, 1, 5) !=
                    QNS_RESULT_OK;
    }
    return (void *)failures;
}

static void test_counters_threads(void)
{
    QnsCounters *c = qns_counters_new("filter-redirector");
    pthread_t threads[N_THREADS];

    CHECK(c != NULL);
    for (int i = 0; i < N_THREADS; i++) {
        CHECK(pthread_create(&threads[i], NULL, count_thread, c) == 0);
    }
    for (int i = 0; i < N_THREADS; i++) {
        void *failures = NULL;
        CHECK(pthread_join(threads[i], &failures) == 0);
        CHECK(failures == NULL);
    }
    CHECK_DIRECTION(c, QNS_DIRECTION_RX, N_THREADS * N_PER_THREAD,
                    3 * N_THREADS * N_PER_THREAD);
    CHECK_COUNT(c, QNS_COUNTER_ID_INDEV, N_THREADS * N_PER_THREAD,
                5 * N_THREADS * N_PER_THREAD);
    qns_counters_free(c);
}

/* ------------------------------------------------------------------------ */
/* Decoder: good streams in any chunking */

/*
 * Feed `wire` to a new decoder in chunks of `chunk` bytes (the last one may be
 * shorter) and check the frames and the indev counters exactly.
 */
static void decode_chunked(bool vnet, const Buf *wire, size_t chunk,
                           const Expected *expected, size_t n_expected)
{
    QnsCounters *c = qns_counters_new("filter-redirector");
    QnsDecoder *d = qns_decoder_new(vnet, 0);
    Recorder r = { expected, n_expected, 0 };
    uint64_t bytes = 0;

    CHECK(c != NULL);
    CHECK(d != NULL);
    CHECK_STR(qns_decoder_error_message(d), "");
    for (size_t i = 0; i < n_expected; i++) {
        bytes += expected[i].len;
    }
    for (size_t off = 0; off < wire->len; off += chunk) {
        size_t n = wire->len - off < chunk ? wire->len - off : chunk;
        CHECK_RESULT(feed_copy(d, c, wire->data + off, n, &r), QNS_RESULT_OK);
    }
    CHECK_EQ(r.n_seen, n_expected);
    CHECK_COUNT(c, QNS_COUNTER_ID_INDEV, n_expected, bytes);
    CHECK_COUNT(c, QNS_COUNTER_ID_INDEV_ERRORS, 0, 0);
    CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV, 0, 0);
    CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV_ERRORS, 0, 0);
    /* The stream ended on a frame boundary: nothing cut off. */
    CHECK_RESULT(qns_decoder_reset(d, c), QNS_RESULT_OK);
    CHECK_COUNT(c, QNS_COUNTER_ID_INDEV_ERRORS, 0, 0);
    CHECK_STR(qns_decoder_error_message(d), "");
    qns_decoder_free(d);
    qns_counters_free(c);
}

static void test_decoder_chunkings(void)
{
    static const size_t lens[] = { 1, 60, 1514, 9000, 2, 4096 };
    enum { N = sizeof(lens) / sizeof(lens[0]) };
    static const size_t chunks[] = { SIZE_MAX, 1, 3, 7, 1000 };

    for (int vnet = 0; vnet <= 1; vnet++) {
        uint8_t *payloads[N];
        Expected expected[N];
        Buf wire = { 0 };

        for (size_t i = 0; i < N; i++) {
            /* Header lengths from 0 up to the whole frame. */
            size_t v = i == N - 1 ? lens[i] : i * 5;
            uint32_t vnet_len = (uint32_t)(v < lens[i] ? v : lens[i]);
            payloads[i] = make_payload(lens[i], (unsigned)i);
            expected[i].payload = payloads[i];
            expected[i].len = lens[i];
            expected[i].vnet_hdr_len = vnet ? vnet_len : 0;
            buf_frame(&wire, vnet, payloads[i], (uint32_t)lens[i], vnet_len);
        }
        for (size_t k = 0; k < sizeof(chunks) / sizeof(chunks[0]); k++) {
            decode_chunked(vnet, &wire, chunks[k], expected, N);
        }
        buf_free(&wire);
        for (size_t i = 0; i < N; i++) {
            free(payloads[i]);
        }
    }
}

/* A 65535-byte frame in 100 chunks: delivered once, after the last. */
static void test_decoder_large_frame(void)
{
    for (int vnet = 0; vnet <= 1; vnet++) {
        const size_t len = 65535;
        uint8_t *payload = make_payload(len, 42);
        Expected expected = { payload, len, vnet ? 14 : 0 };
        Recorder r = { &expected, 1, 0 };
        QnsCounters *c = qns_counters_new("filter-redirector");
        QnsDecoder *d = qns_decoder_new(vnet, 0);
        Buf wire = { 0 };
        size_t chunk, n_chunks = 0;

        buf_frame(&wire, vnet, payload, (uint32_t)len, 14);
        chunk = (wire.len + 99) / 100;
        for (size_t off = 0; off < wire.len; off += chunk) {
            size_t n = wire.len - off < chunk ? wire.len - off : chunk;
            CHECK_EQ(r.n_seen, 0);
            CHECK_RESULT(feed_copy(d, c, wire.data + off, n, &r),
                         QNS_RESULT_OK);
            n_chunks++;
        }
        CHECK_EQ(n_chunks, 100);
        CHECK_EQ(r.n_seen, 1);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV, 1, len);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV_ERRORS, 0, 0);
        CHECK_RESULT(qns_decoder_reset(d, c), QNS_RESULT_OK);

        qns_decoder_free(d);
        qns_counters_free(c);
        buf_free(&wire);
        free(payload);
    }
}

/* The maximum frame length: 0 means QNS_DEFAULT_MAX_FRAME_LEN. */
static void test_decoder_max_frame_len(void)
{
    static const uint32_t maxes[] = { 0, 100 };

    for (size_t k = 0; k < 2; k++) {
        uint32_t max = maxes[k] ? maxes[k] : QNS_DEFAULT_MAX_FRAME_LEN;
        uint8_t *payload = make_payload(max + 1, 3);
        Expected expected = { payload, max, 0 };
        Recorder r = { &expected, 1, 0 };
        QnsCounters *c = qns_counters_new("filter-redirector");
        QnsDecoder *d = qns_decoder_new(false, maxes[k]);
        Buf wire = { 0 };

        buf_frame(&wire, false, payload, max, 0);
        CHECK_RESULT(feed_copy(d, c, wire.data, wire.len, &r), QNS_RESULT_OK);
        CHECK_EQ(r.n_seen, 1);
        buf_free(&wire);

        buf_frame(&wire, false, payload, max + 1, 0);
        CHECK_RESULT(feed_copy(d, c, wire.data, wire.len, &r),
                     QNS_RESULT_FRAME_TOO_LARGE);
        CHECK_EQ(r.n_seen, 1);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV, 1, max);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV_ERRORS, 1, wire.len);
        CHECK_ERROR_MESSAGE(d);

        qns_decoder_free(d);
        qns_counters_free(c);
        buf_free(&wire);
        free(payload);
    }
}

/* ------------------------------------------------------------------------ */
/* Decoder: bad input */

/* A length over the maximum: FRAME_TOO_LARGE, then DESYNCHRONIZED to reset. */
static void test_decoder_frame_too_large(void)
{
    for (int vnet = 0; vnet <= 1; vnet++) {
        const uint64_t hdr = vnet ? 8 : 4;
        static const uint8_t garbage[10] = { 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
                                             0xaa, 0xaa, 0xaa, 0xaa, 0xaa };
        Expected expected[] = {
            { (const uint8_t *)"ok", 2, 0 },
            { (const uint8_t *)"again", 5, 0 },
        };
        Recorder r = { expected, 2, 0 };
        QnsCounters *c = qns_counters_new("filter-redirector");
        QnsDecoder *d = qns_decoder_new(vnet, 100);
        Buf wire = { 0 }, lost = { 0 }, again = { 0 };

        buf_frame(&wire, vnet, "ok", 2, 0);
        buf_be32(&wire, 101);
        if (vnet) {
            buf_be32(&wire, 0);
        }
        buf_put(&wire, garbage, sizeof(garbage));
        buf_frame(&lost, vnet, "lost", 4, 0);
        buf_frame(&again, vnet, "again", 5, 0);

        CHECK_RESULT(feed_copy(d, c, wire.data, wire.len, &r),
                     QNS_RESULT_FRAME_TOO_LARGE);
        CHECK_EQ(r.n_seen, 1);
        CHECK_ERROR_MESSAGE(d);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV, 1, 2);
        /* One rejected frame: its header and everything after it. */
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV_ERRORS, 1, hdr + 10);

        /* Out of step: later input is thrown away, counted in bytes only. */
        CHECK_RESULT(feed_copy(d, c, lost.data, lost.len, &r),
                     QNS_RESULT_DESYNCHRONIZED);
        CHECK_RESULT(feed_copy(d, c, lost.data, 1, &r),
                     QNS_RESULT_DESYNCHRONIZED);
        CHECK_EQ(r.n_seen, 1);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV, 1, 2);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV_ERRORS, 1, hdr + 10 + lost.len + 1);
        CHECK_ERROR_MESSAGE(d);

        /* A new connection: in step again, nothing cut off to report. */
        CHECK_RESULT(qns_decoder_reset(d, c), QNS_RESULT_OK);
        CHECK_RESULT(feed_copy(d, c, again.data, again.len, &r), QNS_RESULT_OK);
        CHECK_EQ(r.n_seen, 2);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV, 2, 7);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV_ERRORS, 1, hdr + 10 + lost.len + 1);

        qns_decoder_free(d);
        qns_counters_free(c);
        buf_free(&wire);
        buf_free(&lost);
        buf_free(&again);
    }

    /* The same, with the oversized header split over several feeds. */
    {
        Recorder r = { NULL, 0, 0 };
        QnsCounters *c = qns_counters_new("filter-redirector");
        QnsDecoder *d = qns_decoder_new(true, 0);
        Buf wire = { 0 };

        buf_be32(&wire, QNS_DEFAULT_MAX_FRAME_LEN + 1);
        buf_be32(&wire, 0);
        buf_put(&wire, "xyz", 3);
        CHECK_RESULT(feed_copy(d, c, wire.data, 5, &r), QNS_RESULT_OK);
        CHECK_RESULT(feed_copy(d, c, wire.data + 5, 4, &r),
                     QNS_RESULT_FRAME_TOO_LARGE);
        CHECK_RESULT(feed_copy(d, c, wire.data + 9, 2, &r),
                     QNS_RESULT_DESYNCHRONIZED);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV_ERRORS, 1, 11);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV, 0, 0);
        CHECK_ERROR_MESSAGE(d);
        CHECK_RESULT(qns_decoder_reset(d, c), QNS_RESULT_OK);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV_ERRORS, 1, 11);
        qns_decoder_free(d);
        qns_counters_free(c);
        buf_free(&wire);
    }
}

/* A vnet header longer than its frame: that frame only is dropped. */
static void test_decoder_vnet_header_too_large(void)
{
    Expected expected[] = {
        { (const uint8_t *)"next", 4, 0 },
        { (const uint8_t *)"later", 5, 5 },
    };
    Buf wire = { 0 }, later = { 0 };

    buf_frame(&wire, true, "abc", 3, 4);
    buf_frame(&wire, true, "next", 4, 0);
    buf_frame(&later, true, "later", 5, 5);

    /* split == 0: in one feed; else in two, split inside the bad frame. */
    for (size_t split = 0; split <= 9; split += 9) {
        Recorder r = { expected, 2, 0 };
        QnsCounters *c = qns_counters_new("filter-redirector");
        QnsDecoder *d = qns_decoder_new(true, 0);

        if (split == 0) {
            CHECK_RESULT(feed_copy(d, c, wire.data, wire.len, &r),
                         QNS_RESULT_VNET_HEADER_TOO_LARGE);
        } else {
            CHECK_RESULT(feed_copy(d, c, wire.data, split, &r),
                         QNS_RESULT_VNET_HEADER_TOO_LARGE);
            CHECK_EQ(r.n_seen, 0);
            CHECK_COUNT(c, QNS_COUNTER_ID_INDEV_ERRORS, 1, split);
            CHECK_ERROR_MESSAGE(d);
            CHECK_RESULT(feed_copy(d, c, wire.data + split, wire.len - split,
                                   &r),
                         QNS_RESULT_OK);
        }
        CHECK_EQ(r.n_seen, 1);
        CHECK_ERROR_MESSAGE(d);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV, 1, 4);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV_ERRORS, 1, 8 + 3);

        /* Still in step: later frames come through. */
        CHECK_RESULT(feed_copy(d, c, later.data, later.len, &r),
                     QNS_RESULT_OK);
        CHECK_EQ(r.n_seen, 2);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV, 2, 9);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV_ERRORS, 1, 8 + 3);
        CHECK_RESULT(qns_decoder_reset(d, c), QNS_RESULT_OK);

        qns_decoder_free(d);
        qns_counters_free(c);
    }
    buf_free(&wire);
    buf_free(&later);
}

/* A zero-length frame is dropped; the frames around it are not. */
static void test_decoder_empty_frame(void)
{
    for (int vnet = 0; vnet <= 1; vnet++) {
        const uint64_t hdr = vnet ? 8 : 4;
        Expected expected[] = {
            { (const uint8_t *)"a", 1, 0 },
            { (const uint8_t *)"x", 1, 0 },
        };
        Recorder r = { expected, 2, 0 };
        QnsCounters *c = qns_counters_new("filter-redirector");
        QnsDecoder *d = qns_decoder_new(vnet, 0);
        Buf wire = { 0 };

        buf_frame(&wire, vnet, "a", 1, 0);
        buf_frame(&wire, vnet, "", 0, 0);
        buf_frame(&wire, vnet, "x", 1, 0);
        CHECK_RESULT(feed_copy(d, c, wire.data, wire.len, &r),
                     QNS_RESULT_EMPTY_FRAME);
        CHECK_EQ(r.n_seen, 2);
        CHECK_ERROR_MESSAGE(d);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV, 2, 2);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV_ERRORS, 1, hdr);
        CHECK_RESULT(qns_decoder_reset(d, c), QNS_RESULT_OK);

        qns_decoder_free(d);
        qns_counters_free(c);
        buf_free(&wire);
    }
}

/* Several problems in one chunk: the first is returned, all are counted. */
static void test_decoder_first_error_wins(void)
{
    Expected expected[] = { { (const uint8_t *)"ok", 2, 1 } };
    Recorder r = { expected, 1, 0 };
    QnsCounters *c = qns_counters_new("filter-redirector");
    QnsDecoder *d = qns_decoder_new(true, 0);
    Buf wire = { 0 };

    buf_frame(&wire, true, "", 0, 0);
    buf_frame(&wire, true, "abc", 3, 9);
    buf_frame(&wire, true, "ok", 2, 1);
    CHECK_RESULT(feed_copy(d, c, wire.data, wire.len, &r),
                 QNS_RESULT_EMPTY_FRAME);
    CHECK_EQ(r.n_seen, 1);
    CHECK_COUNT(c, QNS_COUNTER_ID_INDEV, 1, 2);
    CHECK_COUNT(c, QNS_COUNTER_ID_INDEV_ERRORS, 2, 8 + 8 + 3);
    CHECK_ERROR_MESSAGE(d);

    qns_decoder_free(d);
    qns_counters_free(c);
    buf_free(&wire);
}

/* A reset inside a frame reports it cut off. */
static void test_decoder_truncated(void)
{
    for (int vnet = 0; vnet <= 1; vnet++) {
        const size_t hdr = vnet ? 8 : 4;
        Expected expected[] = { { (const uint8_t *)"abcdef", 6, vnet ? 2 : 0 } };
        Recorder r = { expected, 1, 0 };
        QnsCounters *c = qns_counters_new("filter-redirector");
        QnsDecoder *d = qns_decoder_new(vnet, 0);
        Buf wire = { 0 };
        const char *first;
        char *first_copy;

        buf_frame(&wire, vnet, "abcdef", 6, 2);

        /* Inside the header. */
        CHECK_RESULT(feed_copy(d, c, wire.data, 2, &r), QNS_RESULT_OK);
        CHECK_RESULT(qns_decoder_reset(d, c), QNS_RESULT_TRUNCATED_FRAME);
        CHECK_ERROR_MESSAGE(d);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV_ERRORS, 1, 2);
        first = qns_decoder_error_message(d);
        first_copy = malloc(strlen(first) + 1);
        CHECK(first_copy != NULL);
        strcpy(first_copy, first);

        /* Inside the payload. */
        CHECK_RESULT(feed_copy(d, c, wire.data, hdr + 3, &r), QNS_RESULT_OK);
        CHECK_RESULT(qns_decoder_reset(d, c), QNS_RESULT_TRUNCATED_FRAME);
        CHECK_ERROR_MESSAGE(d);
        CHECK(strcmp(qns_decoder_error_message(d), first_copy) != 0);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV_ERRORS, 2, 2 + hdr + 3);
        CHECK_EQ(r.n_seen, 0);

        /* Nothing of the cut-off frame is left: a whole frame decodes. */
        CHECK_RESULT(feed_copy(d, c, wire.data, wire.len, &r), QNS_RESULT_OK);
        CHECK_EQ(r.n_seen, 1);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV, 1, 6);
        CHECK_RESULT(qns_decoder_reset(d, c), QNS_RESULT_OK);
        CHECK_RESULT(qns_decoder_reset(d, c), QNS_RESULT_OK);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV_ERRORS, 2, 2 + hdr + 3);

        /* Without counters, nothing is counted but the result is the same. */
        CHECK_RESULT(feed_copy(d, NULL, wire.data, 3, &r), QNS_RESULT_OK);
        CHECK_RESULT(qns_decoder_reset(d, NULL), QNS_RESULT_TRUNCATED_FRAME);
        CHECK_COUNT(c, QNS_COUNTER_ID_INDEV_ERRORS, 2, 2 + hdr + 3);

        free(first_copy);
        qns_decoder_free(d);
        qns_counters_free(c);
        buf_free(&wire);
    }
}

/* ------------------------------------------------------------------------ */
/* Decoder: re-entry from a frame callback */

typedef struct Reentry {
    QnsDecoder *self;
    QnsDecoder *other;
    QnsCounters *counters;
    size_t calls;
} Reentry;

static void on_frame_reenter(void *opaque, const uint8_t *payload, size_t len,
                             uint32_t vnet_hdr_len)
{
    Reentry *re = opaque;
    Expected expected = { payload, len, 0 };
    Recorder r = { &expected, 1, 0 };
    Buf wire = { 0 };

    (void)vnet_hdr_len;
    re->calls++;
    buf_frame(&wire, false, payload, (uint32_t)len, 0);

    /* Its own decoder is busy... */
    CHECK_RESULT(qns_decoder_feed(re->self, re->counters, wire.data, wire.len,
                                  on_frame_reenter, opaque),
                 QNS_RESULT_BUSY);
    CHECK_RESULT(qns_decoder_reset(re->self, re->counters), QNS_RESULT_BUSY);
    CHECK_STR(qns_decoder_error_message(re->self), "decoder busy");
    qns_decoder_free(re->self); /* ignored while in use */

    /* ... another decoder is not. */
    CHECK_RESULT(qns_decoder_feed(re->other, NULL, wire.data, wire.len,
                                  on_frame, &r),
                 QNS_RESULT_OK);
    CHECK_EQ(r.n_seen, 1);
    buf_free(&wire);
}

static void test_decoder_busy(void)
{
    Reentry re = { qns_decoder_new(false, 0), qns_decoder_new(false, 0),
                   qns_counters_new("filter-redirector"), 0 };
    Expected expected[] = { { (const uint8_t *)"after", 5, 0 } };
    Recorder r = { expected, 1, 0 };
    Buf wire = { 0 };
    size_t split;

    CHECK(re.self != NULL && re.other != NULL && re.counters != NULL);
    buf_frame(&wire, false, "one", 3, 0);
    split = wire.len + 2;
    buf_frame(&wire, false, "two!", 4, 0);

    /* The first frame lies in the chunk, the second straddles two. */
    CHECK_RESULT(qns_decoder_feed(re.self, re.counters, wire.data, split,
                                  on_frame_reenter, &re),
                 QNS_RESULT_OK);
    CHECK_EQ(re.calls, 1);
    CHECK_RESULT(qns_decoder_feed(re.self, re.counters, wire.data + split,
                                  wire.len - split, on_frame_reenter, &re),
                 QNS_RESULT_OK);
    CHECK_EQ(re.calls, 2);
    /* The busy calls counted nothing. */
    CHECK_COUNT(re.counters, QNS_COUNTER_ID_INDEV, 2, 7);
    CHECK_COUNT(re.counters, QNS_COUNTER_ID_INDEV_ERRORS, 0, 0);

    /* The decoder was not freed and works on. */
    buf_free(&wire);
    buf_frame(&wire, false, "after", 5, 0);
    CHECK_RESULT(qns_decoder_feed(re.self, re.counters, wire.data, wire.len,
                                  on_frame, &r),
                 QNS_RESULT_OK);
    CHECK_EQ(r.n_seen, 1);
    CHECK_STR(qns_decoder_error_message(re.self), "");

    buf_free(&wire);
    qns_decoder_free(re.self);
    qns_decoder_free(re.other);
    qns_counters_free(re.counters);
}

/* ------------------------------------------------------------------------ */
/* Decoder: NULL pointers */

static void test_decoder_null(void)
{
    QnsDecoder *d = qns_decoder_new(false, 0);
    QnsCounters *c = qns_counters_new("filter-redirector");
    Expected expected[] = { { (const uint8_t *)"hi", 2, 0 } };
    Recorder r = { expected, 1, 0 };
    Buf wire = { 0 };

    CHECK(d != NULL);
    buf_frame(&wire, false, "hi", 2, 0);

    CHECK_RESULT(qns_decoder_feed(NULL, c, wire.data, wire.len, on_frame, &r),
                 QNS_RESULT_NULL_POINTER);
    CHECK_RESULT(qns_decoder_feed(d, c, NULL, wire.len, on_frame, &r),
                 QNS_RESULT_NULL_POINTER);
    CHECK_RESULT(qns_decoder_feed(d, c, wire.data, wire.len, NULL, &r),
                 QNS_RESULT_NULL_POINTER);
    CHECK_RESULT(qns_decoder_reset(NULL, c), QNS_RESULT_NULL_POINTER);
    CHECK_STR(qns_decoder_error_message(NULL), "no decoder");
    /* None of them consumed input or counted. */
    CHECK_EQ(r.n_seen, 0);
    CHECK_COUNT(c, QNS_COUNTER_ID_INDEV, 0, 0);
    CHECK_COUNT(c, QNS_COUNTER_ID_INDEV_ERRORS, 0, 0);

    /* NULL buf is fine with len 0, and NULL opaque is the callback's own. */
    CHECK_RESULT(qns_decoder_feed(d, c, NULL, 0, on_frame, &r), QNS_RESULT_OK);
    CHECK_RESULT(qns_decoder_feed(d, c, wire.data, 0, on_frame, &r),
                 QNS_RESULT_OK);
    CHECK_RESULT(qns_decoder_feed(d, c, wire.data, wire.len, on_frame_ignore,
                                  NULL),
                 QNS_RESULT_OK);
    CHECK_COUNT(c, QNS_COUNTER_ID_INDEV, 1, 2);
    /* NULL counters: decoded, not counted. */
    CHECK_RESULT(qns_decoder_feed(d, NULL, wire.data, wire.len, on_frame, &r),
                 QNS_RESULT_OK);
    CHECK_EQ(r.n_seen, 1);
    CHECK_COUNT(c, QNS_COUNTER_ID_INDEV, 1, 2);
    CHECK_RESULT(qns_decoder_reset(d, NULL), QNS_RESULT_OK);

    qns_decoder_free(NULL);
    qns_decoder_free(d);
    qns_counters_free(c);
    buf_free(&wire);
}

/* ------------------------------------------------------------------------ */
/* Encoder */

static struct iovec iov(const void *base, size_t len)
{
    struct iovec v;
    v.iov_base = (void *)base;
    v.iov_len = len;
    return v;
}

static void test_encoder(void)
{
    QnsCounters *c = qns_counters_new("filter-mirror");
    QnsEncoder *e = qns_encoder_new(false, 0);
    QnsEncoder *ev = qns_encoder_new(true, 0);
    QnsFrame frame, frame2;
    struct iovec v[3];

    CHECK(c != NULL && e != NULL && ev != NULL);

    /* Three pieces, one of them empty, into one contiguous frame. */
    {
        static const uint8_t want[] = { 0, 0, 0, 5, 'a', 'b', 'c', 'd', 'e' };
        v[0] = iov("ab", 2);
        v[1] = iov("", 0);
        v[2] = iov("cde", 3);
        memset(&frame, 0, sizeof(frame));
        CHECK_RESULT(qns_encoder_encode(e, c, v, 3, 99, &frame), QNS_RESULT_OK);
        CHECK(frame.data != NULL);
        CHECK_EQ(frame.len, sizeof(want));
        CHECK(memcmp(frame.data, want, sizeof(want)) == 0);
        /* Nothing is counted until the frame is completed. */
        CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV, 0, 0);
        CHECK_RESULT(qns_encoder_complete(e, c, &frame, true), QNS_RESULT_OK);
        CHECK(frame.data == NULL);
        CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV, 1, 5);
        CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV_ERRORS, 0, 0);
        /* Completing twice is harmless and counts nothing. */
        CHECK_RESULT(qns_encoder_complete(e, c, &frame, true), QNS_RESULT_OK);
        CHECK_RESULT(qns_encoder_complete(e, c, &frame, false), QNS_RESULT_OK);
        CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV, 1, 5);
        CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV_ERRORS, 0, 0);
    }

    /* With the vnet header length; a frame that could not be written. */
    {
        static const uint8_t want[] = { 0, 0, 0, 6, 0, 0, 0, 2,
                                        1, 2, 'x', 'y', 'z', '!' };
        static const uint8_t hdr[] = { 1, 2 };
        v[0] = iov(hdr, 2);
        v[1] = iov("xyz", 3);
        v[2] = iov("!", 1);
        CHECK_RESULT(qns_encoder_encode(ev, c, v, 3, 2, &frame), QNS_RESULT_OK);
        CHECK_EQ(frame.len, sizeof(want));
        CHECK(memcmp(frame.data, want, sizeof(want)) == 0);
        CHECK_RESULT(qns_encoder_complete(ev, c, &frame, false), QNS_RESULT_OK);
        CHECK(frame.data == NULL);
        CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV, 1, 5);
        CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV_ERRORS, 1, 6);
        CHECK_RESULT(qns_encoder_complete(ev, c, &frame, false), QNS_RESULT_OK);
        CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV_ERRORS, 1, 6);
    }

    /* Empty payloads: nothing to send, nothing counted, *out untouched. */
    {
        memset(&frame, 0, sizeof(frame));
        CHECK_RESULT(qns_encoder_encode(e, c, NULL, 0, 0, &frame),
                     QNS_RESULT_EMPTY_FRAME);
        v[0] = iov("", 0);
        v[1] = iov(NULL, 0);
        v[2] = iov("", 0);
        CHECK_RESULT(qns_encoder_encode(e, c, v, 3, 0, &frame),
                     QNS_RESULT_EMPTY_FRAME);
        CHECK(frame.data == NULL);
        CHECK_EQ(frame.len, 0);
        CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV, 1, 5);
        CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV_ERRORS, 1, 6);
    }

    /* Two frames out at once (the chardev write re-entered), completed by
     * another encoder than the one that made them. */
    {
        v[0] = iov("first", 5);
        CHECK_RESULT(qns_encoder_encode(e, c, v, 1, 0, &frame), QNS_RESULT_OK);
        v[0] = iov("second", 6);
        CHECK_RESULT(qns_encoder_encode(e, c, v, 1, 0, &frame2),
                     QNS_RESULT_OK);
        CHECK(frame.data != frame2.data);
        CHECK(memcmp(frame.data + 4, "first", 5) == 0);
        CHECK(memcmp(frame2.data + 4, "second", 6) == 0);
        CHECK_RESULT(qns_encoder_complete(ev, c, &frame2, true),
                     QNS_RESULT_OK);
        CHECK_RESULT(qns_encoder_complete(e, c, &frame, true), QNS_RESULT_OK);
        CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV, 3, 16);
    }

    /* NULL pointers. */
    {
        v[0] = iov("abc", 3);
        memset(&frame, 0, sizeof(frame));
        CHECK_RESULT(qns_encoder_encode(NULL, c, v, 1, 0, &frame),
                     QNS_RESULT_NULL_POINTER);
        CHECK_RESULT(qns_encoder_encode(e, c, NULL, 1, 0, &frame),
                     QNS_RESULT_NULL_POINTER);
        CHECK_RESULT(qns_encoder_encode(e, c, v, 1, 0, NULL),
                     QNS_RESULT_NULL_POINTER);
        v[1] = iov(NULL, 2);
        CHECK_RESULT(qns_encoder_encode(e, c, v, 2, 0, &frame),
                     QNS_RESULT_NULL_POINTER);
        CHECK(frame.data == NULL);

        /* NULL counters: encoded and released, not counted. */
        CHECK_RESULT(qns_encoder_encode(e, NULL, v, 1, 0, &frame),
                     QNS_RESULT_OK);
        CHECK_RESULT(qns_encoder_complete(NULL, c, &frame, true),
                     QNS_RESULT_NULL_POINTER);
        CHECK(frame.data != NULL); /* still ours */
        CHECK_RESULT(qns_encoder_complete(e, c, NULL, true),
                     QNS_RESULT_NULL_POINTER);
        CHECK_RESULT(qns_encoder_complete(e, NULL, &frame, true),
                     QNS_RESULT_OK);
        CHECK(frame.data == NULL);
        CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV, 3, 16);
        CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV_ERRORS, 1, 6);
    }

    qns_encoder_free(NULL);
    qns_encoder_free(e);
    qns_encoder_free(ev);
    qns_counters_free(c);
}

/* The maximum payload: 0 means QNS_DEFAULT_MAX_FRAME_LEN. */
static void test_encoder_max_frame_len(void)
{
    static const uint32_t maxes[] = { 0, 10 };

    for (size_t k = 0; k < 2; k++) {
        uint32_t max = maxes[k] ? maxes[k] : QNS_DEFAULT_MAX_FRAME_LEN;
        uint8_t *payload = make_payload(max + 1, 9);
        QnsCounters *c = qns_counters_new("filter-redirector");
        QnsEncoder *e = qns_encoder_new(false, maxes[k]);
        QnsFrame frame;
        struct iovec v[2];

        memset(&frame, 0, sizeof(frame));
        /* One byte over, in two pieces. */
        v[0] = iov(payload, max);
        v[1] = iov(payload + max, 1);
        CHECK_RESULT(qns_encoder_encode(e, c, v, 2, 0, &frame),
                     QNS_RESULT_FRAME_TOO_LARGE);
        CHECK(frame.data == NULL);
        CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV_ERRORS, 1, max + 1);
        CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV, 0, 0);

        CHECK_RESULT(qns_encoder_encode(e, c, v, 1, 0, &frame), QNS_RESULT_OK);
        CHECK_EQ(frame.len, 4 + (uint64_t)max);
        CHECK(memcmp(frame.data + 4, payload, max) == 0);
        CHECK_RESULT(qns_encoder_complete(e, c, &frame, true), QNS_RESULT_OK);
        CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV, 1, max);

        qns_encoder_free(e);
        qns_counters_free(c);
        free(payload);
    }
}

/* What the encoder writes, the decoder reads, for any payload size. */
static void test_round_trip(void)
{
    static const size_t lens[] = { 1, 14, 60, 1514, 9000, 65535 };
    enum { N = sizeof(lens) / sizeof(lens[0]) };

    for (int vnet = 0; vnet <= 1; vnet++) {
        QnsCounters *out = qns_counters_new("filter-redirector");
        QnsCounters *in = qns_counters_new("filter-redirector");
        QnsEncoder *e = qns_encoder_new(vnet, 0);
        QnsDecoder *d = qns_decoder_new(vnet, 0);
        uint8_t *payloads[N];
        Expected expected[N];
        Recorder r = { expected, N, 0 };
        Buf wire = { 0 };
        uint64_t total = 0;

        for (size_t i = 0; i < N; i++) {
            QnsFrame frame;
            struct iovec v = iov(NULL, lens[i]);
            uint32_t vnet_len = (uint32_t)(lens[i] < 12 ? lens[i] : 12);

            payloads[i] = make_payload(lens[i], (unsigned)(100 + i));
            v.iov_base = payloads[i];
            expected[i].payload = payloads[i];
            expected[i].len = lens[i];
            expected[i].vnet_hdr_len = vnet ? vnet_len : 0;
            total += lens[i];
            CHECK_RESULT(qns_encoder_encode(e, out, &v, 1, vnet_len, &frame),
                         QNS_RESULT_OK);
            buf_put(&wire, frame.data, frame.len);
            CHECK_RESULT(qns_encoder_complete(e, out, &frame, true),
                         QNS_RESULT_OK);
        }
        CHECK_COUNT(out, QNS_COUNTER_ID_OUTDEV, N, total);
        CHECK_RESULT(feed_copy(d, in, wire.data, wire.len, &r), QNS_RESULT_OK);
        CHECK_EQ(r.n_seen, N);
        CHECK_COUNT(in, QNS_COUNTER_ID_INDEV, N, total);

        for (size_t i = 0; i < N; i++) {
            free(payloads[i]);
        }
        buf_free(&wire);
        qns_decoder_free(d);
        qns_encoder_free(e);
        qns_counters_free(in);
        qns_counters_free(out);
    }
}

/* ------------------------------------------------------------------------ */
/* Stats lists */

typedef struct Filters {
    QnsCounters *redirector, *mirror, *buffer;
} Filters;

static Filters make_filters(void)
{
    Filters f = { qns_counters_new("filter-redirector"),
                  qns_counters_new("filter-mirror"),
                  qns_counters_new("filter-buffer") };

    CHECK(f.redirector != NULL && f.mirror != NULL && f.buffer != NULL);

    qns_counters_count_packet(f.redirector, QNS_DIRECTION_TX, 100);
    qns_counters_count_packet(f.redirector, QNS_DIRECTION_TX, 50);
    qns_counters_count_packet(f.redirector, QNS_DIRECTION_RX, 70);
    CHECK_RESULT(qns_counters_add(f.redirector, QNS_COUNTER_ID_INDEV, 3, 300),
                 QNS_RESULT_OK);
    CHECK_RESULT(qns_counters_add(f.redirector, QNS_COUNTER_ID_OUTDEV, 2, 200),
                 QNS_RESULT_OK);
    CHECK_RESULT(qns_counters_add(f.redirector, QNS_COUNTER_ID_INDEV_ERRORS,
                                  1, 8),
                 QNS_RESULT_OK);
    CHECK_RESULT(qns_counters_add(f.redirector, QNS_COUNTER_ID_OUTDEV_ERRORS,
                                  4, 40),
                 QNS_RESULT_OK);

    qns_counters_count_packet(f.mirror, QNS_DIRECTION_RX, 60);
    CHECK_RESULT(qns_counters_add(f.mirror, QNS_COUNTER_ID_OUTDEV, 1, 60),
                 QNS_RESULT_OK);
    CHECK_RESULT(qns_counters_add(f.mirror, QNS_COUNTER_ID_OUTDEV_ERRORS, 7,
                                  70),
                 QNS_RESULT_OK);
    /* Counted, but not a counter a mirror reports. */
    CHECK_RESULT(qns_counters_add(f.mirror, QNS_COUNTER_ID_INDEV, 9, 9),
                 QNS_RESULT_OK);

    qns_counters_count_packet(f.buffer, QNS_DIRECTION_RX, 1514);
    qns_counters_count_packet(f.buffer, QNS_DIRECTION_RX, 1514);
    qns_counters_count_packet(f.buffer, QNS_DIRECTION_TX, 42);
    CHECK_RESULT(qns_counters_add(f.buffer, QNS_COUNTER_ID_OUTDEV, 5, 5),
                 QNS_RESULT_OK);
    return f;
}

static void free_filters(Filters *f)
{
    qns_counters_free(f->redirector);
    qns_counters_free(f->mirror);
    qns_counters_free(f->buffer);
}

/* Add the three filters; the strings are copied, so pass scratch buffers. */
static void add_filters(QnsStatsBuilder *b, const Filters *f)
{
    char name[16], netdev[16], type[32];

    strcpy(name, "r0");
    strcpy(netdev, "n0");
    strcpy(type, "filter-redirector");
    CHECK_RESULT(qns_stats_builder_add(b, name, netdev, type, f->redirector),
                 QNS_RESULT_OK);
    strcpy(name, "m0");
    strcpy(netdev, "n1");
    strcpy(type, "filter-mirror");
    CHECK_RESULT(qns_stats_builder_add(b, name, netdev, type, f->mirror),
                 QNS_RESULT_OK);
    strcpy(name, "b0");
    strcpy(netdev, "n0");
    strcpy(type, "filter-buffer");
    CHECK_RESULT(qns_stats_builder_add(b, name, netdev, type, f->buffer),
                 QNS_RESULT_OK);
    memset(name, 'X', sizeof(name) - 1);
    memset(netdev, 'X', sizeof(netdev) - 1);
    memset(type, 'X', sizeof(type) - 1);
}

#define CHECK_COUNTER_STATS(cs, name_, p, b)                            \
    do {                                                                \
        CHECK_STR((cs).name, (name_));                                  \
        CHECK_EQ((cs).packets, (p));                                    \
        CHECK_EQ((cs).bytes, (b));                                      \
    } while (0)

static void check_redirector(const QnsFilterStats *s)
{
    CHECK_STR(s->name, "r0");
    CHECK_STR(s->netdev, "n0");
    CHECK_STR(s->qom_type, "filter-redirector");
    CHECK_EQ(s->packets_tx, 2);
    CHECK_EQ(s->bytes_tx, 150);
    CHECK_EQ(s->packets_rx, 1);
    CHECK_EQ(s->bytes_rx, 70);
    CHECK_EQ(s->n_counters, 4);
    CHECK(s->counters != NULL);
    CHECK_COUNTER_STATS(s->counters[0], "indev", 3, 300);
    CHECK_COUNTER_STATS(s->counters[1], "outdev", 2, 200);
    CHECK_COUNTER_STATS(s->counters[2], "indev-errors", 1, 8);
    CHECK_COUNTER_STATS(s->counters[3], "outdev-errors", 4, 40);
}

static void check_mirror(const QnsFilterStats *s)
{
    CHECK_STR(s->name, "m0");
    CHECK_STR(s->netdev, "n1");
    CHECK_STR(s->qom_type, "filter-mirror");
    CHECK_EQ(s->packets_tx, 0);
    CHECK_EQ(s->bytes_tx, 0);
    CHECK_EQ(s->packets_rx, 1);
    CHECK_EQ(s->bytes_rx, 60);
    CHECK_EQ(s->n_counters, 2);
    CHECK(s->counters != NULL);
    CHECK_COUNTER_STATS(s->counters[0], "outdev", 1, 60);
    CHECK_COUNTER_STATS(s->counters[1], "outdev-errors", 7, 70);
}

static void check_buffer(const QnsFilterStats *s)
{
    CHECK_STR(s->name, "b0");
    CHECK_STR(s->netdev, "n0");
    CHECK_STR(s->qom_type, "filter-buffer");
    CHECK_EQ(s->packets_tx, 1);
    CHECK_EQ(s->bytes_tx, 42);
    CHECK_EQ(s->packets_rx, 2);
    CHECK_EQ(s->bytes_rx, 3028);
    CHECK_EQ(s->n_counters, 0);
    CHECK(s->counters == NULL);
}

static void test_stats(void)
{
    Filters f = make_filters();

    /* Every filter, in the order added, counters read at add time. */
    {
        QnsStatsBuilder *b = qns_stats_builder_new(NULL);
        QnsStatsList *list = NULL;
        char *error = NULL;

        CHECK(b != NULL);
        add_filters(b, &f);
        /* Counted after the add: not in this list. */
        qns_counters_count_packet(f.buffer, QNS_DIRECTION_TX, 1);
        CHECK_RESULT(qns_stats_builder_finish(b, &list, &error), QNS_RESULT_OK);
        CHECK(list != NULL);
        CHECK(error == NULL);
        CHECK_EQ(list->len, 3);
        CHECK(list->filters != NULL);
        check_redirector(&list->filters[0]);
        check_mirror(&list->filters[1]);
        check_buffer(&list->filters[2]);
        qns_stats_list_free(list);
    }

    /* One filter by name (the name is copied). */
    {
        char name[8];
        QnsStatsBuilder *b;
        QnsStatsList *list = NULL;

        strcpy(name, "m0");
        b = qns_stats_builder_new(name);
        strcpy(name, "r0");
        CHECK(b != NULL);
        add_filters(b, &f);
        CHECK_RESULT(qns_stats_builder_finish(b, &list, NULL), QNS_RESULT_OK);
        CHECK(list != NULL);
        CHECK_EQ(list->len, 1);
        check_mirror(&list->filters[0]);
        qns_stats_list_free(list);
    }

    /* A name no filter has. */
    {
        QnsStatsBuilder *b = qns_stats_builder_new("nope");
        QnsStatsList *list = NULL;
        char *error = NULL;

        CHECK(b != NULL);
        add_filters(b, &f);
        CHECK_RESULT(qns_stats_builder_finish(b, &list, &error),
                     QNS_RESULT_NOT_FOUND);
        CHECK(list == NULL);
        CHECK_STR(error, "netfilter 'nope' not found");
        qns_string_free(error);

        /* ... without asking for the message. */
        b = qns_stats_builder_new("nope");
        CHECK_RESULT(qns_stats_builder_finish(b, &list, NULL),
                     QNS_RESULT_NOT_FOUND);
        CHECK(list == NULL);
    }

    /* No filters at all: an empty list. */
    {
        QnsStatsBuilder *b = qns_stats_builder_new(NULL);
        QnsStatsList *list = NULL;

        CHECK_RESULT(qns_stats_builder_finish(b, &list, NULL), QNS_RESULT_OK);
        CHECK(list != NULL);
        CHECK_EQ(list->len, 0);
        CHECK(list->filters == NULL);
        qns_stats_list_free(list);
    }

    /* NULL pointers. */
    {
        QnsStatsBuilder *b = qns_stats_builder_new(NULL);
        QnsStatsList *list = NULL;
        char *error = NULL;

        CHECK(b != NULL);
        CHECK_RESULT(qns_stats_builder_add(NULL, "r0", "n0",
                                           "filter-redirector", f.redirector),
                     QNS_RESULT_NULL_POINTER);
        CHECK_RESULT(qns_stats_builder_add(b, NULL, "n0", "filter-redirector",
                                           f.redirector),
                     QNS_RESULT_NULL_POINTER);
        CHECK_RESULT(qns_stats_builder_add(b, "r0", NULL, "filter-redirector",
                                           f.redirector),
                     QNS_RESULT_NULL_POINTER);
        CHECK_RESULT(qns_stats_builder_add(b, "r0", "n0", NULL, f.redirector),
                     QNS_RESULT_NULL_POINTER);
        CHECK_RESULT(qns_stats_builder_add(b, "r0", "n0", "filter-redirector",
                                           NULL),
                     QNS_RESULT_NULL_POINTER);
        CHECK_RESULT(qns_stats_builder_finish(NULL, &list, &error),
                     QNS_RESULT_NULL_POINTER);
        CHECK(list == NULL);
        CHECK(error == NULL);
        /* The failed adds added nothing. */
        CHECK_RESULT(qns_stats_builder_finish(b, &list, &error), QNS_RESULT_OK);
        CHECK(list != NULL);
        CHECK_EQ(list->len, 0);
        qns_stats_list_free(list);

        /* A NULL list still consumes the builder (valgrind: no leak). */
        b = qns_stats_builder_new(NULL);
        add_filters(b, &f);
        CHECK_RESULT(qns_stats_builder_finish(b, NULL, &error),
                     QNS_RESULT_NULL_POINTER);
        CHECK(error == NULL);

        /* An abandoned builder, with filters in it. */
        b = qns_stats_builder_new("r0");
        add_filters(b, &f);
        qns_stats_builder_free(b);

        qns_stats_builder_free(NULL);
        qns_stats_list_free(NULL);
        qns_string_free(NULL);
    }

    free_filters(&f);
}

/* ------------------------------------------------------------------------ */

/*
 * The outdev queue: frames pushed, written in uneven pieces as a chardev
 * that takes only some bytes at a time would, counted once whole; the
 * backlog bound and its water marks; discard; NULL arguments.
 */
static void test_outdev(void)
{
    QnsCounters *c = qns_counters_new("filter-redirector");
    QnsOutdev *q = qns_outdev_new(true, 0, 64);
    uint8_t written[256];
    size_t n_written = 0, len, dropped = 99;
    const uint8_t *data;
    struct iovec v[2];

    CHECK(c != NULL && q != NULL);
    /* water marks for a 64-byte bound: high 64 / 16 = 4, low 64 / 64 = 1 */
    CHECK(!qns_outdev_congested(q) && qns_outdev_drained(q));
    v[0] = iov("hello", 5);
    v[1] = iov(" world", 6);
    CHECK_RESULT(qns_outdev_push(q, c, v, 2, 12), QNS_RESULT_OK);
    CHECK_RESULT(qns_outdev_push(q, c, v, 1, 12), QNS_RESULT_OK);
    CHECK_RESULT(qns_outdev_push(q, c, v, 0, 12), QNS_RESULT_EMPTY_FRAME);
    /* 8 + 11 + 8 + 5 = 32 queued; another 8 + 11 + 32 > 64 is refused. */
    CHECK_RESULT(qns_outdev_push(q, c, v, 2, 12), QNS_RESULT_OK);
    CHECK_RESULT(qns_outdev_push(q, c, v, 2, 12), QNS_RESULT_BACKLOG_FULL);
    /* An empty frame into the full backlog: nothing to write, no error. */
    CHECK_RESULT(qns_outdev_push(q, c, v, 0, 12), QNS_RESULT_EMPTY_FRAME);
    CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV_ERRORS, 1, 11);
    CHECK(!qns_outdev_mid_frame(q));
    CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV, 0, 0);
    CHECK(qns_outdev_congested(q) && !qns_outdev_drained(q));

    /* Write the first two frames 7 bytes at a time. */
    while (n_written < 8 + 11 + 8 + 5) {
        size_t take;

        CHECK_RESULT(qns_outdev_pending(q, &data, &len), QNS_RESULT_OK);
        take = len < 7 ? len : 7;
        if (n_written + take > 8 + 11 + 8 + 5) {
            take = 8 + 11 + 8 + 5 - n_written;
        }
        memcpy(written + n_written, data, take);
        n_written += take;
        CHECK_RESULT(qns_outdev_advance(q, c, take), QNS_RESULT_OK);
    }
    {
        static const uint8_t want[] = {
            0, 0, 0, 11, 0, 0, 0, 12, 'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o',
            'r', 'l', 'd', 0, 0, 0, 5, 0, 0, 0, 12, 'h', 'e', 'l', 'l', 'o',
        };
        CHECK_EQ(n_written, sizeof(want));
        CHECK(memcmp(written, want, sizeof(want)) == 0);
    }
    CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV, 2, 16);
    CHECK_RESULT(qns_outdev_pending(q, &data, &len), QNS_RESULT_OK);
    CHECK_EQ(len, 19);
    CHECK_RESULT(qns_outdev_advance(q, c, 20), QNS_RESULT_INVALID_ARGUMENT);
    CHECK(!qns_outdev_mid_frame(q));
    CHECK_RESULT(qns_outdev_advance(q, c, 3), QNS_RESULT_OK);
    CHECK(qns_outdev_mid_frame(q));
    /* The peer is gone: the partly written frame is dropped and counted. */
    CHECK_RESULT(qns_outdev_discard(q, c, &dropped), QNS_RESULT_OK);
    CHECK_EQ(dropped, 1);
    CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV_ERRORS, 2, 22);
    CHECK_RESULT(qns_outdev_pending(q, &data, &len), QNS_RESULT_OK);
    CHECK_EQ(len, 0);
    CHECK(!qns_outdev_congested(q) && qns_outdev_drained(q));
    CHECK(!qns_outdev_congested(NULL) && qns_outdev_drained(NULL));
    CHECK(!qns_outdev_mid_frame(q) && !qns_outdev_mid_frame(NULL));

    CHECK_RESULT(qns_outdev_push(NULL, c, v, 1, 0), QNS_RESULT_NULL_POINTER);
    CHECK_RESULT(qns_outdev_push(q, c, NULL, 1, 0), QNS_RESULT_NULL_POINTER);
    CHECK_RESULT(qns_outdev_pending(NULL, &data, &len), QNS_RESULT_NULL_POINTER);
    CHECK_RESULT(qns_outdev_pending(q, NULL, &len), QNS_RESULT_NULL_POINTER);
    CHECK_RESULT(qns_outdev_pending(q, &data, NULL), QNS_RESULT_NULL_POINTER);
    CHECK_RESULT(qns_outdev_advance(NULL, c, 0), QNS_RESULT_NULL_POINTER);
    CHECK_RESULT(qns_outdev_discard(NULL, c, NULL), QNS_RESULT_NULL_POINTER);
    CHECK_RESULT(qns_outdev_discard(q, NULL, NULL), QNS_RESULT_OK);
    qns_outdev_free(NULL);
    qns_outdev_free(q);
    qns_counters_free(c);
}

int main(void)
{
    test_result_messages();
    test_counters();
    test_counters_threads();
    test_decoder_chunkings();
    test_decoder_large_frame();
    test_decoder_max_frame_len();
    test_decoder_frame_too_large();
    test_decoder_vnet_header_too_large();
    test_decoder_empty_frame();
    test_decoder_first_error_wins();
    test_decoder_truncated();
    test_decoder_busy();
    test_decoder_null();
    test_encoder();
    test_encoder_max_frame_len();
    test_round_trip();
    test_outdev();
    test_stats();

    printf("%lu passed, 0 failed\n", n_passed);
    return 0;
}
