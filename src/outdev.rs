//! The outdev send queue: frames waiting to be written to a chardev that
//! cannot take them yet, in one contiguous buffer.
//!
//! QEMU 10.2.2 writes each frame with a blocking `qemu_chr_fe_write_all()`,
//! so a peer that stops reading stalls the whole main loop (QMP included).
//! With this queue the C side writes without blocking: it pushes each frame,
//! writes as much of [`OutdevQueue::pending`] as the chardev takes, reports
//! it with [`OutdevQueue::advance`], and waits for the chardev to become
//! writable for the rest. Frames are written in order, never reordered or
//! split between writes of other frames, and the backlog is bounded: a frame
//! that does not fit is refused (and counted as an outdev error). Several
//! frames queued before a write go out together in that one write.
//!
//! Refusing is the last resort. Long before the bound, at the high-water
//! mark ([`OutdevQueue::congested`]), the C side holds the senders that can
//! wait (the netdev, a guest NIC, or a redirector reading its indev, through
//! QEMU's `qemu_netfilter_hold()`) and lets them go on once the backlog is
//! down to the low-water mark ([`OutdevQueue::drained`]), so a fast sender
//! is slowed to the peer's pace instead of losing frames.
//!
//! A filter's queue counts what it writes in `outdev` and what it loses in
//! `outdev-errors`. colo-compare's counts them as its own counters
//! ([`OutdevQueue::count_as`]), and records for each packet written the
//! time since it arrived ([`OutdevQueue::push_at`], [`OutdevQueue::advance`]).

use std::collections::VecDeque;

use crate::{
    counters::{FilterCounters, QnsCounterId},
    wire::{self, EncodeError},
};

/// Default bound on queued bytes (headers included) per outdev.
pub const DEFAULT_BACKLOG_LIMIT: usize = 4 << 20;

/// The high-water mark is this fraction of the bound, or of the default
/// bound for a larger one (256 KiB of 4 MiB): far enough below it that what
/// a held sender still hands over (the rest of one 69 KiB netdev read)
/// always fits.
const HIGH_WATER_DIVISOR: usize = 16;
/// The low-water mark is this fraction of the bound (64 KiB of 4 MiB): a
/// held sender goes on while the peer still has that much to read, so the
/// stream does not stall between the two.
const LOW_WATER_DIVISOR: usize = 64;
/// The allocation kept once the backlog is written: one netdev read's worth
/// of frames (69 KiB and their headers) fits, so a steady stream reuses it.
const KEEP_CAPACITY: usize = 128 * 1024;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The frame itself is invalid (empty, or over the maximum length).
    Encode(EncodeError),
    /// The backlog is full: the peer is not reading fast enough.
    BacklogFull {
        /// Bytes already queued.
        queued: usize,
        /// The bound.
        limit: usize,
    },
}

/// Which counters a queue counts in, and what it counts of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counting {
    /// Frames written whole.
    pub written: QnsCounterId,
    /// Frames refused, or dropped because the peer is gone.
    pub lost: QnsCounterId,
    /// A duration: for each frame written, the microseconds from its
    /// arrival (given to [`OutdevQueue::push_at`]) to the write that
    /// completed it.
    pub latency: Option<QnsCounterId>,
    /// Count a frame's bytes as its Ethernet frame, without the netdev's
    /// vnet header in front (a filter's `outdev`); otherwise the whole
    /// payload, as a decoder counts what it hands out (colo-compare's
    /// `released` against its `primary`).
    pub ethernet_bytes: bool,
}

impl Default for Counting {
    /// A filter's: `outdev` and `outdev-errors`, Ethernet bytes, no latency.
    fn default() -> Self {
        Self {
            written: QnsCounterId::Outdev,
            lost: QnsCounterId::OutdevErrors,
            latency: None,
            ethernet_bytes: true,
        }
    }
}

impl Counting {
    /// The bytes counted of a payload of `len` bytes whose first
    /// `vnet_hdr_len` are the netdev's vnet header.
    pub fn bytes(&self, len: usize, vnet_hdr_len: u32) -> usize {
        if self.ethernet_bytes {
            wire::ethernet_len(len, vnet_hdr_len)
        } else {
            len
        }
    }
}

/// One queued frame.
#[derive(Debug)]
struct Queued {
    /// Where it ends in `bytes`.
    end: usize,
    /// Its payload's length, as the wire header gives it.
    payload_len: usize,
    /// What the counters count of it (see [`Counting::bytes`]).
    counted_len: usize,
    /// When it arrived, in the caller's microseconds (for `latency`).
    arrival_us: i64,
}

/// Queued frames for one outdev.
#[derive(Debug)]
pub struct OutdevQueue {
    vnet_hdr: bool,
    max_frame_len: u32,
    backlog_limit: usize,
    counting: Counting,
    /// Encoded frames; `bytes[sent..]` is not written yet.
    bytes: Vec<u8>,
    sent: usize,
    /// The queued frames, oldest first.
    frames: VecDeque<Queued>,
}

impl OutdevQueue {
    /// A queue whose frames carry the vnet header length field when
    /// `vnet_hdr` is set, hold payloads of at most `max_frame_len` bytes, and
    /// never hold more than `backlog_limit` bytes unsent (a single frame is
    /// always accepted into an empty queue).
    pub fn new(vnet_hdr: bool, max_frame_len: u32, backlog_limit: usize) -> Self {
        Self {
            vnet_hdr,
            max_frame_len,
            backlog_limit,
            counting: Counting::default(),
            bytes: Vec::new(),
            sent: 0,
            frames: VecDeque::new(),
        }
    }

    /// Count in other counters than a filter's (see [`Counting`]).
    pub fn count_as(&mut self, counting: Counting) {
        self.counting = counting;
    }

    /// What this queue counts, and where.
    pub fn counting(&self) -> &Counting {
        &self.counting
    }

    /// Bytes queued and not written yet.
    pub fn queued(&self) -> usize {
        self.bytes.len() - self.sent
    }

    /// The bound the water marks are fractions of: a queue bounded only
    /// by what its owner holds anyway (colo-compare's, which a checkpoint
    /// fills with every packet it kept) slows its senders as a filter's.
    fn water_base(&self) -> usize {
        self.backlog_limit.min(DEFAULT_BACKLOG_LIMIT)
    }

    /// At or above the high-water mark: senders that can wait should.
    pub fn congested(&self) -> bool {
        self.queued() >= self.water_base() / HIGH_WATER_DIVISOR
    }

    /// At or below the low-water mark: senders that waited may go on.
    pub fn drained(&self) -> bool {
        self.queued() <= self.water_base() / LOW_WATER_DIVISOR
    }

    /// The first queued frame is partly written: the peer has its start,
    /// and must get the rest before anything else on this stream.
    pub fn mid_frame(&self) -> bool {
        // The head frame starts its length before its end (which may be
        // before `bytes[0]`, once compaction dropped its written start).
        self.frames
            .front()
            .is_some_and(|f| self.sent + wire::header_len(self.vnet_hdr) + f.payload_len > f.end)
    }

    /// Queue the frame whose payload is `parts`, in order; its first
    /// `vnet_hdr_len` bytes are the netdev's vnet header.
    pub fn push(&mut self, parts: &[&[u8]], vnet_hdr_len: u32) -> Result<(), PushError> {
        self.push_at(parts, vnet_hdr_len, 0)
    }

    /// [`OutdevQueue::push`] a frame that arrived at `arrival_us`.
    pub fn push_at(
        &mut self,
        parts: &[&[u8]],
        vnet_hdr_len: u32,
        arrival_us: i64,
    ) -> Result<(), PushError> {
        let queued = self.queued();
        let len = parts.iter().map(|p| p.len()).sum::<usize>();
        if len == 0 {
            // Nothing to write, whatever the backlog: not an error.
            return Err(PushError::Encode(EncodeError::EmptyFrame));
        }
        if queued > 0 && queued + wire::header_len(self.vnet_hdr) + len > self.backlog_limit {
            return Err(PushError::BacklogFull {
                queued,
                limit: self.backlog_limit,
            });
        }
        if queued == 0 {
            // Everything was written: start the buffer over, keeping its
            // allocation.
            self.bytes.clear();
            self.sent = 0;
        }
        let payload_len = wire::encode_into(
            self.vnet_hdr,
            self.max_frame_len,
            parts,
            vnet_hdr_len,
            &mut self.bytes,
        )
        .map_err(PushError::Encode)?;
        self.frames.push_back(Queued {
            end: self.bytes.len(),
            payload_len,
            counted_len: self.counting.bytes(payload_len, vnet_hdr_len),
            arrival_us,
        });
        Ok(())
    }

    /// The bytes to write next: the unsent rest of every queued frame.
    pub fn pending(&self) -> &[u8] {
        &self.bytes[self.sent..]
    }

    /// `n` bytes of [`OutdevQueue::pending`] were written, at `now_us`.
    /// Frames completed by this are counted in `written`, in one update for
    /// all of them (a batched write completes hundreds of small frames),
    /// and each one's time since its arrival in `latency`. Returns how many
    /// frames were completed.
    pub fn advance(&mut self, n: usize, counters: Option<&FilterCounters>, now_us: i64) -> usize {
        self.sent += n.min(self.queued());
        let (mut done, mut bytes) = (0, 0);
        while let Some(f) = self.frames.front() {
            if f.end > self.sent {
                break;
            }
            done += 1;
            bytes += f.counted_len as u64;
            if let (Some(c), Some(latency)) = (counters, self.counting.latency) {
                c.add(
                    latency,
                    1,
                    now_us.saturating_sub(f.arrival_us).max(0) as u64,
                );
            }
            self.frames.pop_front();
        }
        if let (Some(c), true) = (counters, done > 0) {
            c.add(self.counting.written, done as u64, bytes);
        }
        self.compact();
        done
    }

    /// The peer is gone: drop every queued frame, counting each (even one
    /// partly written) in `lost`. Returns how many were dropped.
    pub fn discard(&mut self, counters: Option<&FilterCounters>) -> usize {
        let dropped = self.frames.len();
        for f in self.frames.drain(..) {
            if let Some(c) = counters {
                c.add(self.counting.lost, 1, f.counted_len as u64);
            }
        }
        self.bytes.clear();
        self.sent = 0;
        self.shrink();
        dropped
    }

    /// Drop written bytes from the front once they are the larger part of
    /// the buffer, so that a peer that keeps up keeps the buffer small.
    fn compact(&mut self) {
        if self.sent == self.bytes.len() {
            self.bytes.clear();
            self.sent = 0;
            self.shrink();
        } else if self.sent > self.bytes.len() / 2 {
            self.bytes.drain(..self.sent);
            for frame in &mut self.frames {
                frame.end -= self.sent;
            }
            self.sent = 0;
        }
    }

    /// Give back a large allocation once the backlog is gone, so a burst
    /// does not pin memory for the filter's lifetime.
    fn shrink(&mut self) {
        if self.bytes.capacity() > KEEP_CAPACITY {
            self.bytes.shrink_to(KEEP_CAPACITY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        counters::{Count, Histogram},
        decoder::DEFAULT_MAX_FRAME_LEN,
    };

    fn queue(limit: usize) -> OutdevQueue {
        OutdevQueue::new(false, DEFAULT_MAX_FRAME_LEN, limit)
    }

    #[test]
    fn frames_go_out_together_and_in_order() {
        let c = FilterCounters::default();
        let mut q = queue(DEFAULT_BACKLOG_LIMIT);
        q.push(&[b"ab"], 0).unwrap();
        q.push(&[b"c", b"de"], 0).unwrap();
        assert_eq!(q.pending(), b"\0\0\0\x02ab\0\0\0\x03cde");
        assert_eq!(q.advance(q.pending().len(), Some(&c), 0), 2);
        assert_eq!(q.queued(), 0);
        assert_eq!(
            c.get(QnsCounterId::Outdev),
            Count {
                packets: 2,
                bytes: 5
            }
        );
    }

    #[test]
    fn partial_writes_count_a_frame_once_it_is_whole() {
        let c = FilterCounters::default();
        let mut q = OutdevQueue::new(true, DEFAULT_MAX_FRAME_LEN, DEFAULT_BACKLOG_LIMIT);
        q.push(&[&[7; 100]], 12).unwrap();
        q.push(&[&[8; 50]], 12).unwrap();
        let mut written = Vec::new();
        let mut completed = Vec::new();
        while !q.pending().is_empty() {
            let n = q.pending().len().min(33);
            written.extend_from_slice(&q.pending()[..n]);
            completed.push(q.advance(n, Some(&c), 0));
        }
        assert_eq!(completed.iter().sum::<usize>(), 2);
        assert_eq!(written.len(), 8 + 100 + 8 + 50);
        assert_eq!(&written[..8], b"\0\0\0\x64\0\0\0\x0c");
        // The bytes counted are the Ethernet frames, without the vnet headers.
        assert_eq!(
            c.get(QnsCounterId::Outdev),
            Count {
                packets: 2,
                bytes: 150 - 2 * 12
            }
        );
    }

    #[test]
    fn backlog_is_bounded_but_one_frame_always_fits() {
        let mut q = queue(100);
        q.push(&[&[0; 200]], 0).unwrap();
        assert_eq!(
            q.push(&[&[0; 10]], 0),
            Err(PushError::BacklogFull {
                queued: 204,
                limit: 100
            })
        );
        q.advance(204, None, 0);
        q.push(&[&[0; 50]], 0).unwrap();
        q.push(&[&[0; 40]], 0).unwrap();
        assert!(matches!(
            q.push(&[&[0; 10]], 0),
            Err(PushError::BacklogFull { .. })
        ));
        // An empty frame has nothing to write: not a full backlog.
        assert_eq!(
            q.push(&[], 0),
            Err(PushError::Encode(EncodeError::EmptyFrame))
        );
    }

    #[test]
    fn mid_frame_is_a_head_frame_partly_written() {
        let mut q = queue(DEFAULT_BACKLOG_LIMIT);
        assert!(!q.mid_frame());
        q.push(&[&[1; 10]], 0).unwrap();
        q.push(&[&[2; 10]], 0).unwrap();
        assert!(!q.mid_frame());
        q.advance(3, None, 0);
        assert!(q.mid_frame());
        q.advance(11, None, 0); // the first frame, 14 bytes, is whole
        assert!(!q.mid_frame());
        q.advance(1, None, 0);
        assert!(q.mid_frame());
        // Compaction (more than half written) keeps the answer right.
        q.push(&[&[3; 2]], 0).unwrap();
        q.advance(13, None, 0);
        assert!(!q.mid_frame());
        q.advance(2, None, 0);
        assert!(q.mid_frame());
        q.advance(4, None, 0);
        assert!(!q.mid_frame());
        q.push(&[&[4; 5]], 0).unwrap();
        q.advance(1, None, 0);
        q.discard(None);
        assert!(!q.mid_frame());
    }

    #[test]
    fn congestion_has_hysteresis_between_the_water_marks() {
        // high water 640 / 16 = 40 bytes, low water 640 / 64 = 10 bytes
        let mut q = queue(640);
        assert!(!q.congested() && q.drained());
        q.push(&[&[0; 30]], 0).unwrap();
        assert!(!q.congested() && !q.drained());
        q.push(&[&[0; 10]], 0).unwrap();
        assert_eq!(q.queued(), 48);
        assert!(q.congested() && !q.drained());
        q.advance(20, None, 0);
        assert!(!q.congested() && !q.drained());
        q.advance(18, None, 0);
        assert!(!q.congested() && q.drained());
    }

    #[test]
    fn a_written_backlog_keeps_a_bounded_allocation() {
        let mut q = queue(DEFAULT_BACKLOG_LIMIT);
        for _ in 0..100 {
            q.push(&[&[0; 9000]], 0).unwrap();
        }
        q.advance(q.queued(), None, 0);
        assert!(q.bytes.capacity() <= KEEP_CAPACITY);
        // one read's worth of jumbo frames reuses the allocation
        let before = q.bytes.as_ptr();
        for _ in 0..7 {
            q.push(&[&[0; 9000]], 0).unwrap();
        }
        q.advance(q.queued(), None, 0);
        assert_eq!(q.bytes.as_ptr(), before);
    }

    #[test]
    fn colo_compare_counts_its_releases_and_how_long_each_waited() {
        let c = FilterCounters::default();
        let mut q = OutdevQueue::new(true, DEFAULT_MAX_FRAME_LEN, usize::MAX);
        q.count_as(Counting {
            written: QnsCounterId::Released,
            lost: QnsCounterId::SendErrors,
            latency: Some(QnsCounterId::ReleaseLatency),
            ethernet_bytes: false,
        });
        q.push_at(&[&[1; 60]], 12, 1_000).unwrap();
        q.push_at(&[&[2; 70]], 12, 1_090).unwrap();
        q.push_at(&[&[3; 80]], 0, 1_100).unwrap();
        // the first frame whole and the start of the second, at 1100 µs
        assert_eq!(q.advance(8 + 60 + 5, Some(&c), 1_100), 1);
        // the rest of the second, 40 µs later
        assert_eq!(q.advance(8 + 70 - 5, Some(&c), 1_140), 1);
        // whole payloads, vnet headers included, as the decoder counts them
        assert_eq!(
            c.get(QnsCounterId::Released),
            Count {
                packets: 2,
                bytes: 130
            }
        );
        let (buckets, sum) = c.duration(QnsCounterId::ReleaseLatency).unwrap();
        assert_eq!(sum, 100 + 50);
        assert_eq!(buckets[Histogram::bucket(100)], 1);
        assert_eq!(buckets[Histogram::bucket(50)], 1);
        assert_eq!(q.discard(Some(&c)), 1);
        assert_eq!(
            c.get(QnsCounterId::SendErrors),
            Count {
                packets: 1,
                bytes: 80
            }
        );
        assert_eq!(c.get(QnsCounterId::Outdev), Count::default());
    }

    #[test]
    fn an_unbounded_queue_has_the_default_water_marks() {
        let mut q = queue(usize::MAX);
        let high = DEFAULT_BACKLOG_LIMIT / HIGH_WATER_DIVISOR;
        while q.queued() < high - 1004 {
            q.push(&[&[0; 1000]], 0).unwrap();
        }
        assert!(!q.congested());
        q.push(&[&[0; 1000]], 0).unwrap();
        assert!(q.congested());
        // far past any bound a filter has: a checkpoint's flush is never refused
        for _ in 0..5_000 {
            q.push(&[&[0; 1000]], 0).unwrap();
        }
        q.advance(
            q.queued() - DEFAULT_BACKLOG_LIMIT / LOW_WATER_DIVISOR,
            None,
            0,
        );
        assert!(q.drained());
    }

    #[test]
    fn discard_counts_every_queued_frame() {
        let c = FilterCounters::default();
        let mut q = queue(DEFAULT_BACKLOG_LIMIT);
        q.push(&[&[1; 10]], 0).unwrap();
        q.push(&[&[1; 20]], 0).unwrap();
        q.advance(5, Some(&c), 0);
        assert_eq!(q.discard(Some(&c)), 2);
        assert_eq!(
            c.get(QnsCounterId::OutdevErrors),
            Count {
                packets: 2,
                bytes: 30
            }
        );
        assert_eq!(q.pending(), b"");
    }

    #[test]
    fn invalid_frames_are_refused() {
        let mut q = OutdevQueue::new(false, 10, DEFAULT_BACKLOG_LIMIT);
        assert_eq!(
            q.push(&[], 0),
            Err(PushError::Encode(EncodeError::EmptyFrame))
        );
        assert_eq!(
            q.push(&[&[0; 11]], 0),
            Err(PushError::Encode(EncodeError::FrameTooLarge {
                len: 11,
                max: 10
            }))
        );
    }

    #[test]
    fn compaction_keeps_offsets_right() {
        let c = FilterCounters::default();
        let mut q = queue(DEFAULT_BACKLOG_LIMIT);
        let mut expected = Vec::new();
        let mut written = Vec::new();
        for i in 0..200u32 {
            let payload = vec![i as u8; 1 + (i as usize * 37) % 300];
            expected.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            expected.extend_from_slice(&payload);
            q.push(&[&payload], 0).unwrap();
            let n = q.pending().len().min(97);
            written.extend_from_slice(&q.pending()[..n]);
            q.advance(n, Some(&c), 0);
        }
        written.extend_from_slice(q.pending());
        q.advance(q.pending().len(), Some(&c), 0);
        assert_eq!(written, expected);
        assert_eq!(c.get(QnsCounterId::Outdev).packets, 200);
    }
}
