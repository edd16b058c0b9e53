//! The list behind `query-netfilter-stats`, built in one pass over the
//! filters the C side walks: per filter one entry with its two directions,
//! then the filter-specific counters its class reports, in its order.
//!
//! The list is the C view itself (`#[repr(C)]` types). Its strings are the
//! filter's own (QOM id, netdev id, type name), borrowed, not copied: the
//! caller converts the list to QAPI types, which copies each string once,
//! before the filters can change (QEMU holds the BQL throughout).

use std::ffi::c_char;

use crate::counters::{FilterCounters, QnsCounterId, QnsDirection};

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

/// One filter's entry in a `QnsStatsList`.
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
    /// `n_counters` filter-specific counters, in the order the filter's
    /// class listed them. NULL when `n_counters` is 0.
    pub counters: *const QnsCounterStats,
    /// Entries at `counters`.
    pub n_counters: usize,
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
}

/// Collects the filters of one query.
#[derive(Debug, Default)]
pub struct StatsListBuilder {
    filters: Vec<QnsFilterStats>,
    /// Every filter's counters, one after the other.
    counters: Vec<QnsCounterStats>,
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
            // An index into `self.counters` until `finish` makes it a
            // pointer (the vector may still move).
            counters: std::ptr::null(),
            n_counters: 0,
        });
    }

    /// Add the counters `ids` (in that order) of `counters` to the filter
    /// added last. Returns false, adding nothing, when no filter was added.
    pub fn add_counters(&mut self, counters: &FilterCounters, ids: &[QnsCounterId]) -> bool {
        let Some(last) = self.filters.last_mut() else {
            return false;
        };
        last.n_counters += ids.len();
        self.counters.extend(ids.iter().map(|&id| {
            let count = counters.get(id);
            QnsCounterStats {
                name: id.c_name().as_ptr(),
                packets: count.packets,
                bytes: count.bytes,
            }
        }));
        true
    }

    /// The list, in the order the filters were added.
    pub fn finish(self) -> Box<OwnedStatsList> {
        let Self {
            mut filters,
            counters,
        } = self;
        // The counters' heap buffer does not move when the vector moves
        // into the box, so pointers into it stay valid.
        let mut start = 0;
        for f in &mut filters {
            f.counters = ptr_or_null(&counters[start..start + f.n_counters]);
            start += f.n_counters;
        }
        Box::new(OwnedStatsList {
            view: QnsStatsList {
                filters: ptr_or_null(&filters),
                len: filters.len(),
            },
            filters,
            counters,
        })
    }
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
        assert_eq!(counters_of(&list, 1), []);
        assert!(f[1].counters.is_null());
        assert_eq!(
            counters_of(&list, 2),
            [("outdev-errors".into(), 2, 3), ("outdev".into(), 0, 0)]
        );
    }

    #[test]
    fn no_filters_is_an_empty_list() {
        let list = StatsListBuilder::default().finish();
        assert_eq!((list.view.len, list.view.filters), (0, std::ptr::null()));
    }
}
