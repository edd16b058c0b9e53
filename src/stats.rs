//! The list behind `query-netfilter-stats` and QEMU's `query-stats`, built in
//! one pass over the filters (or colo-compare objects) the C side walks: per
//! object one entry with its two directions, then the counters its class
//! reports, in its order; and the same numbers as the named values of
//! `query-stats`, whose schema ([`schema`]) says their type and unit. A
//! duration ([`Shape::Duration`]) is in `query-stats` alone, as a log2
//! histogram and a sum; so is a count of events ([`Shape::Events`]):
//! `query-netfilter-stats` has packets and bytes alone.
//!
//! The list is the C view itself (`#[repr(C)]` types). Its strings are the
//! filter's own (QOM id, netdev id, type name), borrowed, not copied: the
//! caller converts the list to QAPI types, which copies each string once,
//! before the filters can change (QEMU holds the BQL throughout).

use std::ffi::{c_char, CStr};

use crate::counters::{FilterCounters, QnsCounterId, QnsDirection, Shape, HISTOGRAM_BUCKETS};

/// One filter-specific counter in a `QnsFilterStats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct QnsCounterStats {
    /// The counter's name (`indev`, `outdev`, ...), a static string.
    pub name: *const c_char,
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
}

/// One named value of a `query-stats` result: a number, or a histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct QnsStatValue {
    /// Its name in `query-stats-schemas` (`packets-tx`, `outdev-bytes`,
    /// ...), a static string.
    pub name: *const c_char,
    /// Its value; for a histogram, the events it counts (its buckets' sum).
    pub value: u64,
    /// A histogram's `n_buckets` buckets (its schema's type says which kind);
    /// NULL for a number.
    pub buckets: *const u64,
    /// Entries at `buckets`: 0 for a number.
    pub n_buckets: usize,
}

/// One filter's (or colo-compare object's) entry in a `QnsStatsList`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct QnsFilterStats {
    /// The filter's QOM id (the string given to `qns_stats_builder_add()`).
    pub name: *const c_char,
    /// The id of its netdev (likewise).
    pub netdev: *const c_char,
    /// Its QOM type name (likewise).
    pub qom_type: *const c_char,
    /// Packets the netdev sent through the filter.
    pub packets_tx: u64,
    /// Packets the netdev received through the filter.
    pub packets_rx: u64,
    /// Bytes the netdev sent through the filter.
    pub bytes_tx: u64,
    /// Bytes the netdev received through the filter.
    pub bytes_rx: u64,
    /// `n_counters` filter-specific counters of packets and bytes, in the
    /// order the filter's class listed them (`query-netfilter-stats`; counts
    /// of events and durations are in `values` alone). NULL when
    /// `n_counters` is 0.
    pub counters: *const QnsCounterStats,
    /// Entries at `counters`.
    pub n_counters: usize,
    /// The same numbers as `n_values` named values for `query-stats`: the
    /// directions (a filter's only), then each counter's one or two values.
    /// NULL when `n_values` is 0.
    pub values: *const QnsStatValue,
    /// Entries at `values`.
    pub n_values: usize,
}

/// The result of a query: `len` filters in the order they were added.
#[derive(Debug)]
#[repr(C)]
pub struct QnsStatsList {
    /// The entries; NULL when `len` is 0.
    pub filters: *const QnsFilterStats,
    /// Entries at `filters`.
    pub len: usize,
}

/// A finished list: the C view first (a pointer to it is a pointer to the
/// whole), then the storage it points into.
#[derive(Debug)]
#[repr(C)]
pub struct OwnedStatsList {
    /// What C reads.
    pub view: QnsStatsList,
    filters: Vec<QnsFilterStats>,
    counters: Vec<QnsCounterStats>,
    values: Vec<QnsStatValue>,
    buckets: Vec<[u64; HISTOGRAM_BUCKETS]>,
}

/// Collects the filters of one query.
#[derive(Debug, Default)]
pub struct StatsListBuilder {
    filters: Vec<QnsFilterStats>,
    /// Every filter's counters, one after the other.
    counters: Vec<QnsCounterStats>,
    /// Every filter's `query-stats` values, one after the other.
    values: Vec<QnsStatValue>,
    /// Every histogram's buckets, in the order of `values`.
    buckets: Vec<[u64; HISTOGRAM_BUCKETS]>,
}

/// The `query-stats` names of a filter's directions, in the order of
/// `query-netfilter-stats`.
static DIRECTION_VALUES: [(&CStr, QnsStatUnit); 4] = [
    (c"packets-tx", QnsStatUnit::None),
    (c"packets-rx", QnsStatUnit::None),
    (c"bytes-tx", QnsStatUnit::Bytes),
    (c"bytes-rx", QnsStatUnit::Bytes),
];

/// A value that is a number.
fn number(name: &CStr, value: u64) -> QnsStatValue {
    QnsStatValue {
        name: name.as_ptr(),
        value,
        buckets: std::ptr::null(),
        n_buckets: 0,
    }
}

/// `slice.as_ptr()`, or NULL for an empty slice (as the C view promises).
fn ptr_or_null<T>(slice: &[T]) -> *const T {
    if slice.is_empty() {
        std::ptr::null()
    } else {
        slice.as_ptr()
    }
}

impl StatsListBuilder {
    /// Add one filter, reading its two directions now. The strings are
    /// kept as they are, to be read by whoever reads the list.
    pub fn add(
        &mut self,
        name: *const c_char,
        netdev: *const c_char,
        qom_type: *const c_char,
        counters: &FilterCounters,
    ) {
        let (tx, rx) = (
            counters.direction(QnsDirection::Tx),
            counters.direction(QnsDirection::Rx),
        );
        self.filters.push(QnsFilterStats {
            name,
            netdev,
            qom_type,
            packets_tx: tx.packets,
            packets_rx: rx.packets,
            bytes_tx: tx.bytes,
            bytes_rx: rx.bytes,
            // Indexes into `self.counters` and `self.values` until `finish`
            // makes them pointers (the vectors may still move).
            counters: std::ptr::null(),
            n_counters: 0,
            values: std::ptr::null(),
            n_values: DIRECTION_VALUES.len(),
        });
        let directions = [tx.packets, rx.packets, tx.bytes, rx.bytes];
        self.values.extend(
            DIRECTION_VALUES
                .iter()
                .zip(directions)
                .map(|((name, _), value)| number(name, value)),
        );
    }

    /// Add an object that is not a filter (colo-compare): no netdev (an
    /// empty string), no directions, only the counters added next.
    pub fn add_object(&mut self, name: *const c_char, qom_type: *const c_char) {
        self.filters.push(QnsFilterStats {
            name,
            netdev: c"".as_ptr(),
            qom_type,
            packets_tx: 0,
            packets_rx: 0,
            bytes_tx: 0,
            bytes_rx: 0,
            counters: std::ptr::null(),
            n_counters: 0,
            values: std::ptr::null(),
            n_values: 0,
        });
    }

    /// Add the counters `ids` (in that order) of `counters` to the filter
    /// added last: to its values, and those of packets and bytes to its
    /// counters too (`query-netfilter-stats` has packets and bytes alone;
    /// a count of events, or a duration, is in `query-stats` alone).
    /// Returns false, adding nothing, when no filter was added.
    pub fn add_counters(&mut self, counters: &FilterCounters, ids: &[QnsCounterId]) -> bool {
        let Some(last) = self.filters.last_mut() else {
            return false;
        };
        for &id in ids {
            let (first, second) = id.stat_names();
            let bytes = if let Some((buckets, sum)) = counters.duration(id) {
                self.values.push(QnsStatValue {
                    value: buckets.iter().sum(),
                    buckets: std::ptr::null(), // set by `finish`
                    n_buckets: HISTOGRAM_BUCKETS,
                    ..number(first, 0)
                });
                self.buckets.push(buckets);
                sum
            } else {
                let count = counters.get(id);
                if id.shape() == Shape::Frames {
                    self.counters.push(QnsCounterStats {
                        name: id.c_name().as_ptr(),
                        packets: count.packets,
                        bytes: count.bytes,
                    });
                    last.n_counters += 1;
                }
                self.values.push(number(first, count.packets));
                count.bytes
            };
            if let Some(second) = second {
                self.values.push(number(second, bytes));
            }
            last.n_values += 1 + usize::from(second.is_some());
        }
        true
    }

    /// The list, in the order the filters were added.
    pub fn finish(self) -> Box<OwnedStatsList> {
        let Self {
            mut filters,
            counters,
            mut values,
            buckets,
        } = self;
        let mut histograms = buckets.iter();
        for v in values.iter_mut().filter(|v| v.n_buckets > 0) {
            v.buckets = histograms.next().map_or(std::ptr::null(), |b| b.as_ptr());
        }
        // The heap buffers do not move when the vectors move into the box,
        // so pointers into them stay valid.
        let (mut counter, mut value) = (0, 0);
        for f in &mut filters {
            f.counters = ptr_or_null(&counters[counter..counter + f.n_counters]);
            f.values = ptr_or_null(&values[value..value + f.n_values]);
            counter += f.n_counters;
            value += f.n_values;
        }
        Box::new(OwnedStatsList {
            view: QnsStatsList {
                filters: ptr_or_null(&filters),
                len: filters.len(),
            },
            filters,
            counters,
            values,
            buckets,
        })
    }
}

/// Who provides a set of `query-stats` values: QEMU's `StatsProvider`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum QnsStatsProvider {
    /// The network filters.
    Netfilter = 0,
    /// The colo-compare objects.
    ColoCompare = 1,
}

/// The counters each provider's classes report, for its schema. A class
/// reporting a counter not listed here fails the end-to-end tests, which
/// check every value `query-stats` returns against the schema.
const FILTER_COUNTERS: [QnsCounterId; 16] = {
    use QnsCounterId::*;
    [
        Indev,
        Outdev,
        IndevErrors,
        OutdevErrors,
        Held,
        HoldTime,
        Released,
        Dropped,
        Buffered,
        Connections,
        Rewritten,
        Closed,
        Written,
        Truncated,
        WriteErrors,
        Delay,
    ]
};
const COLO_COUNTERS: [QnsCounterId; 19] = {
    use QnsCounterId::*;
    [
        Primary,
        Secondary,
        Released,
        MiscompareTcp,
        MiscompareUdp,
        MiscompareIcmp,
        MiscompareOther,
        MiscompareTimeout,
        PrimaryDropped,
        SecondaryDropped,
        Unsupported,
        SendErrors,
        PrimaryQueued,
        SecondaryQueued,
        Connections,
        PrimaryInErrors,
        SecondaryInErrors,
        ReleaseLatency,
        CheckpointRequests,
    ]
};

/// The unit of a `query-stats` value: QEMU's `StatsUnit`, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum QnsStatUnit {
    /// A plain count (packets, connections, events).
    None = 0,
    /// Bytes.
    Bytes = 1,
    /// Seconds, times 10 to the power of the value's `exponent`.
    Seconds = 2,
}

/// The type of a `query-stats` value: QEMU's `StatsType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum QnsStatKind {
    /// A running total.
    Cumulative = 0,
    /// A snapshot.
    Instant = 1,
    /// A log2 histogram: its value is a list of buckets (see
    /// `QNS_HISTOGRAM_BUCKETS`).
    Log2Histogram = 2,
}

/// One value in `query-stats-schemas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct QnsStatSchema {
    /// The value's name, a static string.
    pub name: *const c_char,
    /// Its type.
    pub kind: QnsStatKind,
    /// Its unit.
    pub unit: QnsStatUnit,
    /// The power of 10 its unit is scaled by (-6: microseconds).
    pub exponent: i32,
}

/// Every value `provider`'s objects can report, in the order they do.
pub fn schema(provider: QnsStatsProvider) -> impl Iterator<Item = QnsStatSchema> {
    let value = |name: &CStr, kind, unit, exponent| QnsStatSchema {
        name: name.as_ptr(),
        kind,
        unit,
        exponent,
    };
    let (directions, ids): (&[_], &[_]) = match provider {
        QnsStatsProvider::Netfilter => (&DIRECTION_VALUES, &FILTER_COUNTERS),
        QnsStatsProvider::ColoCompare => (&[], &COLO_COUNTERS),
    };
    let directions = directions
        .iter()
        .map(move |&(name, unit)| value(name, QnsStatKind::Cumulative, unit, 0));
    let counters = ids.iter().flat_map(move |&id| {
        let (first, second) = id.stat_names();
        let kind = if id.is_instant() {
            QnsStatKind::Instant
        } else {
            QnsStatKind::Cumulative
        };
        let (first, second) = match id.shape() {
            Shape::Duration => (
                value(first, QnsStatKind::Log2Histogram, QnsStatUnit::Seconds, -6),
                second.map(|name| value(name, kind, QnsStatUnit::Seconds, -6)),
            ),
            _ => (
                value(first, kind, QnsStatUnit::None, 0),
                second.map(|name| value(name, kind, QnsStatUnit::Bytes, 0)),
            ),
        };
        std::iter::once(first).chain(second)
    });
    directions.chain(counters)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counters behind one entry, as (name, packets, bytes).
    fn counters_of(list: &OwnedStatsList, i: usize) -> Vec<(String, u64, u64)> {
        let f = &list.filters[i];
        let start: usize = list.filters[..i].iter().map(|f| f.n_counters).sum();
        let entries = &list.counters[start..start + f.n_counters];
        assert_eq!(f.counters, ptr_or_null(entries));
        entries
            .iter()
            .map(|c| {
                let id = QnsCounterId::ALL
                    .into_iter()
                    .find(|id| id.c_name().as_ptr() == c.name)
                    .unwrap();
                (id.c_name().to_str().unwrap().to_owned(), c.packets, c.bytes)
            })
            .collect()
    }

    #[test]
    fn one_pass_keeps_walk_order_and_each_class_order() {
        let (r, b, m) = (
            FilterCounters::default(),
            FilterCounters::default(),
            FilterCounters::default(),
        );
        r.count_packet(QnsDirection::Tx, 100);
        r.add(QnsCounterId::Indev, 1, 60);
        b.count_packet(QnsDirection::Rx, 7);
        m.add(QnsCounterId::OutdevErrors, 2, 3);
        let names = [c"r0", c"b0", c"m0"];
        let mut builder = StatsListBuilder::default();
        assert!(!builder.add_counters(&r, &[QnsCounterId::Indev]));
        builder.add(
            names[0].as_ptr(),
            c"n0".as_ptr(),
            c"filter-redirector".as_ptr(),
            &r,
        );
        assert!(builder.add_counters(&r, &[QnsCounterId::Indev, QnsCounterId::Outdev]));
        builder.add(
            names[1].as_ptr(),
            c"n0".as_ptr(),
            c"filter-buffer".as_ptr(),
            &b,
        );
        builder.add(
            names[2].as_ptr(),
            c"n1".as_ptr(),
            c"filter-mirror".as_ptr(),
            &m,
        );
        assert!(builder.add_counters(&m, &[QnsCounterId::OutdevErrors, QnsCounterId::Outdev]));
        let list = builder.finish();
        assert_eq!(list.view.len, 3);
        assert_eq!(list.view.filters, list.filters.as_ptr());
        let f = &list.filters;
        assert_eq!(
            f.iter().map(|f| f.name).collect::<Vec<_>>(),
            names.map(|n| n.as_ptr())
        );
        assert_eq!(
            (f[0].packets_tx, f[0].bytes_tx, f[0].packets_rx),
            (1, 100, 0)
        );
        assert_eq!((f[1].packets_rx, f[1].bytes_rx), (1, 7));
        assert_eq!(
            counters_of(&list, 0),
            [("indev".into(), 1, 60), ("outdev".into(), 0, 0)]
        );
        let (indev, outdev) = (
            QnsCounterId::Indev.stat_names(),
            QnsCounterId::Outdev.stat_names(),
        );
        let names = DIRECTION_VALUES.iter().map(|&(name, _)| name).chain([
            indev.0,
            indev.1.unwrap(),
            outdev.0,
            outdev.1.unwrap(),
        ]);
        let expected: Vec<_> = names
            .zip([1, 0, 100, 0, 1, 60, 0, 0])
            .map(|(name, value)| number(name, value))
            .collect();
        assert_eq!(list.values[..f[0].n_values], expected);
        assert_eq!(f[0].values, list.values.as_ptr());
        assert_eq!(f[1].n_values, 4);
        assert_eq!(counters_of(&list, 1), []);
        assert!(f[1].counters.is_null());
        assert_eq!(
            counters_of(&list, 2),
            [("outdev-errors".into(), 2, 3), ("outdev".into(), 0, 0)]
        );
    }

    /// The name a value's pointer points to (the names are static strings).
    fn name_of(name: *const c_char) -> &'static str {
        let counters = QnsCounterId::ALL.into_iter().flat_map(|id| {
            let (first, second) = id.stat_names();
            std::iter::once(first).chain(second)
        });
        DIRECTION_VALUES
            .iter()
            .map(|&(name, _)| name)
            .chain(counters)
            .find(|n| n.as_ptr() == name)
            .unwrap()
            .to_str()
            .unwrap()
    }

    #[test]
    fn durations_are_histograms_in_query_stats_alone() {
        let m = FilterCounters::default();
        m.add(QnsCounterId::Held, 1, 60);
        m.add(QnsCounterId::HoldTime, 1, 3000);
        let mut builder = StatsListBuilder::default();
        builder.add(
            c"m0".as_ptr(),
            c"n0".as_ptr(),
            c"filter-mirror".as_ptr(),
            &m,
        );
        builder.add_counters(&m, &[QnsCounterId::Held, QnsCounterId::HoldTime]);
        builder.add_object(c"cc0".as_ptr(), c"colo-compare".as_ptr());
        builder.add_counters(&m, &[QnsCounterId::HoldTime]);
        let list = builder.finish();
        assert_eq!(counters_of(&list, 0), [("held".into(), 1, 60)]);
        let values = &list.values[..list.filters[0].n_values];
        let names: Vec<_> = values.iter().map(|v| name_of(v.name)).collect();
        assert_eq!(
            names[4..],
            ["held-packets", "held-bytes", "hold-time", "hold-time-sum"]
        );
        let mut want = [0; HISTOGRAM_BUCKETS];
        want[12] = 1; // [2048, 4096) µs
        let hist = &values[6];
        assert_eq!((hist.value, hist.n_buckets), (1, HISTOGRAM_BUCKETS));
        assert_eq!(hist.buckets, list.buckets[0].as_ptr());
        assert_eq!(list.buckets[0], want);
        assert_eq!(values[7], number(c"hold-time-sum", 3000));
        // The second object's histogram has buckets of its own.
        assert_eq!(list.filters[1].n_values, 2);
        assert_eq!(list.values[8].buckets, list.buckets[1].as_ptr());
        assert!(values[..6].iter().all(|v| v.buckets.is_null()));
    }

    #[test]
    fn event_counts_are_in_query_stats_alone() {
        let w = FilterCounters::default();
        w.set(QnsCounterId::Connections, 2, 0);
        w.add(QnsCounterId::Rewritten, 3, 180);
        w.add(QnsCounterId::Closed, 1, 0);
        let mut builder = StatsListBuilder::default();
        builder.add(
            c"w0".as_ptr(),
            c"n0".as_ptr(),
            c"filter-rewriter".as_ptr(),
            &w,
        );
        let ids = [
            QnsCounterId::Connections,
            QnsCounterId::Rewritten,
            QnsCounterId::Closed,
        ];
        builder.add_counters(&w, &ids);
        let list = builder.finish();
        // query-netfilter-stats: packets and bytes alone
        assert_eq!(counters_of(&list, 0), [("rewritten".into(), 3, 180)]);
        let values: Vec<_> = list.values[4..list.filters[0].n_values]
            .iter()
            .map(|v| (name_of(v.name), v.value))
            .collect();
        assert_eq!(
            values,
            [
                ("connections", 2),
                ("rewritten-packets", 3),
                ("rewritten-bytes", 180),
                ("closed", 1)
            ]
        );
    }

    #[test]
    fn schema_types_and_units() {
        let colo: Vec<_> = schema(QnsStatsProvider::ColoCompare)
            .map(|v| (name_of(v.name), v.kind, v.unit, v.exponent))
            .collect();
        assert!(colo.contains(&(
            "release-latency",
            QnsStatKind::Log2Histogram,
            QnsStatUnit::Seconds,
            -6
        )));
        assert!(colo.contains(&(
            "release-latency-sum",
            QnsStatKind::Cumulative,
            QnsStatUnit::Seconds,
            -6
        )));
        assert!(colo.contains(&(
            "checkpoint-requests",
            QnsStatKind::Cumulative,
            QnsStatUnit::None,
            0
        )));
        assert!(colo.contains(&(
            "primary-queued-bytes",
            QnsStatKind::Instant,
            QnsStatUnit::Bytes,
            0
        )));
    }

    #[test]
    fn no_filters_is_an_empty_list() {
        let list = StatsListBuilder::default().finish();
        assert_eq!((list.view.len, list.view.filters), (0, std::ptr::null()));
    }
}
