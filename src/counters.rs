//! Per-filter counters: packets and bytes in each direction, plus the named
//! counters that only some filter types report (each filter class says
//! which, through its `get_stats` hook in QEMU's `NetFilterClass`).
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
#[repr(u32)]
pub enum QnsDirection {
    /// Sent by the netdev (QEMU's `NET_FILTER_DIRECTION_TX`).
    Tx = 0,
    /// Received by the netdev (QEMU's `NET_FILTER_DIRECTION_RX`).
    Rx = 1,
}

/// The filter-specific counters. A filter class reports the ones it has, in
/// the order it lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
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
    /// Every id.
    pub(crate) const ALL: [QnsCounterId; 4] = [
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

    /// The id with this numeric value, if there is one (C may pass anything).
    pub fn from_raw(raw: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|id| *id as u32 == raw)
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

    /// The value of counter `id`.
    pub fn get(&self, id: QnsCounterId) -> Count {
        self.named[id as usize].read()
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
        let got: Vec<_> = QnsCounterId::ALL
            .into_iter()
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
        assert_eq!(QnsCounterId::from_raw(1), Some(QnsCounterId::Outdev));
        assert_eq!(QnsCounterId::from_raw(4), None);
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
