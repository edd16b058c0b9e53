//! Per-filter counters: packets and bytes in each direction, plus the named
//! counters that only some filter types (and colo-compare) report; each
//! filter class says which, through its `get_stats` hook in QEMU's
//! `NetFilterClass`.
//!
//! Every value is an atomic: the packet path takes no lock, several threads
//! may count at once (colo-compare counts in its iothread), and a reader
//! (the QMP handler, in the main loop) never blocks a writer. A reader may
//! see a packet counted before its bytes; each value on its own is exact.

use std::{
    ffi::CStr,
    sync::atomic::{AtomicU64, Ordering},
};

/// The direction of a packet, as QEMU's `NetFilterDirection` names it: "tx"
/// is what the netdev sends, "rx" what it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum QnsDirection {
    /// Sent by the netdev (QEMU's `NET_FILTER_DIRECTION_TX`).
    Tx = 0,
    /// Received by the netdev (QEMU's `NET_FILTER_DIRECTION_RX`).
    Rx = 1,
}

/// What a counter's two values (`packets` and `bytes` in
/// `query-netfilter-stats`) hold, which gives its values' names and units in
/// `query-stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Frames and their bytes: `NAME-packets` and `NAME-bytes` (in bytes).
    Frames,
    /// Events (connections, miscompares): `NAME`; its bytes are always 0, and
    /// `query-netfilter-stats`, whose pairs are packets and bytes, leaves it
    /// out.
    Events,
    /// Events that each last a time, such as a hold or a packet's wait: the
    /// log2 histogram of their microseconds, `NAME` (see [`Histogram`]), and
    /// their sum, `NAME-sum`. The counter's packets count the events and its
    /// bytes sum their microseconds; `query-netfilter-stats`, whose pairs are
    /// packets and bytes, leaves it out.
    Duration,
}

/// A C string literal made from a `concat!` of literals (`c"..."` cannot
/// be concatenated).
macro_rules! c_concat {
    ($($part:expr),+) => {
        match CStr::from_bytes_with_nul(concat!($($part),+, "\0").as_bytes()) {
            Ok(s) => s,
            Err(_) => panic!("a NUL inside a counter name"),
        }
    };
}

/// The filter-specific counters. A filter class (or colo-compare) reports
/// the ones it has, in the order it lists them; docs/counters.md's table says
/// which each has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum QnsCounterId {
    /// filter-redirector: frames read whole from the indev chardev and
    /// injected.
    Indev = 0,
    /// filter-mirror, filter-redirector: frames written whole to the outdev
    /// chardev (their bytes without the netdev's vnet header).
    Outdev = 1,
    /// filter-redirector: input the indev decoder rejected: packets =
    /// rejected frames, bytes = bytes of input thrown away.
    IndevErrors = 2,
    /// filter-mirror, filter-redirector: frames that could not be written to
    /// the outdev.
    OutdevErrors = 3,
    /// filter-mirror, filter-redirector: frames after which the filter held
    /// their sender (its outdev backlog was at its high-water mark).
    Held = 4,
    /// filter-mirror, filter-redirector: how long each hold lasted, from the
    /// frame after which the sender was held to its release (a duration).
    HoldTime = 5,
    /// filter-buffer: frames released to the next filter or the peer;
    /// colo-compare: primary frames released (they compared equal, or carry
    /// nothing to compare).
    Released = 6,
    /// filter-buffer: frames dropped, because its queue was full or a flush
    /// the receiver refused purged them.
    Dropped = 7,
    /// filter-buffer: frames (and their bytes) held in it now.
    Buffered = 8,
    /// filter-rewriter, colo-compare: connections tracked now.
    Connections = 9,
    /// filter-rewriter: TCP packets whose sequence or acknowledgement number
    /// it rewrote.
    Rewritten = 10,
    /// filter-rewriter: tracked connections that closed (and were forgotten).
    Closed = 11,
    /// filter-dump: frames written to the file (bytes: as captured, at most
    /// the snap length each).
    Written = 12,
    /// filter-dump: frames cut to the snap length (bytes: the bytes cut off).
    Truncated = 13,
    /// filter-dump: frames that could not be written to the file.
    WriteErrors = 14,
    /// colo-compare: frames read from `primary_in`.
    Primary = 15,
    /// colo-compare: frames read from `secondary_in`.
    Secondary = 16,
    /// colo-compare: TCP miscompares that requested a checkpoint.
    MiscompareTcp = 17,
    /// colo-compare: UDP miscompares that requested a checkpoint.
    MiscompareUdp = 18,
    /// colo-compare: ICMP miscompares that requested a checkpoint.
    MiscompareIcmp = 19,
    /// colo-compare: miscompares of other IP protocols that requested a
    /// checkpoint.
    MiscompareOther = 20,
    /// colo-compare: packets left unmatched past `compare_timeout`, which
    /// requested a checkpoint.
    MiscompareTimeout = 21,
    /// colo-compare: primary frames dropped because their queue was full
    /// (`max_queue_size`).
    PrimaryDropped = 22,
    /// colo-compare: secondary frames dropped because their queue was full.
    SecondaryDropped = 23,
    /// colo-compare: frames it cannot compare (not IPv4): primary ones are
    /// sent on uncompared, secondary ones dropped.
    Unsupported = 24,
    /// colo-compare: frames that could not be sent to `outdev`.
    SendErrors = 25,
    /// colo-compare: primary frames queued now, waiting for their match.
    PrimaryQueued = 26,
    /// colo-compare: secondary frames queued now.
    SecondaryQueued = 27,
    /// colo-compare: bad input on `primary_in`, as `indev-errors`.
    PrimaryInErrors = 28,
    /// colo-compare: bad input on `secondary_in`, as `indev-errors`.
    SecondaryInErrors = 29,
    /// colo-compare: how long each primary frame written to `outdev` waited,
    /// from its arrival on `primary_in` to its release (a duration; as many
    /// as `released`).
    ReleaseLatency = 30,
    /// filter-buffer: how long each released frame waited in it (a
    /// duration; as many as `released`).
    Delay = 31,
    /// colo-compare: checkpoints it asked for, one per miscompare of any
    /// kind (`miscompare-*`) and per `compare_timeout` expiry.
    CheckpointRequests = 32,
}

/// What the code says of one counter.
struct Info {
    id: QnsCounterId,
    name: &'static CStr,
    instant: bool,
    shape: Shape,
    /// The `query-stats` names of its values (see [`QnsCounterId::stat_names`]).
    stat_names: (&'static CStr, Option<&'static CStr>),
}

/// `info!(Id, "name", cumulative|instant, Shape)`: the [`Info`] of one
/// counter, with the `query-stats` names its shape gives.
macro_rules! info {
    ($id:ident, $name:literal, $kind:ident, $shape:ident) => {
        Info {
            id: QnsCounterId::$id,
            name: c_concat!($name),
            instant: info!(@instant $kind),
            shape: Shape::$shape,
            stat_names: info!(@names $shape $name),
        }
    };
    (@instant cumulative) => { false };
    (@instant instant) => { true };
    (@names Frames $name:literal) => {
        (c_concat!($name, "-packets"), Some(c_concat!($name, "-bytes")))
    };
    (@names Events $name:literal) => { (c_concat!($name), None) };
    (@names Duration $name:literal) => {
        (c_concat!($name), Some(c_concat!($name, "-sum")))
    };
}

/// Every counter, in numeric order (a test checks it).
const INFO: [Info; 33] = [
    info!(Indev, "indev", cumulative, Frames),
    info!(Outdev, "outdev", cumulative, Frames),
    info!(IndevErrors, "indev-errors", cumulative, Frames),
    info!(OutdevErrors, "outdev-errors", cumulative, Frames),
    info!(Held, "held", cumulative, Frames),
    info!(HoldTime, "hold-time", cumulative, Duration),
    info!(Released, "released", cumulative, Frames),
    info!(Dropped, "dropped", cumulative, Frames),
    info!(Buffered, "buffered", instant, Frames),
    info!(Connections, "connections", instant, Events),
    info!(Rewritten, "rewritten", cumulative, Frames),
    info!(Closed, "closed", cumulative, Events),
    info!(Written, "written", cumulative, Frames),
    info!(Truncated, "truncated", cumulative, Frames),
    info!(WriteErrors, "write-errors", cumulative, Frames),
    info!(Primary, "primary", cumulative, Frames),
    info!(Secondary, "secondary", cumulative, Frames),
    info!(MiscompareTcp, "miscompare-tcp", cumulative, Events),
    info!(MiscompareUdp, "miscompare-udp", cumulative, Events),
    info!(MiscompareIcmp, "miscompare-icmp", cumulative, Events),
    info!(MiscompareOther, "miscompare-other", cumulative, Events),
    info!(MiscompareTimeout, "miscompare-timeout", cumulative, Events),
    info!(PrimaryDropped, "primary-dropped", cumulative, Frames),
    info!(SecondaryDropped, "secondary-dropped", cumulative, Frames),
    info!(Unsupported, "unsupported", cumulative, Frames),
    info!(SendErrors, "send-errors", cumulative, Frames),
    info!(PrimaryQueued, "primary-queued", instant, Frames),
    info!(SecondaryQueued, "secondary-queued", instant, Frames),
    info!(PrimaryInErrors, "primary-in-errors", cumulative, Frames),
    info!(SecondaryInErrors, "secondary-in-errors", cumulative, Frames),
    info!(ReleaseLatency, "release-latency", cumulative, Duration),
    info!(Delay, "delay", cumulative, Duration),
    info!(
        CheckpointRequests,
        "checkpoint-requests", cumulative, Events
    ),
];

/// The counters of shape [`Shape::Duration`], each with a histogram: the
/// index in this table is its histogram's in [`FilterCounters`].
const DURATIONS: [QnsCounterId; 3] = [
    QnsCounterId::HoldTime,
    QnsCounterId::ReleaseLatency,
    QnsCounterId::Delay,
];

/// For each counter id, the index of its histogram in [`DURATIONS`]: a
/// table, as the packet path looks it up at every count.
const HISTOGRAM_OF: [Option<usize>; INFO.len()] = {
    let mut of = [None; INFO.len()];
    let mut i = 0;
    while i < DURATIONS.len() {
        of[DURATIONS[i] as usize] = Some(i);
        i += 1;
    }
    of
};

impl QnsCounterId {
    /// Every id, in numeric order.
    pub(crate) const ALL: [QnsCounterId; INFO.len()] = {
        let mut all = [QnsCounterId::Indev; INFO.len()];
        let mut i = 0;
        while i < INFO.len() {
            all[i] = INFO[i].id;
            i += 1;
        }
        all
    };

    fn info(self) -> &'static Info {
        &INFO[self as usize]
    }

    /// The name in the QMP reply and the HMP text.
    pub fn c_name(self) -> &'static CStr {
        self.info().name
    }

    /// A snapshot (frames queued now), not a running total.
    pub fn is_instant(self) -> bool {
        self.info().instant
    }

    /// What its two values hold.
    pub fn shape(self) -> Shape {
        self.info().shape
    }

    /// The `query-stats` names of its values: the first value's
    /// (`packets`, or a duration's histogram), and the second's (`bytes`, or
    /// a duration's sum) unless it is always 0.
    pub fn stat_names(self) -> (&'static CStr, Option<&'static CStr>) {
        self.info().stat_names
    }

    /// The id with this numeric value, if there is one (C may pass anything).
    pub fn from_raw(raw: u32) -> Option<Self> {
        Self::ALL.get(raw as usize).copied()
    }

    /// Where its histogram is, for a duration.
    #[inline]
    fn histogram(self) -> Option<usize> {
        HISTOGRAM_OF[self as usize]
    }
}

/// Buckets of a duration's log2 histogram: bucket 0 counts 0 µs, bucket
/// i >= 1 [2^(i-1), 2^i) µs, and the last one everything from 2^26 µs (67 s)
/// on, so that a minute has a bucket of its own.
pub const HISTOGRAM_BUCKETS: usize = 28;

/// How many events lasted how long, as QEMU's `log2-histogram` of
/// microseconds (and KVM's log2 histograms) count them: bucket 0 counts
/// events of 0 µs, bucket i >= 1 those of [2^(i-1), 2^i) µs, and the last
/// bucket everything from 2^(`HISTOGRAM_BUCKETS` - 2) µs on.
#[derive(Debug, Default)]
pub struct Histogram([AtomicU64; HISTOGRAM_BUCKETS]);

impl Histogram {
    /// The bucket of `us` microseconds.
    pub fn bucket(us: u64) -> usize {
        // ilog2(us) + 1 for us >= 1: 1 -> 1, 2..3 -> 2, 4..7 -> 3, ...
        ((u64::BITS - us.leading_zeros()) as usize).min(HISTOGRAM_BUCKETS - 1)
    }

    /// Count `events` events of `us` microseconds each.
    fn record(&self, events: u64, us: u64) {
        self.0[Self::bucket(us)].fetch_add(events, Ordering::Relaxed);
    }

    /// The buckets, read now.
    pub fn read(&self) -> [u64; HISTOGRAM_BUCKETS] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

#[derive(Debug, Default)]
struct PacketsAndBytes {
    packets: AtomicU64,
    bytes: AtomicU64,
}

impl PacketsAndBytes {
    fn add(&self, packets: u64, bytes: u64) {
        self.packets.fetch_add(packets, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn sub(&self, packets: u64, bytes: u64) {
        self.packets.fetch_sub(packets, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn set(&self, packets: u64, bytes: u64) {
        self.packets.store(packets, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
    }

    fn read(&self) -> Count {
        Count {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of one counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Packets (or frames, or events) counted.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
}

/// The counters of one filter.
#[derive(Debug)]
pub struct FilterCounters {
    tx: PacketsAndBytes,
    rx: PacketsAndBytes,
    named: [PacketsAndBytes; QnsCounterId::ALL.len()],
    histograms: [Histogram; DURATIONS.len()],
}

impl Default for FilterCounters {
    fn default() -> Self {
        Self {
            tx: PacketsAndBytes::default(),
            rx: PacketsAndBytes::default(),
            named: std::array::from_fn(|_| PacketsAndBytes::default()),
            histograms: Default::default(),
        }
    }
}

impl FilterCounters {
    /// Count one packet of `bytes` bytes handed to the filter in `direction`.
    #[inline]
    pub fn count_packet(&self, direction: QnsDirection, bytes: u64) {
        match direction {
            QnsDirection::Tx => self.tx.add(1, bytes),
            QnsDirection::Rx => self.rx.add(1, bytes),
        }
    }

    /// Add `packets` and `bytes` to the filter-specific counter `id`. For a
    /// duration, `packets` events that lasted `bytes` microseconds in all,
    /// which its histogram counts in the bucket of their mean (callers add
    /// one event at a time), and whose count is the histogram's: two atomic
    /// adds, as for any other counter.
    #[inline]
    pub fn add(&self, id: QnsCounterId, packets: u64, bytes: u64) {
        let counter = &self.named[id as usize];
        match id.histogram() {
            None => counter.add(packets, bytes),
            Some(h) => {
                if let Some(mean) = bytes.checked_div(packets) {
                    self.histograms[h].record(packets, mean);
                    counter.bytes.fetch_add(bytes, Ordering::Relaxed);
                }
            }
        }
    }

    /// The histogram of counter `id`, a duration, and the sum of its
    /// microseconds; `None` for any other counter.
    pub fn duration(&self, id: QnsCounterId) -> Option<([u64; HISTOGRAM_BUCKETS], u64)> {
        id.histogram().map(|h| {
            let sum = self.named[id as usize].bytes.load(Ordering::Relaxed);
            (self.histograms[h].read(), sum)
        })
    }

    /// Packets and bytes in `direction`.
    pub fn direction(&self, direction: QnsDirection) -> Count {
        match direction {
            QnsDirection::Tx => self.tx.read(),
            QnsDirection::Rx => self.rx.read(),
        }
    }

    /// Take `packets` and `bytes` off the snapshot counter `id` (frames that
    /// left a queue).
    #[inline]
    pub fn sub(&self, id: QnsCounterId, packets: u64, bytes: u64) {
        self.named[id as usize].sub(packets, bytes);
    }

    /// Make the snapshot counter `id` read `packets` and `bytes`.
    #[inline]
    pub fn set(&self, id: QnsCounterId, packets: u64, bytes: u64) {
        self.named[id as usize].set(packets, bytes);
    }

    /// The value of counter `id` (a duration's packets: its histogram's
    /// events).
    pub fn get(&self, id: QnsCounterId) -> Count {
        match self.duration(id) {
            Some((buckets, sum)) => Count {
                packets: buckets.iter().sum(),
                bytes: sum,
            },
            None => self.named[id as usize].read(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, thread};

    use super::*;

    #[test]
    fn counts_each_direction_exactly() {
        let c = FilterCounters::default();
        c.count_packet(QnsDirection::Tx, 60);
        c.count_packet(QnsDirection::Tx, 1514);
        c.count_packet(QnsDirection::Rx, 42);
        assert_eq!(
            c.direction(QnsDirection::Tx),
            Count {
                packets: 2,
                bytes: 1574
            }
        );
        assert_eq!(
            c.direction(QnsDirection::Rx),
            Count {
                packets: 1,
                bytes: 42
            }
        );
    }

    #[test]
    fn named_counters_are_separate() {
        let c = FilterCounters::default();
        c.add(QnsCounterId::Outdev, 1, 100);
        c.add(QnsCounterId::Indev, 2, 20);
        let got: Vec<_> = QnsCounterId::ALL[..4]
            .iter()
            .copied()
            .map(|id| {
                (
                    id.c_name().to_str().unwrap(),
                    c.get(id).packets,
                    c.get(id).bytes,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("indev", 2, 20),
                ("outdev", 1, 100),
                ("indev-errors", 0, 0),
                ("outdev-errors", 0, 0)
            ]
        );
    }

    #[test]
    fn raw_ids_are_checked() {
        for (i, id) in QnsCounterId::ALL.into_iter().enumerate() {
            assert_eq!(id as usize, i, "INFO is in numeric order");
            assert_eq!(QnsCounterId::from_raw(i as u32), Some(id));
        }
        assert_eq!(QnsCounterId::from_raw(QnsCounterId::ALL.len() as u32), None);
        assert_eq!(QnsCounterId::from_raw(u32::MAX), None);
    }

    #[test]
    fn names_are_unique_and_follow_the_shape() {
        let mut seen = std::collections::BTreeSet::new();
        for id in QnsCounterId::ALL {
            let name = id.c_name().to_str().unwrap();
            assert!(seen.insert(name), "{name} twice");
            let (first, second) = id.stat_names();
            let (first, second) = (first.to_str().unwrap(), second.map(|s| s.to_str().unwrap()));
            match id.shape() {
                Shape::Frames => {
                    assert_eq!(
                        (first, second),
                        (&*format!("{name}-packets"), Some(&*format!("{name}-bytes")))
                    )
                }
                Shape::Events => assert_eq!((first, second), (name, None)),
                Shape::Duration => {
                    assert_eq!((first, second), (name, Some(&*format!("{name}-sum"))));
                    assert!(DURATIONS.contains(&id));
                }
            }
        }
        assert_eq!(QnsCounterId::Connections.stat_names().0, c"connections");
        assert!(QnsCounterId::Buffered.is_instant() && !QnsCounterId::Outdev.is_instant());
    }

    #[test]
    fn durations_fill_log2_buckets() {
        let bucket_bounds = [
            (0, 0),
            (1, 1),
            (2, 2),
            (3, 2),
            (4, 3),
            (1023, 10),
            (1024, 11),
            (60_000_000, 26),
            (1 << 26, 27),
            (u64::MAX, 27),
        ];
        for (us, bucket) in bucket_bounds {
            assert_eq!(Histogram::bucket(us), bucket, "{us} µs");
        }
        let c = FilterCounters::default();
        for us in [0, 5, 7, 24_000, 24_000] {
            c.add(QnsCounterId::ReleaseLatency, 1, us);
        }
        c.add(QnsCounterId::HoldTime, 2, 200);
        c.add(QnsCounterId::HoldTime, 0, 0);
        let mut want = [0; HISTOGRAM_BUCKETS];
        (want[0], want[3], want[15]) = (1, 2, 2);
        assert_eq!(
            c.duration(QnsCounterId::ReleaseLatency).map(|d| d.0),
            Some(want)
        );
        assert_eq!(
            c.get(QnsCounterId::ReleaseLatency),
            Count {
                packets: 5,
                bytes: 48_012
            }
        );
        let mut want = [0; HISTOGRAM_BUCKETS];
        want[7] = 2;
        assert_eq!(c.duration(QnsCounterId::HoldTime).map(|d| d.0), Some(want));
        assert_eq!(
            c.duration(QnsCounterId::Delay).map(|d| d.0),
            Some([0; HISTOGRAM_BUCKETS])
        );
        assert_eq!(c.duration(QnsCounterId::Released), None);
    }

    #[test]
    fn snapshots_go_up_and_down() {
        let c = FilterCounters::default();
        c.add(QnsCounterId::PrimaryQueued, 3, 300);
        c.sub(QnsCounterId::PrimaryQueued, 1, 100);
        assert_eq!(
            c.get(QnsCounterId::PrimaryQueued),
            Count {
                packets: 2,
                bytes: 200
            }
        );
        c.set(QnsCounterId::Connections, 7, 0);
        c.set(QnsCounterId::Connections, 5, 0);
        assert_eq!(
            c.get(QnsCounterId::Connections),
            Count {
                packets: 5,
                bytes: 0
            }
        );
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let c = Arc::new(FilterCounters::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = Arc::clone(&c);
                thread::spawn(move || {
                    for _ in 0..100_000 {
                        c.count_packet(QnsDirection::Rx, 3);
                        c.add(QnsCounterId::Indev, 1, 5);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            c.direction(QnsDirection::Rx),
            Count {
                packets: 400_000,
                bytes: 1_200_000
            }
        );
        assert_eq!(
            c.get(QnsCounterId::Indev),
            Count {
                packets: 400_000,
                bytes: 2_000_000
            }
        );
    }
}
