//! Benchmarks, each a ratio against a baseline measured in the same run:
//!
//! 1. the indev decoder ([`FrameDecoder::feed`], and `qns_decoder_feed`, the
//!    C ABI QEMU's glue calls) against QEMU 10.2.2's own C `net_fill_rstate`
//!    and against `memcpy` of the same bytes (the recv() copy alone: the
//!    limit of any decoder fed by recv());
//! 2. the cost of counting: `FilterCounters::count_packet` and `add` against
//!    a plain, non-atomic `u64` increment.
//!
//! Every measurement is the median of `QNS_BENCH_REPS` samples, taken
//! interleaved (each repetition measures every variant once, in a rotating
//! order), so that load from other jobs hits all of them alike. Ratios are
//! medians of the per-repetition ratios.
//!
//! Run through `run.sh`, which builds QEMU's C decoder first.

use std::{
    ffi::{c_int, c_void},
    hint::black_box,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::Instant,
};

use qemu_netfilter_stats::{
    counters::{FilterCounters, QnsCounterId, QnsDirection},
    decoder::{Decoded, FrameDecoder, DEFAULT_MAX_FRAME_LEN},
    ffi::{
        counters::{qns_counters_count_packet, qns_counters_free, qns_counters_new, QnsCounters},
        decoder::{qns_decoder_feed, qns_decoder_free, qns_decoder_new},
        QnsResult,
    },
};

/// The receive buffer every chunk is copied into first, as recv() would.
const RECV_BUF: usize = 64 * 1024;

/// QEMU's `BenchReader` (see `c/qemu_rstate_driver.c`): a `SocketReadState`
/// and what its finalize callback saw.
#[repr(C)]
struct BenchReader {
    _opaque: [u8; 0],
}

extern "C" {
    fn qns_bench_reader_new(vnet_hdr: bool) -> *mut BenchReader;
    fn qns_bench_reader_free(r: *mut BenchReader);
    fn qns_bench_reader_fill(r: *mut BenchReader, buf: *const u8, size: c_int) -> c_int;
    fn qns_bench_reader_frames(r: *const BenchReader) -> u64;
    fn qns_bench_reader_touched(r: *const BenchReader) -> u64;
}

/// Involuntary context switches of this thread so far.
fn preemptions() -> i64 {
    // SAFETY: getrusage writes one struct rusage, which we own.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut u);
        u.ru_nivcsw
    }
}

/// Samples taken again because the thread was preempted during them.
static RETAKEN: AtomicUsize = AtomicUsize::new(0);
/// Samples kept although preempted (after `MAX_RETAKES` tries).
static KEPT_PREEMPTED: AtomicUsize = AtomicUsize::new(0);
const MAX_RETAKES: usize = 5;

/// Take a sample again (up to `MAX_RETAKES` times) when the scheduler
/// preempted the thread during it: on a machine shared with other jobs, a
/// sample that lost the CPU measures the other job, not the code.
fn unpreempted(mut sample: impl FnMut() -> f64) -> f64 {
    for attempt in 0.. {
        let before = preemptions();
        let t = sample();
        if preemptions() == before {
            return t;
        }
        if attempt == MAX_RETAKES {
            KEPT_PREEMPTED.fetch_add(1, Ordering::Relaxed);
            return t;
        }
        RETAKEN.fetch_add(1, Ordering::Relaxed);
    }
    unreachable!()
}

fn env_or(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// What a frame callback accumulates: the same for every decoder, so that
/// the results can be checked against each other.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
struct Seen {
    frames: u64,
    /// First byte + last byte + length of every frame.
    touched: u64,
}

impl Seen {
    #[inline(always)]
    fn frame(&mut self, payload: &[u8]) {
        self.frames += 1;
        self.touched +=
            u64::from(payload[0]) + u64::from(payload[payload.len() - 1]) + payload.len() as u64;
    }
}

/// The frame callback of the C ABI run.
unsafe extern "C" fn ffi_frame(opaque: *mut c_void, payload: *const u8, len: usize, _vnet: u32) {
    // SAFETY: opaque is the &mut Seen passed to qns_decoder_feed by
    // `Variant::RustFfi`, and payload points to len > 0 bytes during the call.
    unsafe {
        let seen = &mut *opaque.cast::<Seen>();
        seen.frame(std::slice::from_raw_parts(payload, len));
    }
}

/// A framed stream of equal-sized frames, and how it is cut into chunks.
struct Workload {
    frame_len: usize,
    stream: Vec<u8>,
    chunks: Vec<u32>,
    expected: Seen,
}

impl Workload {
    fn new(frame_len: usize, stream_bytes: usize, pattern: &[usize]) -> Self {
        let wire_len = 4 + frame_len;
        let frames = (stream_bytes / wire_len).max(1);
        let mut stream = Vec::with_capacity(frames * wire_len);
        let mut expected = Seen::default();
        for i in 0..frames {
            let start = stream.len();
            stream.extend_from_slice(&(frame_len as u32).to_be_bytes());
            // Varying content, so that the first and last bytes differ.
            stream.extend((0..frame_len).map(|j| (i * 31 + j * 7) as u8));
            expected.frame(&stream[start + 4..]);
        }
        let mut chunks = Vec::new();
        let mut left = stream.len();
        for &size in pattern.iter().cycle() {
            if left == 0 {
                break;
            }
            let n = size.min(left);
            chunks.push(n as u32);
            left -= n;
        }
        Self {
            frame_len,
            stream,
            chunks,
            expected,
        }
    }

    /// Feed the whole stream to `decode`, chunk by chunk, each chunk first
    /// copied into `recv` as recv() would.
    #[inline(always)]
    fn pump(&self, recv: &mut [u8; RECV_BUF], mut decode: impl FnMut(&[u8])) {
        let mut off = 0;
        for &n in &self.chunks {
            let n = n as usize;
            recv[..n].copy_from_slice(&self.stream[off..off + n]);
            off += n;
            // The decoder must see the copy: keep the compiler from reasoning
            // about (or eliding) it.
            decode(black_box(&recv[..n]));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// The recv() copy alone.
    Memcpy,
    /// QEMU's `net_fill_rstate`, with a finalize callback that touches the
    /// frame.
    QemuC,
    /// `FrameDecoder::feed` with a closure that touches the frame.
    RustFeed,
    /// `qns_decoder_feed` (the C ABI, with the filter's counters), as QEMU's
    /// glue calls it, with an `extern "C"` callback.
    RustFfi,
    /// The same without counters: the decoder alone through the C ABI, like
    /// QEMU's C decoder, which counts nothing.
    RustFfiUncounted,
}

const N_VARIANTS: usize = 5;
const VARIANTS: [Variant; N_VARIANTS] = [
    Variant::Memcpy,
    Variant::QemuC,
    Variant::RustFeed,
    Variant::RustFfi,
    Variant::RustFfiUncounted,
];

/// One sample: `passes` passes over the stream; returns seconds. Each
/// variant is its own function, so that a profile tells them apart.
fn sample(variant: Variant, w: &Workload, passes: usize, recv: &mut [u8; RECV_BUF]) -> f64 {
    let (elapsed, seen) = match variant {
        Variant::Memcpy => return sample_memcpy(w, passes, recv),
        Variant::QemuC => sample_qemu_c(w, passes, recv),
        Variant::RustFeed => sample_feed(w, passes, recv),
        Variant::RustFfi => sample_ffi(w, passes, recv, true),
        Variant::RustFfiUncounted => sample_ffi(w, passes, recv, false),
    };
    let want = Seen {
        frames: w.expected.frames * passes as u64,
        touched: w.expected.touched * passes as u64,
    };
    assert_eq!(
        seen, want,
        "{variant:?}: wrong frames for {} bytes",
        w.frame_len
    );
    elapsed
}

#[inline(never)]
fn sample_memcpy(w: &Workload, passes: usize, recv: &mut [u8; RECV_BUF]) -> f64 {
    let t = Instant::now();
    for _ in 0..passes {
        w.pump(recv, |_| {});
    }
    t.elapsed().as_secs_f64()
}

#[inline(never)]
fn sample_qemu_c(w: &Workload, passes: usize, recv: &mut [u8; RECV_BUF]) -> (f64, Seen) {
    // SAFETY: plain C constructor; checked for NULL below.
    let r = unsafe { qns_bench_reader_new(false) };
    assert!(!r.is_null());
    let mut failed = 0;
    let t = Instant::now();
    for _ in 0..passes {
        w.pump(recv, |chunk| {
            // SAFETY: r is live; chunk is chunk.len() (<= 64 KiB) readable
            // bytes.
            failed |= unsafe { qns_bench_reader_fill(r, chunk.as_ptr(), chunk.len() as c_int) };
        });
    }
    let elapsed = t.elapsed().as_secs_f64();
    // SAFETY: r is live until freed just after.
    let seen = unsafe {
        Seen {
            frames: qns_bench_reader_frames(r),
            touched: qns_bench_reader_touched(r),
        }
    };
    // SAFETY: from qns_bench_reader_new, freed once.
    unsafe { qns_bench_reader_free(r) };
    assert_eq!(failed, 0, "net_fill_rstate failed");
    (elapsed, seen)
}

#[inline(never)]
fn sample_feed(w: &Workload, passes: usize, recv: &mut [u8; RECV_BUF]) -> (f64, Seen) {
    let mut d = FrameDecoder::new(false, DEFAULT_MAX_FRAME_LEN);
    let mut seen = Seen::default();
    let mut other = 0u64;
    let t = Instant::now();
    for _ in 0..passes {
        w.pump(recv, |chunk| {
            d.feed(chunk, |event| match event {
                Decoded::Frame(f) => seen.frame(f.payload),
                _ => other += 1,
            })
        });
    }
    let elapsed = t.elapsed().as_secs_f64();
    assert_eq!(other, 0, "FrameDecoder::feed rejected input");
    (elapsed, seen)
}

#[inline(never)]
fn sample_ffi(
    w: &Workload,
    passes: usize,
    recv: &mut [u8; RECV_BUF],
    counted: bool,
) -> (f64, Seen) {
    let d = qns_decoder_new(false, 0);
    let owned = qns_counters_new();
    assert!(!d.is_null() && !owned.is_null());
    let counters = if counted { owned } else { std::ptr::null_mut() };
    let mut seen = Seen::default();
    let mut failed = false;
    let t = Instant::now();
    for _ in 0..passes {
        w.pump(recv, |chunk| {
            // SAFETY: d and counters are live, chunk is readable, and
            // ffi_frame takes the &mut Seen passed as opaque.
            let r = unsafe {
                qns_decoder_feed(
                    d,
                    counters,
                    chunk.as_ptr(),
                    chunk.len(),
                    Some(ffi_frame),
                    std::ptr::from_mut(&mut seen).cast(),
                )
            };
            failed |= r != QnsResult::Ok;
        });
    }
    let elapsed = t.elapsed().as_secs_f64();
    // SAFETY: both from their constructors, freed once.
    unsafe {
        qns_decoder_free(d);
        qns_counters_free(owned);
    }
    assert!(!failed, "qns_decoder_feed failed");
    (elapsed, seen)
}

struct Measured {
    /// Median seconds per sample, per variant.
    median: [f64; N_VARIANTS],
    /// Per-repetition time ratios `t[a] / t[b]`.
    ratios: Vec<[f64; N_VARIANTS]>,
}

impl Measured {
    /// Median and interquartile range over repetitions of `t[base] / t[v]`
    /// (how many times faster `v` is than `base`).
    fn speedup(&self, v: Variant, base: Variant) -> (f64, f64, f64) {
        let mut r: Vec<f64> = self
            .ratios
            .iter()
            .map(|t| t[base as usize] / t[v as usize])
            .collect();
        let m = median(&mut r);
        (m, quantile(&r, 0.25), quantile(&r, 0.75))
    }
}

/// The `q` quantile of sorted `v` (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn measure(w: &Workload, passes: usize, reps: usize, recv: &mut [u8; RECV_BUF]) -> Measured {
    // Warm-up: page in the stream and the receive buffer, grow decoder
    // buffers, train predictors.
    for v in VARIANTS {
        sample(v, w, 1, recv);
    }
    let mut times = vec![[0.0; N_VARIANTS]; reps];
    for (rep, t) in times.iter_mut().enumerate() {
        for k in 0..VARIANTS.len() {
            let v = VARIANTS[(rep + k) % VARIANTS.len()];
            t[v as usize] = unpreempted(|| sample(v, w, passes, recv));
        }
    }
    let mut medians = [0.0; N_VARIANTS];
    for (i, m) in medians.iter_mut().enumerate() {
        let mut col: Vec<f64> = times.iter().map(|t| t[i]).collect();
        *m = median(&mut col);
    }
    Measured {
        median: medians,
        ratios: times,
    }
}

struct Chunking {
    name: &'static str,
    pattern: &'static [usize],
}

const CHUNKINGS: [Chunking; 3] = [
    Chunking {
        name: "64 KiB",
        pattern: &[64 * 1024],
    },
    Chunking {
        name: "4 KiB (QEMU's chardev reads)",
        pattern: &[4096],
    },
    Chunking {
        name: "uneven 1,7,100,1000,333",
        pattern: &[1, 7, 100, 1000, 333],
    },
];

const FRAME_LENS: [usize; 4] = [64, 1514, 9000, 65535];

struct Row {
    frame_len: usize,
    chunking: &'static str,
    feed_vs_c: f64,
    ffi_vs_c: f64,
    bare_vs_c: f64,
    feed_vs_memcpy: f64,
    ffi_vs_memcpy: f64,
    bare_vs_memcpy: f64,
}

fn decoder_bench(reps: usize, only: &str) -> Vec<Row> {
    let stream_bytes = env_or("QNS_BENCH_STREAM_MIB", 8) << 20;
    let passes = env_or("QNS_BENCH_PASSES", 2);
    let mut recv = Box::new([0u8; RECV_BUF]);
    let mut rows = Vec::new();

    println!("### Decoder throughput\n");
    println!(
        "{} MiB stream of equal frames (no vnet header), {passes} passes per sample, \
         median of {reps} interleaved samples; every chunk copied into a 64 KiB \
         receive buffer first. Mframes/s (GB/s of wire bytes, headers included); \
         \"vs C\" = how many times faster than QEMU's C decoder (median of the \
         per-repetition ratios, interquartile range in brackets); \"of memcpy\" = throughput \
         as a share of the recv() copy alone. \"C ABI\" is `qns_decoder_feed` as the \
         glue calls it, adding each frame to the filter's `indev` counter; \"C ABI, no \
         counters\" is the same call with NULL counters: the decoder alone, like QEMU's \
         C decoder, which counts nothing.\n",
        stream_bytes >> 20
    );
    println!(
        "| frame | chunks | memcpy GB/s | QEMU C | C of memcpy | `FrameDecoder::feed` | feed vs C | feed of memcpy | C ABI | C ABI vs C | C ABI of memcpy | C ABI, no counters | vs C | of memcpy |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &frame_len in &FRAME_LENS {
        for chunking in &CHUNKINGS {
            if let Some((f, c)) = only.split_once(':') {
                if f != frame_len.to_string() || !chunking.name.starts_with(c) {
                    continue;
                }
            }
            let w = Workload::new(frame_len, stream_bytes, chunking.pattern);
            let m = measure(&w, passes, reps, &mut recv);
            let bytes = (w.stream.len() * passes) as f64;
            let frames = (w.expected.frames as usize * passes) as f64;
            let rate = |v: Variant| {
                let t = m.median[v as usize];
                format!("{:.2} ({:.2})", frames / t / 1e6, bytes / t / 1e9)
            };
            let (feed_c, feed_c_lo, feed_c_hi) = m.speedup(Variant::RustFeed, Variant::QemuC);
            let (ffi_c, ffi_c_lo, ffi_c_hi) = m.speedup(Variant::RustFfi, Variant::QemuC);
            let (c_mem, ..) = m.speedup(Variant::QemuC, Variant::Memcpy);
            let (feed_mem, ..) = m.speedup(Variant::RustFeed, Variant::Memcpy);
            let (ffi_mem, ..) = m.speedup(Variant::RustFfi, Variant::Memcpy);
            let (bare_c, bare_c_lo, bare_c_hi) =
                m.speedup(Variant::RustFfiUncounted, Variant::QemuC);
            let (bare_mem, ..) = m.speedup(Variant::RustFfiUncounted, Variant::Memcpy);
            println!(
                "| {frame_len} | {} | {:.2} | {} | {:.0}% | {} | {feed_c:.2}x ({feed_c_lo:.2}-{feed_c_hi:.2}) | {:.0}% | {} | {ffi_c:.2}x ({ffi_c_lo:.2}-{ffi_c_hi:.2}) | {:.0}% | {} | {bare_c:.2}x ({bare_c_lo:.2}-{bare_c_hi:.2}) | {:.0}% |",
                chunking.name,
                bytes / m.median[Variant::Memcpy as usize] / 1e9,
                rate(Variant::QemuC),
                c_mem * 100.0,
                rate(Variant::RustFeed),
                feed_mem * 100.0,
                rate(Variant::RustFfi),
                ffi_mem * 100.0,
                rate(Variant::RustFfiUncounted),
                bare_mem * 100.0,
            );
            rows.push(Row {
                frame_len,
                chunking: chunking.name,
                feed_vs_c: feed_c,
                ffi_vs_c: ffi_c,
                bare_vs_c: bare_c,
                feed_vs_memcpy: feed_mem,
                ffi_vs_memcpy: ffi_mem,
                bare_vs_memcpy: bare_mem,
            });
        }
    }
    rows
}

fn targets(rows: &[Row]) {
    println!("\n### Targets\n");
    println!("| target | frame | chunks | `feed` | met | C ABI | met | C ABI, no counters | met |");
    println!("|---|---:|---|---:|:-:|---:|:-:|---:|:-:|");
    let ok = |b: bool| if b { "yes" } else { "**no**" };
    // One line per row a target applies to: the three figures, each with
    // whether it meets `goal`.
    let line = |what: &str, r: &Row, figures: [f64; 3], goal: f64, percent: bool| {
        let cells: Vec<String> = figures
            .iter()
            .map(|&x| {
                let shown = if percent {
                    format!("{:.0}%", x * 100.0)
                } else {
                    format!("{x:.2}x")
                };
                format!("{shown} | {}", ok(x >= goal))
            })
            .collect();
        println!(
            "| {what} | {} | {} | {} |",
            r.frame_len,
            r.chunking,
            cells.join(" | ")
        );
    };
    for r in rows.iter().filter(|r| r.frame_len == 64) {
        let f = [r.feed_vs_c, r.ffi_vs_c, r.bare_vs_c];
        line(">= 2x C frames/s", r, f, 2.0, false);
    }
    for r in rows
        .iter()
        .filter(|r| r.frame_len == 1514 || r.frame_len == 9000)
    {
        let f = [r.feed_vs_memcpy, r.ffi_vs_memcpy, r.bare_vs_memcpy];
        line(">= 80% of memcpy", r, f, 0.8, true);
    }
    for r in rows {
        let f = [r.feed_vs_c, r.ffi_vs_c, r.bare_vs_c];
        line("never slower than C", r, f, 1.0, false);
    }
}

/// Not atomic, on purpose: the baseline.
#[derive(Default)]
struct Plain {
    packets: u64,
    bytes: u64,
}

const COUNTER_VARIANTS: [&str; 6] = [
    "plain `u64 += 1` (baseline)",
    "plain `packets += 1; bytes += len`",
    "`FilterCounters::count_packet(dir, len)`",
    "`FilterCounters::add(id, 1, len)`",
    "`qns_counters_count_packet` (C ABI)",
    "for reference: two `AtomicU64` relaxed load + store (single-writer counting, not what the library does)",
];

/// The single-writer alternative: atomic for readers, no locked
/// read-modify-write. Only correct when one thread writes the counter.
#[derive(Default)]
struct SingleWriter {
    packets: AtomicU64,
    bytes: AtomicU64,
}

/// `iters` calls of counter variant `k`; returns ns per call.
#[inline(never)]
fn count_sample(k: usize, iters: u64, c: &FilterCounters, cp: *mut QnsCounters) -> f64 {
    // Opaque inputs: the compiler must not fold the direction, id or length.
    let dir = black_box(QnsDirection::Rx);
    let id = black_box(QnsCounterId::Indev);
    let len = black_box(1514u64);
    let mut one = 0u64;
    let mut two = Plain::default();
    let single = SingleWriter::default();
    let t = Instant::now();
    match k {
        0 => {
            for _ in 0..iters {
                // black_box(&mut): a real load-add-store in memory each time,
                // as a counter in a struct would be, not a register.
                *black_box(&mut one) += 1;
            }
        }
        1 => {
            for _ in 0..iters {
                // One black_box per field: two scalar adds, as count_packet
                // does (one on the whole struct lets LLVM fuse them into a
                // 16-byte vector add, which is not what counting would be).
                *black_box(&mut two.packets) += 1;
                *black_box(&mut two.bytes) += len;
            }
        }
        2 => {
            for _ in 0..iters {
                black_box(c).count_packet(dir, len);
            }
        }
        3 => {
            for _ in 0..iters {
                black_box(c).add(id, 1, len);
            }
        }
        4 => {
            for _ in 0..iters {
                // SAFETY: cp is live counters.
                let r = unsafe { qns_counters_count_packet(black_box(cp), dir as u32, len) };
                debug_assert_eq!(r, QnsResult::Ok);
                black_box(r);
            }
        }
        _ => {
            for _ in 0..iters {
                // One black_box per field, as in the plain variant.
                let p = black_box(&single.packets);
                p.store(p.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                let b = black_box(&single.bytes);
                b.store(b.load(Ordering::Relaxed) + len, Ordering::Relaxed);
            }
        }
    }
    let ns = t.elapsed().as_secs_f64() * 1e9 / iters as f64;
    black_box((one, two.packets, two.bytes));
    ns
}

fn counter_bench(reps: usize) {
    let iters = env_or("QNS_BENCH_COUNT_ITERS", 2_000_000) as u64;
    let c = FilterCounters::default();
    let cp = qns_counters_new();
    assert!(!cp.is_null());
    let n = COUNTER_VARIANTS.len();
    for k in 0..n {
        count_sample(k, iters / 10, &c, cp);
    }
    let mut times = vec![vec![0.0; n]; reps];
    for (rep, t) in times.iter_mut().enumerate() {
        for j in 0..n {
            let k = (rep + j) % n;
            t[k] = unpreempted(|| count_sample(k, iters, &c, cp));
        }
    }
    // SAFETY: from qns_counters_new, freed once.
    unsafe { qns_counters_free(cp) };

    println!("\n### Cost of counting (single thread)\n");
    println!(
        "{iters} calls per sample, median of {reps} interleaved samples; ratios are \
         medians of the per-repetition ratios. Each call goes through `black_box`, \
         so every variant really loads, adds and stores in memory.\n"
    );
    println!(
        "| operation | ns/call | vs plain `u64 += 1` | vs plain `packets += 1; bytes += len` |"
    );
    println!("|---|---:|---:|---:|");
    let med = |k: usize| {
        let mut col: Vec<f64> = times.iter().map(|t| t[k]).collect();
        median(&mut col)
    };
    let ratio = |k: usize, base: usize| {
        let mut r: Vec<f64> = times.iter().map(|t| t[k] / t[base]).collect();
        median(&mut r)
    };
    for (k, name) in COUNTER_VARIANTS.iter().enumerate() {
        println!(
            "| {name} | {:.2} | {:.1}x | {:.1}x |",
            med(k),
            ratio(k, 0),
            ratio(k, 1)
        );
    }
}

fn main() {
    let reps = env_or("QNS_BENCH_REPS", 61).max(1);
    // QNS_BENCH_ONLY: "decoder", "counters", or one decoder configuration
    // such as "1514:uneven" (frame length, start of the chunking's name).
    let only = std::env::var("QNS_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "decoder" || only.contains(':') {
        let rows = decoder_bench(reps, &only);
        targets(&rows);
    }
    if only.is_empty() || only == "counters" {
        counter_bench(reps);
    }
    println!(
        "\nSamples taken again because the scheduler preempted the benchmark during them: \
         {}; kept although preempted {MAX_RETAKES} times in a row: {}.",
        RETAKEN.load(Ordering::Relaxed),
        KEPT_PREEMPTED.load(Ordering::Relaxed)
    );
}
