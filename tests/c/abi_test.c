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

/*
 * The counters are read only the way QEMU reads them: through a stats list
 * (qns_stats_builder_new, _add with dummy strings, _add_counters, _finish),
 * freed straight away. These helpers do that; the macros below compare.
 */

/* Each QnsCounterId's name in a QnsCounterStats, at its value. */
static const char *const counter_names[] = {
    "indev", "outdev", "indev-errors", "outdev-errors", "held", "hold-time",
    "released", "dropped", "buffered", "connections", "rewritten", "closed",
    "written", "truncated", "write-errors", "primary", "secondary",
    "miscompare-tcp", "miscompare-udp", "miscompare-icmp", "miscompare-other",
    "miscompare-timeout", "primary-dropped", "secondary-dropped",
    "unsupported", "send-errors", "primary-queued", "secondary-queued",
    "primary-in-errors", "secondary-in-errors", "release-latency", "delay",
    "checkpoint-requests"
};
/* The first id that is not a QnsCounterId. */
#define N_COUNTER_IDS \
    ((uint32_t)(sizeof(counter_names) / sizeof(counter_names[0])))

/* A one-filter stats list of `counters`, with the counters `ids[0..n]`. */
static QnsStatsList *stats_list_of(const NetFilterCounters *counters,
                                   const uint32_t *ids, size_t n)
{
    NetFilterStatsBuilder *b = qns_stats_builder_new();
    QnsStatsList *list = NULL;

    CHECK(b != NULL);
    CHECK_RESULT(qns_stats_builder_add(b, "f0", "net0", "filter-test",
                                       counters),
                 QNS_RESULT_OK);
    CHECK_RESULT(qns_stats_builder_add_counters(b, counters, ids, n),
                 QNS_RESULT_OK);
    CHECK_RESULT(qns_stats_builder_finish(b, &list), QNS_RESULT_OK);
    CHECK(list != NULL);
    CHECK_EQ(list->len, 1);
    CHECK(list->filters != NULL);
    return list;
}

/*
 * stats_list_of(), where `n_counters` of the ids are counters of packets
 * and bytes (the rest events or durations, in its values alone).
 */
static QnsStatsList *stats_of_values(const NetFilterCounters *counters,
                                     const uint32_t *ids, size_t n,
                                     size_t n_counters)
{
    QnsStatsList *list = stats_list_of(counters, ids, n);

    CHECK_EQ(list->filters[0].n_counters, n_counters);
    CHECK(n_counters == 0 ? list->filters[0].counters == NULL
                          : list->filters[0].counters != NULL);
    return list;
}

/* stats_of_values() where every id is a counter. */
static QnsStatsList *stats_of(const NetFilterCounters *counters,
                              const uint32_t *ids, size_t n)
{
    return stats_of_values(counters, ids, n, n);
}

/*
 * The filter-specific counter `id` of `counters`, read through a list: a
 * count of packets and bytes from its counters, a count of events (bytes
 * always 0) from its values, where it alone is.
 */
static QnsCounterStats read_counter(const NetFilterCounters *counters, uint32_t id)
{
    QnsStatsList *list;
    const QnsFilterStats *f;
    QnsCounterStats s;

    CHECK(id < sizeof(counter_names) / sizeof(counter_names[0]));
    list = stats_list_of(counters, &id, 1);
    f = &list->filters[0];
    if (f->n_counters == 1) {
        s = f->counters[0];
        CHECK_STR(s.name, counter_names[id]);
    } else {
        /* the directions' four values, then the event count's one */
        CHECK_EQ(f->n_counters, 0);
        CHECK_EQ(f->n_values, 5);
        CHECK_STR(f->values[4].name, counter_names[id]);
        s.name = f->values[4].name;
        s.packets = f->values[4].value;
        s.bytes = 0;
    }
    qns_stats_list_free(list);
    return s;
}

/* The packets and bytes of `counters` in direction `dir`, likewise. */
static QnsCounterStats read_direction(const NetFilterCounters *counters,
                                      uint32_t dir)
{
    QnsStatsList *list = stats_of(counters, NULL, 0);
    const QnsFilterStats *f = &list->filters[0];
    QnsCounterStats s = { NULL, 0, 0 };

    CHECK(dir == QNS_DIRECTION_TX || dir == QNS_DIRECTION_RX);
    s.packets = dir == QNS_DIRECTION_TX ? f->packets_tx : f->packets_rx;
    s.bytes = dir == QNS_DIRECTION_TX ? f->bytes_tx : f->bytes_rx;
    qns_stats_list_free(list);
    return s;
}

/* The filter-specific counter `id` of `counters` is exactly (p, b). */
#define CHECK_COUNT(counters, id, p, b)                                 \
    do {                                                                \
        QnsCounterStats c_ = read_counter((counters), (id));            \
        CHECK_EQ(c_.packets, (p));                                      \
        CHECK_EQ(c_.bytes, (b));                                        \
    } while (0)

/* The packets and bytes counted in `dir` are exactly (p, b). */
#define CHECK_DIRECTION(counters, dir, p, b)                            \
    do {                                                                \
        QnsCounterStats c_ = read_direction((counters), (dir));         \
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
static QnsResult feed_copy(QnsDecoder *d, NetFilterCounters *c, const uint8_t *p,
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

    /* The values are part of the ABI. */
    CHECK_EQ(QNS_RESULT_OK, 0);
    CHECK_EQ(QNS_RESULT_NULL_POINTER, 1);
    CHECK_EQ(QNS_RESULT_INVALID_ARGUMENT, 2);
    CHECK_EQ(QNS_RESULT_FRAME_TOO_LARGE, 3);
    CHECK_EQ(QNS_RESULT_VNET_HEADER_TOO_LARGE, 4);
    CHECK_EQ(QNS_RESULT_EMPTY_FRAME, 5);
    CHECK_EQ(QNS_RESULT_TRUNCATED_FRAME, 6);
    CHECK_EQ(QNS_RESULT_DESYNCHRONIZED, 7);
    CHECK_EQ(QNS_RESULT_BUSY, 8);
    CHECK_EQ(QNS_RESULT_PANIC, 9);
    CHECK_EQ(QNS_RESULT_POISONED, 10);
    CHECK_EQ(QNS_RESULT_BACKLOG_FULL, 11);

    /* Every code (POISONED included) has its own text... */
    for (uint32_t code = QNS_RESULT_OK; code <= QNS_RESULT_BACKLOG_FULL; code++) {
        msgs[code] = qns_result_message(code);
        CHECK(msgs[code] != NULL);
        CHECK(msgs[code][0] != '\0');
        for (uint32_t other = 0; other < code; other++) {
            CHECK(strcmp(msgs[code], msgs[other]) != 0);
        }
    }
    /* ... and every unknown one the same generic text. */
    CHECK(unknown != NULL);
    CHECK(unknown[0] != '\0');
    for (uint32_t code = QNS_RESULT_OK; code <= QNS_RESULT_BACKLOG_FULL; code++) {
        CHECK(strcmp(unknown, msgs[code]) != 0);
    }
    CHECK_STR(qns_result_message(QNS_RESULT_BACKLOG_FULL + 2), unknown);
    CHECK_STR(qns_result_message(99), unknown);
    CHECK_STR(qns_result_message(UINT32_MAX), unknown);
}

/* ------------------------------------------------------------------------ */
/* Counters */

static void test_counters(void)
{
    NetFilterCounters *c = qns_counters_new();

    CHECK(c != NULL);
    /* All zero to start with. */
    CHECK_DIRECTION(c, QNS_DIRECTION_TX, 0, 0);
    CHECK_DIRECTION(c, QNS_DIRECTION_RX, 0, 0);
    for (uint32_t id = QNS_COUNTER_ID_INDEV; id <= QNS_COUNTER_ID_OUTDEV_ERRORS;
         id++) {
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

    /* Out-of-range directions: refused, nothing counted. */
    CHECK_RESULT(qns_counters_count_packet(c, 2, 1),
                 QNS_RESULT_INVALID_ARGUMENT);
    CHECK_RESULT(qns_counters_count_packet(c, UINT32_MAX, 1),
                 QNS_RESULT_INVALID_ARGUMENT);
    CHECK_DIRECTION(c, QNS_DIRECTION_TX, 2, 1574);
    CHECK_DIRECTION(c, QNS_DIRECTION_RX, 2, 42);

    /* NULL counters. */
    CHECK_RESULT(qns_counters_count_packet(NULL, QNS_DIRECTION_TX, 1),
                 QNS_RESULT_NULL_POINTER);
    CHECK_RESULT(qns_counters_count_packet(NULL, 2, 1),
                 QNS_RESULT_NULL_POINTER);

    /* Counting a packet touches no filter-specific counter (those are
     * counted by the decoder and the outdev, tested below). */
    for (uint32_t id = QNS_COUNTER_ID_INDEV; id <= QNS_COUNTER_ID_OUTDEV_ERRORS;
         id++) {
        CHECK_COUNT(c, id, 0, 0);
    }
    qns_counters_free(c);

    /* The byte count wraps. */
    c = qns_counters_new();
    CHECK(c != NULL);
    CHECK_RESULT(qns_counters_count_packet(c, QNS_DIRECTION_RX, UINT64_MAX),
                 QNS_RESULT_OK);
    CHECK_DIRECTION(c, QNS_DIRECTION_RX, 1, UINT64_MAX);
    CHECK_RESULT(qns_counters_count_packet(c, QNS_DIRECTION_RX, 2),
                 QNS_RESULT_OK);
    CHECK_DIRECTION(c, QNS_DIRECTION_RX, 2, 1);
    CHECK_DIRECTION(c, QNS_DIRECTION_TX, 0, 0);
    qns_counters_free(c);

    /* Counters are separate objects. */
    {
        NetFilterCounters *a = qns_counters_new(), *b = qns_counters_new();

        CHECK(a != NULL && b != NULL && a != b);
        CHECK_RESULT(qns_counters_count_packet(a, QNS_DIRECTION_TX, 5),
                     QNS_RESULT_OK);
        CHECK_DIRECTION(a, QNS_DIRECTION_TX, 1, 5);
        CHECK_DIRECTION(b, QNS_DIRECTION_TX, 0, 0);
        qns_counters_free(a);
        qns_counters_free(b);
    }
    qns_counters_free(NULL);
}

/*
 * Several threads at once, each with its own decoder, decode the same stream
 * into the SHARED counters and count packets in them, while the main thread
 * reads them through stats lists: nothing is lost.
 */
#define N_THREADS 4
#define N_ROUNDS 300
#define N_PER_THREAD 20000

/* Per round: these frames, then one empty frame (rejected: indev-errors). */
static const size_t thread_frame_lens[] = { 1, 60, 1514, 9, 577 };
enum { N_THREAD_FRAMES = sizeof(thread_frame_lens) / sizeof(thread_frame_lens[0]) };

typedef struct ThreadArg {
    NetFilterCounters *counters;
    const Buf *wire;  /* one round's stream, read only */
    size_t chunk;     /* fed this many bytes at a time */
    size_t frames;    /* frames the callback saw */
} ThreadArg;

/* No CHECK here: n_passed belongs to the main thread. */
static void on_frame_count(void *opaque, const uint8_t *payload, size_t len,
                           uint32_t vnet_hdr_len)
{
    ThreadArg *a = opaque;

    (void)payload;
    (void)len;
    (void)vnet_hdr_len;
    a->frames++;
}

static void *count_thread(void *opaque)
{
    ThreadArg *a = opaque;
    QnsDecoder *d = qns_decoder_new(false, 0);
    uintptr_t failures = d == NULL;

    for (int round = 0; d != NULL && round < N_ROUNDS; round++) {
        size_t empty_frames = 0;

        for (size_t off = 0; off < a->wire->len; off += a->chunk) {
            size_t n = a->wire->len - off < a->chunk ? a->wire->len - off
                                                     : a->chunk;
            QnsResult r = qns_decoder_feed(d, a->counters, a->wire->data + off,
                                           n, on_frame_count, a);
            empty_frames += r == QNS_RESULT_EMPTY_FRAME;
            failures += r != QNS_RESULT_OK && r != QNS_RESULT_EMPTY_FRAME;
        }
        failures += empty_frames != 1;
    }
    failures += a->frames != (size_t)N_ROUNDS * N_THREAD_FRAMES;
    failures += qns_decoder_reset(d, a->counters) != QNS_RESULT_OK;
    qns_decoder_free(d);

    for (int i = 0; i < N_PER_THREAD; i++) {
        failures += qns_counters_count_packet(a->counters, QNS_DIRECTION_RX, 3) !=
                    QNS_RESULT_OK;
    }
    return (void *)failures;
}

static void test_counters_threads(void)
{
    NetFilterCounters *c = qns_counters_new();
    pthread_t threads[N_THREADS];
    ThreadArg args[N_THREADS];
    QnsCounterStats last_indev = { NULL, 0, 0 }, last_rx = { NULL, 0, 0 };
    Buf wire = { 0 };
    uint64_t round_bytes = 0;
    uint64_t n_frames = (uint64_t)N_THREADS * N_ROUNDS * N_THREAD_FRAMES;

    CHECK(c != NULL);
    for (size_t i = 0; i < N_THREAD_FRAMES; i++) {
        uint8_t *payload = make_payload(thread_frame_lens[i], (unsigned)i);

        buf_frame(&wire, false, payload, (uint32_t)thread_frame_lens[i], 0);
        round_bytes += thread_frame_lens[i];
        free(payload);
    }
    buf_frame(&wire, false, "", 0, 0);

    for (int i = 0; i < N_THREADS; i++) {
        /* Chunkings that cut frames in different places in each thread. */
        static const size_t chunks[N_THREADS] = { 1, 7, 500, SIZE_MAX };

        args[i].counters = c;
        args[i].wire = &wire;
        args[i].chunk = chunks[i];
        args[i].frames = 0;
        CHECK(pthread_create(&threads[i], NULL, count_thread, &args[i]) == 0);
    }
    /* Read while they count: every read is at least the one before. */
    for (int i = 0; i < 50; i++) {
        QnsCounterStats indev = read_counter(c, QNS_COUNTER_ID_INDEV);
        QnsCounterStats rx = read_direction(c, QNS_DIRECTION_RX);

        CHECK(indev.packets >= last_indev.packets);
        CHECK(indev.bytes >= last_indev.bytes);
        CHECK(indev.packets <= n_frames);
        CHECK(rx.packets >= last_rx.packets);
        CHECK(rx.bytes >= last_rx.bytes);
        CHECK(rx.packets <= (uint64_t)N_THREADS * N_PER_THREAD);
        last_indev = indev;
        last_rx = rx;
    }
    for (int i = 0; i < N_THREADS; i++) {
        void *failures = NULL;
        CHECK(pthread_join(threads[i], &failures) == 0);
        CHECK(failures == NULL);
        CHECK_EQ(args[i].frames, (uint64_t)N_ROUNDS * N_THREAD_FRAMES);
    }
    CHECK_COUNT(c, QNS_COUNTER_ID_INDEV, n_frames,
                round_bytes * N_THREADS * N_ROUNDS);
    /* One empty frame per round: its 4-byte header thrown away. */
    CHECK_COUNT(c, QNS_COUNTER_ID_INDEV_ERRORS, N_THREADS * N_ROUNDS,
                4 * N_THREADS * N_ROUNDS);
    CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV, 0, 0);
    CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV_ERRORS, 0, 0);
    CHECK_DIRECTION(c, QNS_DIRECTION_RX, N_THREADS * N_PER_THREAD,
                    3 * N_THREADS * N_PER_THREAD);
    CHECK_DIRECTION(c, QNS_DIRECTION_TX, 0, 0);
    buf_free(&wire);
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
    NetFilterCounters *c = qns_counters_new();
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
        NetFilterCounters *c = qns_counters_new();
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
        NetFilterCounters *c = qns_counters_new();
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
        NetFilterCounters *c = qns_counters_new();
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
        NetFilterCounters *c = qns_counters_new();
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
        NetFilterCounters *c = qns_counters_new();
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
        NetFilterCounters *c = qns_counters_new();
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
    NetFilterCounters *c = qns_counters_new();
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
        NetFilterCounters *c = qns_counters_new();
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
    NetFilterCounters *counters;
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
    CHECK_STR(qns_decoder_error_message(re->self),
              qns_result_message(QNS_RESULT_BUSY));
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
                   qns_counters_new(), 0 };
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
    NetFilterCounters *c = qns_counters_new();
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
/* Outdev */

static struct iovec iov(const void *base, size_t len)
{
    struct iovec v;
    v.iov_base = (void *)base;
    v.iov_len = len;
    return v;
}

/*
 * The outdev queue: frames pushed, written in uneven pieces as a chardev
 * that takes only some bytes at a time would, counted once whole; the
 * backlog bound and its water marks; discard; NULL arguments.
 */
static void test_outdev(void)
{
    NetFilterCounters *c = qns_counters_new();
    QnsOutdev *q = qns_outdev_new(true, 0, 64);
    uint8_t written[256];
    size_t n_written = 0, len, dropped = 99;
    const uint8_t *data;
    struct iovec v[3];

    CHECK(c != NULL && q != NULL);
    /* water marks for a 64-byte bound: high 64 / 16 = 4, low 64 / 64 = 1 */
    CHECK(!qns_outdev_congested(q) && qns_outdev_drained(q));
    v[0] = iov("hello", 5);
    v[1] = iov(" world", 6);
    CHECK_RESULT(qns_outdev_push(q, c, v, 2, 2), QNS_RESULT_OK);
    CHECK_RESULT(qns_outdev_push(q, c, v, 1, 2), QNS_RESULT_OK);
    CHECK_RESULT(qns_outdev_push(q, c, v, 0, 2), QNS_RESULT_EMPTY_FRAME);
    /* 8 + 11 + 8 + 5 = 32 queued; another 8 + 11 + 32 > 64 is refused. */
    CHECK_RESULT(qns_outdev_push(q, c, v, 2, 2), QNS_RESULT_OK);
    CHECK_RESULT(qns_outdev_push(q, c, v, 2, 2), QNS_RESULT_BACKLOG_FULL);
    /* An empty frame into the full backlog: nothing to write, no error. */
    CHECK_RESULT(qns_outdev_push(q, c, v, 0, 2), QNS_RESULT_EMPTY_FRAME);
    /* counted without the 2-byte "vnet header" each payload starts with */
    CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV_ERRORS, 1, 9);
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
            0, 0, 0, 11, 0, 0, 0, 2, 'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o',
            'r', 'l', 'd', 0, 0, 0, 5, 0, 0, 0, 2, 'h', 'e', 'l', 'l', 'o',
        };
        CHECK_EQ(n_written, sizeof(want));
        CHECK(memcmp(written, want, sizeof(want)) == 0);
    }
    CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV, 2, 12);
    CHECK_RESULT(qns_outdev_pending(q, &data, &len), QNS_RESULT_OK);
    CHECK_EQ(len, 19);
    CHECK_RESULT(qns_outdev_advance(q, c, 20), QNS_RESULT_INVALID_ARGUMENT);
    CHECK(!qns_outdev_mid_frame(q));
    CHECK_RESULT(qns_outdev_advance(q, c, 3), QNS_RESULT_OK);
    CHECK(qns_outdev_mid_frame(q));
    /* The peer is gone: the partly written frame is dropped and counted. */
    CHECK_RESULT(qns_outdev_discard(q, c, &dropped), QNS_RESULT_OK);
    CHECK_EQ(dropped, 1);
    CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV_ERRORS, 2, 18);
    CHECK_RESULT(qns_outdev_pending(q, &data, &len), QNS_RESULT_OK);
    CHECK_EQ(len, 0);
    CHECK(!qns_outdev_congested(q) && qns_outdev_drained(q));
    CHECK(!qns_outdev_congested(NULL) && qns_outdev_drained(NULL));
    CHECK(!qns_outdev_mid_frame(q) && !qns_outdev_mid_frame(NULL));

    /* Three pieces, one of them empty, into one contiguous frame. */
    {
        static const uint8_t want[] = { 0, 0, 0, 5, 0, 0, 0, 2,
                                        'a', 'b', 'c', 'd', 'e' };
        v[0] = iov("ab", 2);
        v[1] = iov(NULL, 0);
        v[2] = iov("cde", 3);
        CHECK_RESULT(qns_outdev_push(q, c, v, 3, 2), QNS_RESULT_OK);
        CHECK_RESULT(qns_outdev_pending(q, &data, &len), QNS_RESULT_OK);
        CHECK_EQ(len, sizeof(want));
        CHECK(memcmp(data, want, sizeof(want)) == 0);
        /* Written by a chardev, not counted (NULL counters). */
        CHECK_RESULT(qns_outdev_advance(q, NULL, len), QNS_RESULT_OK);
        CHECK_RESULT(qns_outdev_pending(q, &data, &len), QNS_RESULT_OK);
        CHECK_EQ(len, 0);
        CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV, 2, 12);
        /* Only empty pieces: an empty frame. */
        v[0] = iov("", 0);
        v[2] = iov("", 0);
        CHECK_RESULT(qns_outdev_push(q, c, v, 3, 0), QNS_RESULT_EMPTY_FRAME);
        CHECK_RESULT(qns_outdev_push(q, c, NULL, 0, 0), QNS_RESULT_EMPTY_FRAME);
        CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV_ERRORS, 2, 18);
    }

    CHECK_RESULT(qns_outdev_push(NULL, c, v, 1, 0), QNS_RESULT_NULL_POINTER);
    CHECK_RESULT(qns_outdev_push(q, c, NULL, 1, 0), QNS_RESULT_NULL_POINTER);
    /* A NULL piece that claims bytes. */
    v[0] = iov("abc", 3);
    v[1] = iov(NULL, 2);
    CHECK_RESULT(qns_outdev_push(q, c, v, 2, 0), QNS_RESULT_NULL_POINTER);
    CHECK_RESULT(qns_outdev_pending(NULL, &data, &len), QNS_RESULT_NULL_POINTER);
    CHECK_RESULT(qns_outdev_pending(q, NULL, &len), QNS_RESULT_NULL_POINTER);
    CHECK_RESULT(qns_outdev_pending(q, &data, NULL), QNS_RESULT_NULL_POINTER);
    CHECK_RESULT(qns_outdev_advance(NULL, c, 0), QNS_RESULT_NULL_POINTER);
    CHECK_RESULT(qns_outdev_discard(NULL, c, NULL), QNS_RESULT_NULL_POINTER);
    CHECK_RESULT(qns_outdev_discard(q, NULL, NULL), QNS_RESULT_OK);
    /* None of them queued or counted anything. */
    CHECK_RESULT(qns_outdev_pending(q, &data, &len), QNS_RESULT_OK);
    CHECK_EQ(len, 0);
    CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV, 2, 12);
    CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV_ERRORS, 2, 18);
    qns_outdev_free(NULL);
    qns_outdev_free(q);
    qns_counters_free(c);
}

/* The maximum payload: 0 means QNS_DEFAULT_MAX_FRAME_LEN. */
/*
 * colo-compare's queue: no bound but its own, its releases counted in
 * released with their whole payloads, each one's wait in release-latency,
 * what the peer never got in send-errors.
 */
static void test_outdev_count_as(void)
{
    NetFilterCounters *c = qns_counters_new();
    QnsOutdev *q = qns_outdev_new(true, 0, SIZE_MAX);
    const uint8_t *data;
    uint8_t payload[1000] = { 0 };
    struct iovec v = iov(payload, 60);
    size_t len;

    CHECK_RESULT(qns_outdev_count_as(q, QNS_COUNTER_ID_RELEASED,
                                     QNS_COUNTER_ID_SEND_ERRORS,
                                     QNS_COUNTER_ID_RELEASED),
                 QNS_RESULT_INVALID_ARGUMENT);
    CHECK_RESULT(qns_outdev_count_as(q, QNS_COUNTER_ID_RELEASED, 999,
                                     QNS_COUNTER_ID_RELEASE_LATENCY),
                 QNS_RESULT_INVALID_ARGUMENT);
    CHECK_RESULT(qns_outdev_count_as(q, QNS_COUNTER_ID_RELEASED,
                                     QNS_COUNTER_ID_SEND_ERRORS,
                                     QNS_COUNTER_ID_RELEASE_LATENCY),
                 QNS_RESULT_OK);
    CHECK_RESULT(qns_outdev_push_at(q, c, &v, 1, 12, 1000), QNS_RESULT_OK);
    CHECK_RESULT(qns_outdev_push_at(q, c, &v, 1, 12, 1090), QNS_RESULT_OK);
    CHECK_RESULT(qns_outdev_pending(q, &data, &len), QNS_RESULT_OK);
    CHECK_EQ(len, 2 * (8 + 60));
    /* the first one whole at 1100 us, the second 40 us later */
    CHECK_RESULT(qns_outdev_advance_at(q, c, 8 + 60 + 1, 1100), QNS_RESULT_OK);
    CHECK_RESULT(qns_outdev_advance_at(q, c, 8 + 60 - 1, 1140), QNS_RESULT_OK);
    CHECK_COUNT(c, QNS_COUNTER_ID_RELEASED, 2, 120);
    {
        /* 100 and 50 us: one event in each one's bucket, and their sum */
        static const uint32_t latency[] = { QNS_COUNTER_ID_RELEASE_LATENCY };
        QnsStatsList *list = stats_of_values(c, latency, 1, 0);
        const QnsFilterStats *f = &list->filters[0];
        /* after the filter's four direction values */
        const QnsStatValue *h = &f->values[f->n_values - 2];

        CHECK_STR(h->name, "release-latency");
        CHECK_EQ(h->value, 2);
        CHECK_EQ(h->buckets[7], 1);
        CHECK_EQ(h->buckets[6], 1);
        CHECK_STR(h[1].name, "release-latency-sum");
        CHECK_EQ(h[1].value, 150);
        qns_stats_list_free(list);
    }
    CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV, 0, 0);
    /* A filter's bound is far below what a checkpoint may flush. */
    v = iov(payload, sizeof(payload));
    for (int i = 0; i < 5000; i++) {
        CHECK_RESULT(qns_outdev_push_at(q, c, &v, 1, 0, 0), QNS_RESULT_OK);
    }
    CHECK(qns_outdev_congested(q));
    CHECK_RESULT(qns_outdev_discard(q, c, NULL), QNS_RESULT_OK);
    CHECK_COUNT(c, QNS_COUNTER_ID_SEND_ERRORS, 5000, 5000 * sizeof(payload));
    CHECK_RESULT(qns_outdev_count_as(NULL, 0, 0, 0), QNS_RESULT_NULL_POINTER);
    qns_outdev_free(q);
    qns_counters_free(c);
}

static void test_outdev_max_frame_len(void)
{
    static const uint32_t maxes[] = { 0, 10 };

    for (size_t k = 0; k < 2; k++) {
        uint32_t max = maxes[k] ? maxes[k] : QNS_DEFAULT_MAX_FRAME_LEN;
        uint8_t *payload = make_payload(max + 1, 9);
        NetFilterCounters *c = qns_counters_new();
        QnsOutdev *q = qns_outdev_new(false, maxes[k], 0);
        const uint8_t *data = NULL;
        size_t len = 99;
        struct iovec v[2];

        CHECK(c != NULL && q != NULL);
        /* One byte over, in two pieces: refused and counted. */
        v[0] = iov(payload, max);
        v[1] = iov(payload + max, 1);
        CHECK_RESULT(qns_outdev_push(q, c, v, 2, 0),
                     QNS_RESULT_FRAME_TOO_LARGE);
        CHECK_RESULT(qns_outdev_pending(q, &data, &len), QNS_RESULT_OK);
        CHECK_EQ(len, 0);
        CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV_ERRORS, 1, max + 1);
        CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV, 0, 0);

        /* Exactly the maximum. */
        CHECK_RESULT(qns_outdev_push(q, c, v, 1, 0), QNS_RESULT_OK);
        CHECK_RESULT(qns_outdev_pending(q, &data, &len), QNS_RESULT_OK);
        CHECK_EQ(len, 4 + (uint64_t)max);
        CHECK(memcmp(data + 4, payload, max) == 0);
        CHECK_RESULT(qns_outdev_advance(q, c, len), QNS_RESULT_OK);
        CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV, 1, max);
        CHECK_COUNT(c, QNS_COUNTER_ID_OUTDEV_ERRORS, 1, max + 1);

        qns_outdev_free(q);
        qns_counters_free(c);
        free(payload);
    }
}

/* What the outdev writes, the decoder reads, for any payload size. */
static void test_round_trip(void)
{
    static const size_t lens[] = { 1, 14, 60, 1514, 9000, 65535 };
    enum { N = sizeof(lens) / sizeof(lens[0]) };

    for (int vnet = 0; vnet <= 1; vnet++) {
        NetFilterCounters *out = qns_counters_new();
        NetFilterCounters *in = qns_counters_new();
        QnsOutdev *q = qns_outdev_new(vnet, 0, 0);
        QnsDecoder *d = qns_decoder_new(vnet, 0);
        uint8_t *payloads[N];
        Expected expected[N];
        Recorder r = { expected, N, 0 };
        Buf wire = { 0 };
        uint64_t total = 0, headers = 0;
        const uint8_t *data;
        size_t len;

        CHECK(out != NULL && in != NULL && q != NULL && d != NULL);
        for (size_t i = 0; i < N; i++) {
            uint32_t vnet_len = (uint32_t)(lens[i] < 12 ? lens[i] : 12);
            /* The payload in two pieces. */
            size_t split = lens[i] / 3;
            struct iovec v[2];

            payloads[i] = make_payload(lens[i], (unsigned)(100 + i));
            v[0] = iov(payloads[i], split);
            v[1] = iov(payloads[i] + split, lens[i] - split);
            expected[i].payload = payloads[i];
            expected[i].len = lens[i];
            expected[i].vnet_hdr_len = vnet ? vnet_len : 0;
            total += lens[i];
            headers += vnet_len;
            CHECK_RESULT(qns_outdev_push(q, out, v, 2, vnet_len),
                         QNS_RESULT_OK);
        }
        /* Written 1000 bytes at a time. */
        for (;;) {
            CHECK_RESULT(qns_outdev_pending(q, &data, &len), QNS_RESULT_OK);
            if (len == 0) {
                break;
            }
            len = len < 1000 ? len : 1000;
            buf_put(&wire, data, len);
            CHECK_RESULT(qns_outdev_advance(q, out, len), QNS_RESULT_OK);
        }
        /*
         * The outdev counts each payload without the vnet header in front
         * of it (the netdev's, whether or not the wire carries its
         * length); the indev counts what it reads.
         */
        CHECK_COUNT(out, QNS_COUNTER_ID_OUTDEV, N, total - headers);
        CHECK_COUNT(out, QNS_COUNTER_ID_OUTDEV_ERRORS, 0, 0);
        CHECK_RESULT(feed_copy(d, in, wire.data, wire.len, &r), QNS_RESULT_OK);
        CHECK_EQ(r.n_seen, N);
        CHECK_COUNT(in, QNS_COUNTER_ID_INDEV, N, total);
        CHECK_COUNT(in, QNS_COUNTER_ID_INDEV_ERRORS, 0, 0);

        for (size_t i = 0; i < N; i++) {
            free(payloads[i]);
        }
        buf_free(&wire);
        qns_decoder_free(d);
        qns_outdev_free(q);
        qns_counters_free(in);
        qns_counters_free(out);
    }
}

/* ------------------------------------------------------------------------ */
/* Stats lists */

/*
 * The filter-specific counters can only be counted by the code that counts
 * them in QEMU: the decoder (indev, indev-errors) and the outdev (outdev,
 * outdev-errors). These put known values into them.
 */

/* `n` frames of `len` (> 0) bytes decoded: indev += (n, n * len). */
static void count_indev(NetFilterCounters *c, size_t n, size_t len)
{
    QnsDecoder *d = qns_decoder_new(false, 0);
    uint8_t *payload = make_payload(len, 5);
    Buf wire = { 0 };

    CHECK(d != NULL);
    for (size_t i = 0; i < n; i++) {
        buf_frame(&wire, false, payload, (uint32_t)len, 0);
    }
    CHECK_RESULT(qns_decoder_feed(d, c, wire.data, wire.len, on_frame_ignore,
                                  NULL),
                 QNS_RESULT_OK);
    qns_decoder_free(d);
    buf_free(&wire);
    free(payload);
}

/* `n` empty frames rejected: indev-errors += (n, 4 * n). */
static void count_indev_errors(NetFilterCounters *c, size_t n)
{
    QnsDecoder *d = qns_decoder_new(false, 0);
    static const uint8_t empty[4] = { 0, 0, 0, 0 };

    CHECK(d != NULL);
    for (size_t i = 0; i < n; i++) {
        CHECK_RESULT(qns_decoder_feed(d, c, empty, sizeof(empty),
                                      on_frame_ignore, NULL),
                     QNS_RESULT_EMPTY_FRAME);
    }
    qns_decoder_free(d);
}

/*
 * `n` frames of `len` (> 0) bytes queued, then written whole (outdev +=
 * (n, n * len)) or, with `drop`, discarded (outdev-errors += (n, n * len)).
 */
static void count_outdev(NetFilterCounters *c, size_t n, size_t len, bool drop)
{
    QnsOutdev *q = qns_outdev_new(false, 0, 0);
    uint8_t *payload = make_payload(len, 6);
    struct iovec v = iov(payload, len);
    const uint8_t *data;
    size_t pending, dropped = 0;

    CHECK(q != NULL);
    for (size_t i = 0; i < n; i++) {
        CHECK_RESULT(qns_outdev_push(q, c, &v, 1, 0), QNS_RESULT_OK);
    }
    if (drop) {
        CHECK_RESULT(qns_outdev_discard(q, c, &dropped), QNS_RESULT_OK);
        CHECK_EQ(dropped, n);
    } else {
        CHECK_RESULT(qns_outdev_pending(q, &data, &pending), QNS_RESULT_OK);
        CHECK_EQ(pending, n * (4 + len));
        CHECK_RESULT(qns_outdev_advance(q, c, pending), QNS_RESULT_OK);
    }
    qns_outdev_free(q);
    free(payload);
}

typedef struct Filters {
    NetFilterCounters *redirector, *mirror, *buffer;
} Filters;

static Filters make_filters(void)
{
    Filters f = { qns_counters_new(), qns_counters_new(), qns_counters_new() };

    CHECK(f.redirector != NULL && f.mirror != NULL && f.buffer != NULL);

    qns_counters_count_packet(f.redirector, QNS_DIRECTION_TX, 100);
    qns_counters_count_packet(f.redirector, QNS_DIRECTION_TX, 50);
    qns_counters_count_packet(f.redirector, QNS_DIRECTION_RX, 70);
    count_indev(f.redirector, 3, 100);
    count_outdev(f.redirector, 2, 100, false);
    count_indev_errors(f.redirector, 2);
    count_outdev(f.redirector, 4, 10, true);

    qns_counters_count_packet(f.mirror, QNS_DIRECTION_RX, 60);
    count_outdev(f.mirror, 1, 60, false);
    count_outdev(f.mirror, 7, 10, true);
    /* Counted, but not a counter a mirror reports. */
    count_indev(f.mirror, 9, 1);

    qns_counters_count_packet(f.buffer, QNS_DIRECTION_RX, 1514);
    qns_counters_count_packet(f.buffer, QNS_DIRECTION_RX, 1514);
    qns_counters_count_packet(f.buffer, QNS_DIRECTION_TX, 42);
    /* Likewise. */
    count_outdev(f.buffer, 5, 1, false);
    return f;
}

static void free_filters(Filters *f)
{
    qns_counters_free(f->redirector);
    qns_counters_free(f->mirror);
    qns_counters_free(f->buffer);
}

#define CHECK_COUNTER_STATS(cs, name_, p, b)                            \
    do {                                                                \
        CHECK_STR((cs).name, (name_));                                  \
        CHECK_EQ((cs).packets, (p));                                    \
        CHECK_EQ((cs).bytes, (b));                                      \
    } while (0)

/* The caller's strings, which the list must point to (not copies of). */
static char r_name[] = "r0", m_name[] = "m0", b_name[] = "b0";
static char net0[] = "net0", net1[] = "net1";
static char r_type[] = "filter-redirector", m_type[] = "filter-mirror",
            b_type[] = "filter-buffer";

/* The redirector, with its counters in two calls and a chosen order. */
static void add_redirector(NetFilterStatsBuilder *b, const Filters *f)
{
    static const uint32_t first[] = { QNS_COUNTER_ID_OUTDEV_ERRORS,
                                      QNS_COUNTER_ID_INDEV };
    static const uint32_t second[] = { QNS_COUNTER_ID_INDEV_ERRORS,
                                       QNS_COUNTER_ID_OUTDEV };

    CHECK_RESULT(qns_stats_builder_add(b, r_name, net0, r_type, f->redirector),
                 QNS_RESULT_OK);
    CHECK_RESULT(qns_stats_builder_add_counters(b, f->redirector, first, 2),
                 QNS_RESULT_OK);
    CHECK_RESULT(qns_stats_builder_add_counters(b, f->redirector, second, 2),
                 QNS_RESULT_OK);
}

static void check_redirector(const QnsFilterStats *s)
{
    CHECK(s->name == r_name);
    CHECK(s->netdev == net0);
    CHECK(s->qom_type == r_type);
    CHECK_EQ(s->packets_tx, 2);
    CHECK_EQ(s->bytes_tx, 150);
    CHECK_EQ(s->packets_rx, 1);
    CHECK_EQ(s->bytes_rx, 70);
    CHECK_EQ(s->n_counters, 4);
    CHECK(s->counters != NULL);
    CHECK_COUNTER_STATS(s->counters[0], "outdev-errors", 4, 40);
    CHECK_COUNTER_STATS(s->counters[1], "indev", 3, 300);
    CHECK_COUNTER_STATS(s->counters[2], "indev-errors", 2, 8);
    CHECK_COUNTER_STATS(s->counters[3], "outdev", 2, 200);
}

static void check_mirror(const QnsFilterStats *s)
{
    CHECK(s->name == m_name);
    CHECK(s->netdev == net1);
    CHECK(s->qom_type == m_type);
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
    CHECK(s->name == b_name);
    CHECK(s->netdev == net0); /* the same string as the redirector's */
    CHECK(s->qom_type == b_type);
    CHECK_EQ(s->packets_tx, 1);
    CHECK_EQ(s->bytes_tx, 42);
    CHECK_EQ(s->packets_rx, 2);
    CHECK_EQ(s->bytes_rx, 3028);
    CHECK_EQ(s->n_counters, 0);
    CHECK(s->counters == NULL);
}

static void test_stats_builder(void)
{
    Filters f = make_filters();
    static const uint32_t indev[] = { QNS_COUNTER_ID_INDEV };
    static const uint32_t mirror_ids[] = { QNS_COUNTER_ID_OUTDEV,
                                           QNS_COUNTER_ID_OUTDEV_ERRORS };

    /* The three filters, in the order added, counters read when added. */
    {
        NetFilterStatsBuilder *b = qns_stats_builder_new();
        QnsStatsList *list = NULL;
        const uint32_t unknown[] = { QNS_COUNTER_ID_INDEV, N_COUNTER_IDS };
        static const uint32_t max_id[] = { UINT32_MAX };

        CHECK(b != NULL);
        /* No filter to add counters to yet. */
        CHECK_RESULT(qns_stats_builder_add_counters(b, f.redirector, indev, 1),
                     QNS_RESULT_INVALID_ARGUMENT);
        CHECK_RESULT(qns_stats_builder_add_counters(b, f.redirector, NULL, 0),
                     QNS_RESULT_INVALID_ARGUMENT);

        add_redirector(b, &f);
        /* Unknown ids, even after a good one: nothing added. */
        CHECK_RESULT(qns_stats_builder_add_counters(b, f.redirector, unknown, 2),
                     QNS_RESULT_INVALID_ARGUMENT);
        CHECK_RESULT(qns_stats_builder_add_counters(b, f.redirector, max_id, 1),
                     QNS_RESULT_INVALID_ARGUMENT);
        /* NULL arguments: nothing added either. */
        CHECK_RESULT(qns_stats_builder_add_counters(NULL, f.redirector, indev,
                                                    1),
                     QNS_RESULT_NULL_POINTER);
        CHECK_RESULT(qns_stats_builder_add_counters(b, NULL, indev, 1),
                     QNS_RESULT_NULL_POINTER);
        CHECK_RESULT(qns_stats_builder_add_counters(b, f.redirector, NULL, 1),
                     QNS_RESULT_NULL_POINTER);
        CHECK_RESULT(qns_stats_builder_add(NULL, r_name, net0, r_type,
                                           f.redirector),
                     QNS_RESULT_NULL_POINTER);
        CHECK_RESULT(qns_stats_builder_add(b, NULL, net0, r_type, f.redirector),
                     QNS_RESULT_NULL_POINTER);
        CHECK_RESULT(qns_stats_builder_add(b, r_name, NULL, r_type,
                                           f.redirector),
                     QNS_RESULT_NULL_POINTER);
        CHECK_RESULT(qns_stats_builder_add(b, r_name, net0, NULL, f.redirector),
                     QNS_RESULT_NULL_POINTER);
        CHECK_RESULT(qns_stats_builder_add(b, r_name, net0, r_type, NULL),
                     QNS_RESULT_NULL_POINTER);
        /* No ids: nothing to add, not an error. */
        CHECK_RESULT(qns_stats_builder_add_counters(b, f.redirector, NULL, 0),
                     QNS_RESULT_OK);
        CHECK_RESULT(qns_stats_builder_add_counters(b, f.redirector, indev, 0),
                     QNS_RESULT_OK);

        /* Counted after the add and add_counters: not in this list. */
        qns_counters_count_packet(f.redirector, QNS_DIRECTION_TX, 1);
        count_indev(f.redirector, 1, 5);

        CHECK_RESULT(qns_stats_builder_add(b, m_name, net1, m_type, f.mirror),
                     QNS_RESULT_OK);
        CHECK_RESULT(qns_stats_builder_add_counters(b, f.mirror, mirror_ids, 2),
                     QNS_RESULT_OK);
        CHECK_RESULT(qns_stats_builder_add(b, b_name, net0, b_type, f.buffer),
                     QNS_RESULT_OK);
        CHECK_RESULT(qns_stats_builder_finish(b, &list), QNS_RESULT_OK);
        CHECK(list != NULL);
        CHECK_EQ(list->len, 3);
        CHECK(list->filters != NULL);
        check_redirector(&list->filters[0]);
        check_mirror(&list->filters[1]);
        check_buffer(&list->filters[2]);
        qns_stats_list_free(list);

        /* The later counts are in the counters themselves. */
        CHECK_DIRECTION(f.redirector, QNS_DIRECTION_TX, 3, 151);
        CHECK_COUNT(f.redirector, QNS_COUNTER_ID_INDEV, 4, 305);
    }

    /* Many filters, each with its own number of counters in its own order,
     * all read from the mirror's counters. */
    {
        enum { N_MANY = 40 };
        static const uint64_t want[4][2] = { { 9, 9 }, { 1, 60 }, { 0, 0 },
                                             { 7, 70 } };
        static char names[N_MANY][8];
        NetFilterStatsBuilder *b = qns_stats_builder_new();
        QnsStatsList *list = NULL;

        CHECK(b != NULL);
        for (size_t i = 0; i < N_MANY; i++) {
            uint32_t ids[4];
            size_t n = i % 5;

            snprintf(names[i], sizeof(names[i]), "f%zu", i);
            for (size_t k = 0; k < n; k++) {
                ids[k] = (uint32_t)((i + k) % 4);
            }
            CHECK_RESULT(qns_stats_builder_add(b, names[i], net1, m_type,
                                               f.mirror),
                         QNS_RESULT_OK);
            CHECK_RESULT(qns_stats_builder_add_counters(b, f.mirror,
                                                        n ? ids : NULL, n),
                         QNS_RESULT_OK);
        }
        CHECK_RESULT(qns_stats_builder_finish(b, &list), QNS_RESULT_OK);
        CHECK(list != NULL);
        CHECK_EQ(list->len, N_MANY);
        for (size_t i = 0; i < N_MANY; i++) {
            const QnsFilterStats *s = &list->filters[i];
            size_t n = i % 5;

            CHECK(s->name == names[i]);
            CHECK(s->netdev == net1);
            CHECK(s->qom_type == m_type);
            CHECK_EQ(s->packets_rx, 1);
            CHECK_EQ(s->bytes_rx, 60);
            CHECK_EQ(s->n_counters, n);
            CHECK(n == 0 ? s->counters == NULL : s->counters != NULL);
            for (size_t k = 0; k < n; k++) {
                size_t id = (i + k) % 4;
                CHECK_COUNTER_STATS(s->counters[k], counter_names[id],
                                    want[id][0], want[id][1]);
            }
        }
        qns_stats_list_free(list);
    }

    /* No filters at all: an empty list (the refused add_counters added
     * nothing). */
    {
        NetFilterStatsBuilder *b = qns_stats_builder_new();
        QnsStatsList *list = NULL;

        CHECK(b != NULL);
        CHECK_RESULT(qns_stats_builder_add_counters(b, f.mirror, mirror_ids, 2),
                     QNS_RESULT_INVALID_ARGUMENT);
        CHECK_RESULT(qns_stats_builder_finish(b, &list), QNS_RESULT_OK);
        CHECK(list != NULL);
        CHECK_EQ(list->len, 0);
        CHECK(list->filters == NULL);
        qns_stats_list_free(list);
    }

    /* NULL pointers to finish. */
    {
        NetFilterStatsBuilder *b;
        QnsStatsList *list = NULL;

        CHECK_RESULT(qns_stats_builder_finish(NULL, &list),
                     QNS_RESULT_NULL_POINTER);
        CHECK(list == NULL);

        /* A NULL list still consumes the builder and what is in it
         * (valgrind: no leak). */
        b = qns_stats_builder_new();
        CHECK(b != NULL);
        add_redirector(b, &f);
        CHECK_RESULT(qns_stats_builder_add(b, m_name, net1, m_type, f.mirror),
                     QNS_RESULT_OK);
        CHECK_RESULT(qns_stats_builder_finish(b, NULL),
                     QNS_RESULT_NULL_POINTER);

        /* An abandoned builder, with filters in it. */
        b = qns_stats_builder_new();
        CHECK(b != NULL);
        add_redirector(b, &f);
        qns_stats_builder_free(b);

        qns_stats_builder_free(NULL);
        qns_stats_list_free(NULL);
    }

    free_filters(&f);
}

/*
 * What colo-compare and the filters other than the redirector use: snapshot
 * counters that go up, down and are set (from several threads at once), a
 * decoder that counts in other counters, an entry that is not a filter, and
 * the query-stats schemas.
 */
typedef struct SnapshotThread {
    NetFilterCounters *counters;
    unsigned rounds;
} SnapshotThread;

static void *snapshot_thread(void *opaque)
{
    SnapshotThread *t = opaque;
    unsigned i;

    for (i = 0; i < t->rounds; i++) {
        qns_counters_add(t->counters, QNS_COUNTER_ID_PRIMARY_QUEUED, 1, 100);
        qns_counters_add(t->counters, QNS_COUNTER_ID_RELEASED, 1, 100);
        qns_counters_sub(t->counters, QNS_COUNTER_ID_PRIMARY_QUEUED, 1, 100);
    }
    return NULL;
}

static void test_snapshots_objects_and_schemas(void)
{
    NetFilterCounters *c = qns_counters_new();
    SnapshotThread t = { c, 100000 };
    pthread_t threads[4];
    QnsDecoder *d;
    Buf in = { 0 };
    uint8_t good[60];
    size_t i;

    CHECK(c != NULL);
    for (i = 0; i < 4; i++) {
        CHECK_EQ(pthread_create(&threads[i], NULL, snapshot_thread, &t), 0);
    }
    for (i = 0; i < 4; i++) {
        CHECK_EQ(pthread_join(threads[i], NULL), 0);
    }
    CHECK_COUNT(c, QNS_COUNTER_ID_PRIMARY_QUEUED, 0, 0);
    CHECK_COUNT(c, QNS_COUNTER_ID_RELEASED, 400000, 40000000);
    CHECK_RESULT(qns_counters_set(c, QNS_COUNTER_ID_CONNECTIONS, 7, 0),
                 QNS_RESULT_OK);
    CHECK_RESULT(qns_counters_set(c, QNS_COUNTER_ID_CONNECTIONS, 3, 0),
                 QNS_RESULT_OK);
    CHECK_COUNT(c, QNS_COUNTER_ID_CONNECTIONS, 3, 0);
    CHECK_RESULT(qns_counters_add(c, N_COUNTER_IDS, 1, 1),
                 QNS_RESULT_INVALID_ARGUMENT);
    CHECK_RESULT(qns_counters_sub(c, N_COUNTER_IDS, 1, 1),
                 QNS_RESULT_INVALID_ARGUMENT);
    CHECK_RESULT(qns_counters_set(c, UINT32_MAX, 1, 1),
                 QNS_RESULT_INVALID_ARGUMENT);
    CHECK_RESULT(qns_counters_add(NULL, 0, 1, 1), QNS_RESULT_NULL_POINTER);

    /* secondary_in: a zero-length frame, then a good one, in its own ids */
    d = qns_decoder_new(false, 0);
    CHECK(d != NULL);
    CHECK_RESULT(qns_decoder_count_as(d, QNS_COUNTER_ID_SECONDARY,
                                      N_COUNTER_IDS),
                 QNS_RESULT_INVALID_ARGUMENT);
    CHECK_RESULT(qns_decoder_count_as(NULL, 0, 0), QNS_RESULT_NULL_POINTER);
    CHECK_RESULT(qns_decoder_count_as(d, QNS_COUNTER_ID_SECONDARY,
                                      QNS_COUNTER_ID_SECONDARY_IN_ERRORS),
                 QNS_RESULT_OK);
    memset(good, 0x5a, sizeof(good));
    buf_be32(&in, 0);
    buf_frame(&in, false, good, sizeof(good), 0);
    CHECK_RESULT(qns_decoder_feed(d, c, in.data, in.len, on_frame_ignore,
                                  NULL),
                 QNS_RESULT_EMPTY_FRAME);
    CHECK_COUNT(c, QNS_COUNTER_ID_SECONDARY, 1, 60);
    CHECK_COUNT(c, QNS_COUNTER_ID_SECONDARY_IN_ERRORS, 1, 4);
    CHECK_COUNT(c, QNS_COUNTER_ID_INDEV, 0, 0);
    CHECK_COUNT(c, QNS_COUNTER_ID_INDEV_ERRORS, 0, 0);
    qns_decoder_free(d);
    buf_free(&in);

    /* an object with no netdev and no directions: only its own values */
    {
        static const uint32_t ids[] = { QNS_COUNTER_ID_RELEASED,
                                        QNS_COUNTER_ID_CONNECTIONS };
        NetFilterStatsBuilder *b = qns_stats_builder_new();
        QnsStatsList *list = NULL;
        const QnsFilterStats *f;

        CHECK_RESULT(qns_stats_builder_add_object(b, NULL, "colo-compare"),
                     QNS_RESULT_NULL_POINTER);
        CHECK_RESULT(qns_stats_builder_add_object(NULL, "cc0", "colo-compare"),
                     QNS_RESULT_NULL_POINTER);
        CHECK_RESULT(qns_stats_builder_add_object(b, "cc0", "colo-compare"),
                     QNS_RESULT_OK);
        CHECK_RESULT(qns_stats_builder_add_counters(b, c, ids, 2),
                     QNS_RESULT_OK);
        CHECK_RESULT(qns_stats_builder_finish(b, &list), QNS_RESULT_OK);
        f = &list->filters[0];
        CHECK_STR(f->name, "cc0");
        CHECK_STR(f->netdev, "");
        CHECK_STR(f->qom_type, "colo-compare");
        CHECK_EQ(f->n_counters, 1); /* connections: an event count */
        CHECK_EQ(f->n_values, 3);
        CHECK_STR(f->values[0].name, "released-packets");
        CHECK_EQ(f->values[0].value, 400000);
        CHECK_STR(f->values[1].name, "released-bytes");
        CHECK_EQ(f->values[1].value, 40000000);
        CHECK_STR(f->values[2].name, "connections");
        CHECK_EQ(f->values[2].value, 3);
        qns_stats_list_free(list);
    }

    /*
     * a duration: a histogram and a sum in the values, not a counter; one
     * event of 3000 us and one of 0 us
     */
    {
        static const uint32_t ids[] = { QNS_COUNTER_ID_HELD,
                                        QNS_COUNTER_ID_HOLD_TIME };
        NetFilterCounters *m = qns_counters_new();
        QnsStatsList *list;
        const QnsFilterStats *f;
        const QnsStatValue *hist;

        CHECK_RESULT(qns_counters_add(m, QNS_COUNTER_ID_HOLD_TIME, 1, 3000),
                     QNS_RESULT_OK);
        CHECK_RESULT(qns_counters_add(m, QNS_COUNTER_ID_HOLD_TIME, 1, 0),
                     QNS_RESULT_OK);
        CHECK_RESULT(qns_counters_add(m, QNS_COUNTER_ID_HELD, 2, 120),
                     QNS_RESULT_OK);
        list = stats_of_values(m, ids, 2, 1);
        f = &list->filters[0];
        CHECK_STR(f->counters[0].name, "held");
        CHECK_EQ(f->n_values, 4 + 4);
        for (size_t k = 0; k < 6; k++) {
            CHECK(f->values[k].buckets == NULL);
            CHECK_EQ(f->values[k].n_buckets, 0);
        }
        hist = &f->values[6];
        CHECK_STR(hist->name, "hold-time");
        CHECK_EQ(hist->value, 2);
        CHECK_EQ(hist->n_buckets, QNS_HISTOGRAM_BUCKETS);
        for (size_t k = 0; k < QNS_HISTOGRAM_BUCKETS; k++) {
            /* 0 us in bucket 0; 3000 us in [2048, 4096), bucket 12 */
            CHECK_EQ(hist->buckets[k], k == 0 || k == 12 ? 1 : 0);
        }
        CHECK_STR(f->values[7].name, "hold-time-sum");
        CHECK_EQ(f->values[7].value, 3000);
        CHECK(f->values[7].buckets == NULL);
        qns_stats_list_free(list);
        qns_counters_free(m);
    }

    /* the schemas: a filter's directions first; units; the end */
    {
        QnsStatSchema v;
        size_t n;

        CHECK(qns_stats_schema(QNS_STATS_PROVIDER_NETFILTER, 0, &v));
        CHECK_STR(v.name, "packets-tx");
        CHECK_EQ(v.kind, QNS_STAT_KIND_CUMULATIVE);
        CHECK_EQ(v.unit, QNS_STAT_UNIT_NONE);
        CHECK(qns_stats_schema(QNS_STATS_PROVIDER_NETFILTER, 2, &v));
        CHECK_STR(v.name, "bytes-tx");
        CHECK_EQ(v.unit, QNS_STAT_UNIT_BYTES);
        for (n = 0; qns_stats_schema(QNS_STATS_PROVIDER_NETFILTER, n, &v);
             n++) {
            if (strcmp(v.name, "hold-time") == 0) {
                CHECK_EQ(v.kind, QNS_STAT_KIND_LOG2_HISTOGRAM);
                CHECK_EQ(v.unit, QNS_STAT_UNIT_SECONDS);
                CHECK_EQ(v.exponent, -6);
            }
            if (strcmp(v.name, "hold-time-sum") == 0) {
                CHECK_EQ(v.kind, QNS_STAT_KIND_CUMULATIVE);
                CHECK_EQ(v.unit, QNS_STAT_UNIT_SECONDS);
            }
            if (strcmp(v.name, "buffered-packets") == 0) {
                CHECK_EQ(v.kind, QNS_STAT_KIND_INSTANT);
            }
        }
        CHECK_EQ(n, 34);
        CHECK(qns_stats_schema(QNS_STATS_PROVIDER_COLO_COMPARE, 0, &v));
        CHECK_STR(v.name, "primary-packets");
        CHECK(!qns_stats_schema(QNS_STATS_PROVIDER_COLO_COMPARE, 1000, &v));
        CHECK(!qns_stats_schema(2, 0, &v));
        CHECK(!qns_stats_schema(QNS_STATS_PROVIDER_NETFILTER, 0, NULL));
    }
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
    test_outdev();
    test_outdev_count_as();
    test_outdev_max_frame_len();
    test_round_trip();
    test_stats_builder();
    test_snapshots_objects_and_schemas();

    printf("%lu passed, 0 failed\n", n_passed);
    return 0;
}
