//! Per-filter counters: packets and bytes in each direction, plus the named
//! counters that only some filter types report.
//!
//! Every value is an atomic updated with a relaxed `fetch_add`: the packet
//! path takes no lock, several threads may count at once, and a reader (the
//! QMP handler) never blocks a writer. A reader may see a packet counted
//! before its bytes; each value on its own is exact.

use std::{
    ffi::CStr,
    sync::atomic::{AtomicU64, Ordering},
};

/// The direction of a packet, as QEMU's `NetFilterDirection` names it: "tx"
/// is what the netdev sends, "rx" what it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub enum QnsDirection {
    /// Sent by the netdev (QEMU's `NET_FILTER_DIRECTION_TX`).
    Tx = 0,
    /// Received by the netdev (QEMU's `NET_FILTER_DIRECTION_RX`).
    Rx = 1,
}

/// The filter-specific counters, in the order they are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub enum QnsCounterId {
    /// Frames read whole from the indev chardev and injected.
    Indev = 0,
    /// Frames written whole to the outdev chardev.
    Outdev = 1,
    /// Input the indev decoder rejected: packets = rejected frames, bytes =
    /// bytes of input thrown away.
    IndevErrors = 2,
    /// Frames that could not be written to the outdev.
    OutdevErrors = 3,
}

impl QnsCounterId {
    /// Every id, in report order.
    const ALL: [QnsCounterId; 4] = [
        QnsCounterId::Indev,
        QnsCounterId::Outdev,
        QnsCounterId::IndevErrors,
        QnsCounterId::OutdevErrors,
    ];

    /// The name in the QMP reply and the HMP text.
    pub fn c_name(self) -> &'static CStr {
        match self {
            QnsCounterId::Indev => c"indev",
            QnsCounterId::Outdev => c"outdev",
            QnsCounterId::IndevErrors => c"indev-errors",
            QnsCounterId::OutdevErrors => c"outdev-errors",
        }
    }

    /// [`QnsCounterId::c_name`] as a `&str`.
    pub fn name(self) -> &'static str {
        // The names are ASCII literals.
        self.c_name().to_str().unwrap_or_default()
    }

    /// The id with this numeric value, if there is one (C may pass anything).
    pub fn from_raw(raw: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|id| *id as u32 == raw)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// Which filter-specific counters a filter of this QOM type reports.
fn counters_for_type(qom_type: &str) -> u8 {
    use QnsCounterId::*;
    match qom_type {
        "filter-redirector" => Indev.bit() | Outdev.bit() | IndevErrors.bit() | OutdevErrors.bit(),
        "filter-mirror" => Outdev.bit() | OutdevErrors.bit(),
        _ => 0,
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
#[derive(Debug, Default)]
pub struct FilterCounters {
    tx: PacketsAndBytes,
    rx: PacketsAndBytes,
    named: [PacketsAndBytes; QnsCounterId::ALL.len()],
    reported: u8,
}

impl FilterCounters {
    /// Counters for a filter of QOM type `qom_type` (e.g. `filter-redirector`),
    /// which decides the filter-specific counters it reports.
    pub fn for_type(qom_type: &str) -> Self {
        Self {
            reported: counters_for_type(qom_type),
            ..Self::default()
        }
    }

    /// Count one packet of `bytes` bytes handed to the filter in `direction`.
    #[inline]
    pub fn count_packet(&self, direction: QnsDirection, bytes: u64) {
        match direction {
            QnsDirection::Tx => self.tx.add(1, bytes),
            QnsDirection::Rx => self.rx.add(1, bytes),
        }
    }

    /// Add `packets` and `bytes` to the filter-specific counter `id`.
    #[inline]
    pub fn add(&self, id: QnsCounterId, packets: u64, bytes: u64) {
        self.named[id as usize].add(packets, bytes);
    }

    /// Packets and bytes in `direction`.
    pub fn direction(&self, direction: QnsDirection) -> Count {
        match direction {
            QnsDirection::Tx => self.tx.read(),
            QnsDirection::Rx => self.rx.read(),
        }
    }

    /// The value of counter `id` (counted whether or not it is reported).
    pub fn get(&self, id: QnsCounterId) -> Count {
        self.named[id as usize].read()
    }

    /// The filter-specific counters this filter reports, in report order.
    pub fn reported(&self) -> impl Iterator<Item = (QnsCounterId, Count)> + '_ {
        QnsCounterId::ALL
            .into_iter()
            .filter(|id| self.reported & id.bit() != 0)
            .map(|id| (id, self.get(id)))
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, thread};

    use super::*;

    #[test]
    fn counts_each_direction_exactly() {
        let c = FilterCounters::for_type("filter-buffer");
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
        assert_eq!(c.reported().count(), 0);
    }

    #[test]
    fn redirector_reports_its_counters_in_order() {
        let c = FilterCounters::for_type("filter-redirector");
        c.add(QnsCounterId::Outdev, 1, 100);
        c.add(QnsCounterId::Indev, 2, 20);
        let names: Vec<_> = c
            .reported()
            .map(|(id, n)| (id.name(), n.packets, n.bytes))
            .collect();
        assert_eq!(
            names,
            vec![
                ("indev", 2, 20),
                ("outdev", 1, 100),
                ("indev-errors", 0, 0),
                ("outdev-errors", 0, 0)
            ]
        );
        let mirror: Vec<_> = FilterCounters::for_type("filter-mirror")
            .reported()
            .map(|(id, _)| id.name())
            .collect();
        assert_eq!(mirror, vec!["outdev", "outdev-errors"]);
    }

    #[test]
    fn raw_ids_are_checked() {
        assert_eq!(QnsCounterId::from_raw(1), Some(QnsCounterId::Outdev));
        assert_eq!(QnsCounterId::from_raw(4), None);
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let c = Arc::new(FilterCounters::for_type("filter-redirector"));
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
