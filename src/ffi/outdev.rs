//! C ABI of [`OutdevQueue`]: non-blocking, batched outdev writes.

use super::{arg, counters::QnsCounters, opt_arg, or_default, out, with_iovec_slices, QnsResult};
use crate::{
    counters::{QnsCounterId, Shape},
    handle::Handle,
    outdev::{Counting, OutdevQueue, PushError, DEFAULT_BACKLOG_LIMIT},
    wire::{EncodeError, DEFAULT_MAX_FRAME_LEN},
};

/// The frames waiting to be written to one outdev chardev (opaque).
///
/// Use: push each frame with `qns_outdev_push()`; then, as long as
/// `qns_outdev_pending()` has bytes, write as many as the chardev takes
/// without blocking and report them with `qns_outdev_advance()`; when the
/// chardev takes nothing more, wait until it is writable and go on. If the
/// peer is gone, `qns_outdev_discard()` drops the backlog. Hold senders that
/// can wait while `qns_outdev_congested()`, and let them go on once
/// `qns_outdev_drained()`.
///
/// Owner: whoever called `qns_outdev_new()`; released with
/// `qns_outdev_free()`. Thread safety: none; one thread at a time.
pub struct QnsOutdev(Handle<OutdevQueue>);

/// A new, empty queue. `vnet_hdr`: frames carry the vnet header length field.
/// `max_frame_len`: the largest payload, 0 for QEMU's `NET_BUFSIZE`.
/// `backlog_limit`: the most bytes kept unsent (a frame that does not fit is
/// refused, except that an empty queue takes any one frame), 0 for the
/// default of 4 MiB, `SIZE_MAX` for no bound but the owner's (the water
/// marks are then those of the default). Free it with `qns_outdev_free()`. Never NULL; cannot
/// panic (running out of memory aborts).
#[no_mangle]
pub extern "C" fn qns_outdev_new(
    vnet_hdr: bool,
    max_frame_len: u32,
    backlog_limit: usize,
) -> *mut QnsOutdev {
    let max = or_default(max_frame_len, DEFAULT_MAX_FRAME_LEN);
    let limit = or_default(backlog_limit, DEFAULT_BACKLOG_LIMIT);
    Box::into_raw(Box::new(QnsOutdev(Handle::new(OutdevQueue::new(
        vnet_hdr, max, limit,
    )))))
}

/// Free a queue (frames still in it are dropped uncounted: call
/// `qns_outdev_discard()` first to count them). NULL is ignored. Cannot panic.
///
/// # Safety
/// `outdev` must be NULL or from `qns_outdev_new()` and not freed before.
#[no_mangle]
pub unsafe extern "C" fn qns_outdev_free(outdev: *mut QnsOutdev) {
    // SAFETY: forwarded from this function's contract.
    unsafe { super::free_box(outdev) }
}

/// Count as colo-compare does, instead of as a filter (`outdev`,
/// `outdev-errors`, Ethernet bytes): the frames written in counter
/// `written_id`, those refused or dropped in `lost_id`, both with their
/// whole payloads as a decoder counts them; and for each frame written, in
/// the duration `latency_id`, the microseconds from the arrival given to
/// `qns_outdev_push_at()` to the `now_us` given to `qns_outdev_advance_at()`.
/// An unknown id, or a `latency_id` that is no duration, is
/// `QNS_RESULT_INVALID_ARGUMENT` (nothing changes).
///
/// # Safety
/// `outdev` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qns_outdev_count_as(
    outdev: *mut QnsOutdev,
    written_id: u32,
    lost_id: u32,
    latency_id: u32,
) -> QnsResult {
    let outdev = &arg!(outdev).0;
    let (Some(written), Some(lost), Some(latency)) = (
        QnsCounterId::from_raw(written_id),
        QnsCounterId::from_raw(lost_id),
        QnsCounterId::from_raw(latency_id).filter(|id| id.shape() == Shape::Duration),
    ) else {
        return QnsResult::InvalidArgument;
    };
    outdev
        .with(|q| {
            q.count_as(Counting {
                written,
                lost,
                latency: Some(latency),
                ethernet_bytes: false,
            })
        })
        .into()
}

/// Queue the frame whose payload is `iov[0..iovcnt]`, announcing a vnet
/// header of `vnet_hdr_len` bytes when `vnet_hdr` is on.
///
/// Returns `QNS_RESULT_OK`; `QNS_RESULT_EMPTY_FRAME` for an empty payload
/// (nothing queued, nothing counted); `QNS_RESULT_FRAME_TOO_LARGE` or
/// `QNS_RESULT_BACKLOG_FULL` when the frame is refused, which also counts it
/// in `counters`' `outdev-errors` (or the counter `qns_outdev_count_as()`
/// chose).
///
/// # Safety
/// `outdev` NULL or live; `counters` NULL or live counters; `iov` must point
/// to `iovcnt` `struct iovec`s (NULL allowed when `iovcnt` is 0), each
/// describing readable memory.
#[no_mangle]
pub unsafe extern "C" fn qns_outdev_push(
    outdev: *mut QnsOutdev,
    counters: *mut QnsCounters,
    iov: *const libc::iovec,
    iovcnt: usize,
    vnet_hdr_len: u32,
) -> QnsResult {
    // SAFETY: forwarded from this function's contract.
    unsafe { qns_outdev_push_at(outdev, counters, iov, iovcnt, vnet_hdr_len, 0) }
}

/// `qns_outdev_push()` a frame that arrived at `arrival_us` (microseconds
/// of the caller's clock), for the latency `qns_outdev_count_as()` records.
///
/// # Safety
/// As `qns_outdev_push()`.
#[no_mangle]
pub unsafe extern "C" fn qns_outdev_push_at(
    outdev: *mut QnsOutdev,
    counters: *mut QnsCounters,
    iov: *const libc::iovec,
    iovcnt: usize,
    vnet_hdr_len: u32,
    arrival_us: i64,
) -> QnsResult {
    let (outdev, counters) = (&arg!(outdev).0, opt_arg!(counters).map(|c| &c.0));
    let push = |parts: &[&[u8]]| {
        outdev.with(|q| {
            let refused = match q.push_at(parts, vnet_hdr_len, arrival_us) {
                Ok(()) => return QnsResult::Ok,
                Err(PushError::Encode(EncodeError::EmptyFrame)) => return QnsResult::EmptyFrame,
                Err(PushError::Encode(EncodeError::FrameTooLarge { .. })) => {
                    QnsResult::FrameTooLarge
                }
                Err(PushError::BacklogFull { .. }) => QnsResult::BacklogFull,
            };
            if let Some(c) = counters {
                let len = parts.iter().map(|p| p.len()).sum();
                let counting = q.counting();
                c.add(counting.lost, 1, counting.bytes(len, vnet_hdr_len) as u64);
            }
            refused
        })
    };
    // SAFETY: the caller guarantees iov describes iovcnt readable buffers.
    match unsafe { with_iovec_slices(iov, iovcnt, push) } {
        Ok(result) => result.into(),
        Err(result) => result,
    }
}

/// Point `*data` and `*len` at the bytes to write next (`*len` is 0 when
/// nothing is queued). They stay valid until the next call on `outdev`.
///
/// # Safety
/// `outdev` NULL or live; `data` and `len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn qns_outdev_pending(
    outdev: *const QnsOutdev,
    data: *mut *const u8,
    len: *mut usize,
) -> QnsResult {
    let (outdev, data, len) = (&arg!(outdev).0, out!(data), out!(len));
    outdev
        .with(|q| {
            data.write(q.pending().as_ptr());
            len.write(q.pending().len());
        })
        .into()
}

/// Report that `written` bytes from the start of `qns_outdev_pending()` were
/// written. Each frame now written whole counts in `counters`' `outdev`
/// (its payload without the vnet header in front), or in the counters
/// `qns_outdev_count_as()` chose. A `written` larger than what is pending
/// is `QNS_RESULT_INVALID_ARGUMENT` (nothing changes).
///
/// # Safety
/// `outdev` NULL or live; `counters` NULL or live counters.
#[no_mangle]
pub unsafe extern "C" fn qns_outdev_advance(
    outdev: *mut QnsOutdev,
    counters: *mut QnsCounters,
    written: usize,
) -> QnsResult {
    // SAFETY: forwarded from this function's contract.
    unsafe { qns_outdev_advance_at(outdev, counters, written, 0) }
}

/// `qns_outdev_advance()`, the bytes written at `now_us` (the clock of
/// `qns_outdev_push_at()`): each frame completed records its latency.
///
/// # Safety
/// As `qns_outdev_advance()`.
#[no_mangle]
pub unsafe extern "C" fn qns_outdev_advance_at(
    outdev: *mut QnsOutdev,
    counters: *mut QnsCounters,
    written: usize,
    now_us: i64,
) -> QnsResult {
    let (outdev, counters) = (&arg!(outdev).0, opt_arg!(counters).map(|c| &c.0));
    outdev
        .with(|q| {
            if written > q.queued() {
                return QnsResult::InvalidArgument;
            }
            q.advance(written, counters, now_us);
            QnsResult::Ok
        })
        .into()
}

/// Drop every queued frame (the peer is gone), counting each in `counters`'
/// `outdev-errors` (or the counter `qns_outdev_count_as()` chose); `*dropped` (when not NULL) gets how many.
///
/// # Safety
/// `outdev` NULL or live; `counters` NULL or live counters; `dropped` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn qns_outdev_discard(
    outdev: *mut QnsOutdev,
    counters: *mut QnsCounters,
    dropped: *mut usize,
) -> QnsResult {
    let (outdev, counters) = (&arg!(outdev).0, opt_arg!(counters).map(|c| &c.0));
    let n = match outdev.with(|q| q.discard(counters)) {
        Ok(n) => n,
        Err(e) => return e,
    };
    // SAFETY: the contract: NULL or writable.
    if let Some(dropped) = unsafe { dropped.as_mut() } {
        *dropped = n;
    }
    QnsResult::Ok
}

/// A yes/no question about the queue; `if_not` for a NULL, busy or poisoned
/// queue, which has nothing queued that anyone could wait for.
fn ask(outdev: Option<&QnsOutdev>, if_not: bool, question: fn(&OutdevQueue) -> bool) -> bool {
    outdev
        .and_then(|q| q.0.with(|q| question(q)).ok())
        .unwrap_or(if_not)
}

/// Whether the backlog is at or above its high-water mark (1/16 of the
/// bound): a sender that can wait should be held until
/// `qns_outdev_drained()`. False for NULL (and for a poisoned queue).
///
/// # Safety
/// `outdev` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qns_outdev_congested(outdev: *const QnsOutdev) -> bool {
    ask(opt_arg!(outdev), false, OutdevQueue::congested)
}

/// Whether the backlog is at or below its low-water mark (1/64 of the
/// bound): held senders may go on. True for NULL (and for a poisoned queue:
/// nothing is left to wait for).
///
/// # Safety
/// `outdev` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qns_outdev_drained(outdev: *const QnsOutdev) -> bool {
    ask(opt_arg!(outdev), true, OutdevQueue::drained)
}

/// Whether the first queued frame is partly written: the peer has its
/// start and must get the rest before anything else on the stream. False
/// for NULL (and for a poisoned queue).
///
/// # Safety
/// `outdev` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qns_outdev_mid_frame(outdev: *const QnsOutdev) -> bool {
    ask(opt_arg!(outdev), false, OutdevQueue::mid_frame)
}
