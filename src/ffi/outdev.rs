//! C ABI of [`OutdevQueue`]: non-blocking, batched outdev writes.

use super::{
    boundary, counters::QnsCounters, max_frame_len_or_default, with_iovec_slices, QnsResult,
};
use crate::{
    counters::QnsCounterId,
    encoder::EncodeError,
    outdev::{OutdevQueue, PushError, DEFAULT_BACKLOG_LIMIT},
};

/// The frames waiting to be written to one outdev chardev (opaque).
///
/// Use: push each frame with [`qns_outdev_push`]; then, as long as
/// [`qns_outdev_pending`] has bytes, write as many as the chardev takes
/// without blocking and report them with [`qns_outdev_advance`]; when the
/// chardev takes nothing more, wait until it is writable and go on. If the
/// peer is gone, [`qns_outdev_discard`] drops the backlog. Hold senders that
/// can wait while [`qns_outdev_congested`], and let them go on once
/// [`qns_outdev_drained`].
///
/// Owner: whoever called [`qns_outdev_new`]; released with
/// [`qns_outdev_free`]. Thread safety: none; one thread at a time.
pub struct QnsOutdev(OutdevQueue);

/// A new, empty queue. `vnet_hdr`: frames carry the vnet header length field.
/// `max_frame_len`: the largest payload, 0 for QEMU's `NET_BUFSIZE`.
/// `backlog_limit`: the most bytes kept unsent (a frame that does not fit is
/// refused), 0 for the default of 4 MiB. Free it with [`qns_outdev_free`].
#[no_mangle]
pub extern "C" fn qns_outdev_new(
    vnet_hdr: bool,
    max_frame_len: u32,
    backlog_limit: usize,
) -> *mut QnsOutdev {
    let max = max_frame_len_or_default(max_frame_len);
    let limit = if backlog_limit == 0 {
        DEFAULT_BACKLOG_LIMIT
    } else {
        backlog_limit
    };
    boundary(std::ptr::null_mut(), || {
        Box::into_raw(Box::new(QnsOutdev(OutdevQueue::new(vnet_hdr, max, limit))))
    })
}

/// Free a queue (frames still in it are dropped uncounted: call
/// [`qns_outdev_discard`] first to count them). NULL is ignored.
///
/// # Safety
/// `outdev` must be NULL or from [`qns_outdev_new`] and not freed before.
#[no_mangle]
pub unsafe extern "C" fn qns_outdev_free(outdev: *mut QnsOutdev) {
    if !outdev.is_null() {
        // SAFETY: from Box::into_raw in qns_outdev_new, freed once (caller's
        // guarantee).
        drop(unsafe { Box::from_raw(outdev) });
    }
}

/// Queue the frame whose payload is `iov[0..iovcnt]`, announcing a vnet
/// header of `vnet_hdr_len` bytes when `vnet_hdr` is on.
///
/// Returns `QNS_RESULT_OK`; `QNS_RESULT_EMPTY_FRAME` for an empty payload
/// (nothing queued, nothing counted); `QNS_RESULT_FRAME_TOO_LARGE` or
/// `QNS_RESULT_BACKLOG_FULL` when the frame is refused, which also counts it
/// in `counters`' `outdev-errors`.
///
/// # Safety
/// `outdev` NULL or live; `counters` NULL or live counters; `iov` must point
/// to `iovcnt` `struct iovec`s (NULL allowed when `iovcnt` is 0), each
/// describing readable memory.
#[no_mangle]
pub unsafe extern "C" fn qns_outdev_push(
    outdev: *mut QnsOutdev,
    counters: *const QnsCounters,
    iov: *const libc::iovec,
    iovcnt: usize,
    vnet_hdr_len: u32,
) -> QnsResult {
    // SAFETY: the caller guarantees outdev is NULL or live and unshared.
    let Some(outdev) = (unsafe { outdev.as_mut() }) else {
        return QnsResult::NullPointer;
    };
    // SAFETY: the caller guarantees counters is NULL or live.
    let counters = unsafe { QnsCounters::from_ptr(counters) };
    let push = |parts: &[&[u8]]| {
        boundary(QnsResult::Panic, || {
            let refused = |result| {
                if let Some(c) = counters {
                    let len = parts.iter().map(|p| p.len() as u64).sum();
                    c.add(QnsCounterId::OutdevErrors, 1, len);
                }
                result
            };
            match outdev.0.push(parts, vnet_hdr_len) {
                Ok(()) => QnsResult::Ok,
                Err(PushError::Encode(EncodeError::EmptyFrame)) => QnsResult::EmptyFrame,
                Err(PushError::Encode(EncodeError::FrameTooLarge { .. })) => {
                    refused(QnsResult::FrameTooLarge)
                }
                Err(PushError::BacklogFull { .. }) => refused(QnsResult::BacklogFull),
            }
        })
    };
    // SAFETY: the caller guarantees iov describes iovcnt readable buffers.
    match unsafe { with_iovec_slices(iov, iovcnt, push) } {
        Ok(result) | Err(result) => result,
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
    // SAFETY: the caller guarantees outdev is NULL or live.
    let Some(outdev) = (unsafe { outdev.as_ref() }) else {
        return QnsResult::NullPointer;
    };
    if data.is_null() || len.is_null() {
        return QnsResult::NullPointer;
    }
    let pending = outdev.0.pending();
    // SAFETY: data is not NULL and writable (caller's guarantee).
    unsafe { data.write(pending.as_ptr()) };
    // SAFETY: len is not NULL and writable (caller's guarantee).
    unsafe { len.write(pending.len()) };
    QnsResult::Ok
}

/// Report that `written` bytes from the start of [`qns_outdev_pending`] were
/// written. Each frame now written whole counts in `counters`' `outdev`
/// (payload bytes). A `written` larger than what is pending is
/// `QNS_RESULT_INVALID_ARGUMENT` (nothing changes).
///
/// # Safety
/// `outdev` NULL or live; `counters` NULL or live counters.
#[no_mangle]
pub unsafe extern "C" fn qns_outdev_advance(
    outdev: *mut QnsOutdev,
    counters: *const QnsCounters,
    written: usize,
) -> QnsResult {
    // SAFETY: the caller guarantees outdev is NULL or live and unshared.
    let Some(outdev) = (unsafe { outdev.as_mut() }) else {
        return QnsResult::NullPointer;
    };
    // SAFETY: the caller guarantees counters is NULL or live.
    let counters = unsafe { QnsCounters::from_ptr(counters) };
    if written > outdev.0.queued() {
        return QnsResult::InvalidArgument;
    }
    boundary(QnsResult::Panic, || {
        outdev.0.advance(written, counters);
        QnsResult::Ok
    })
}

/// Whether the backlog is at or above its high-water mark (1/16 of the
/// bound): a sender that can wait (one that passed a `sent_cb`) should be
/// told to, until [`qns_outdev_drained`]. False for NULL.
///
/// # Safety
/// `outdev` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qns_outdev_congested(outdev: *const QnsOutdev) -> bool {
    // SAFETY: the caller guarantees outdev is NULL or live.
    unsafe { outdev.as_ref() }.is_some_and(|q| q.0.congested())
}

/// Whether the backlog is at or below its low-water mark (1/64 of the
/// bound): senders told to wait may go on. True for NULL (nothing waits).
///
/// # Safety
/// `outdev` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qns_outdev_drained(outdev: *const QnsOutdev) -> bool {
    // SAFETY: the caller guarantees outdev is NULL or live.
    unsafe { outdev.as_ref() }.is_none_or(|q| q.0.drained())
}

/// Whether the first queued frame is partly written: the peer has its
/// start and must get the rest before anything else on the stream. False
/// for NULL.
///
/// # Safety
/// `outdev` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn qns_outdev_mid_frame(outdev: *const QnsOutdev) -> bool {
    // SAFETY: the caller guarantees outdev is NULL or live.
    unsafe { outdev.as_ref() }.is_some_and(|q| q.0.mid_frame())
}

/// Drop every queued frame (the peer is gone), counting each, even one
/// partly written, in `counters`' `outdev-errors`. If `dropped` is not NULL,
/// `*dropped` is how many frames were dropped.
///
/// # Safety
/// `outdev` NULL or live; `counters` NULL or live counters; `dropped` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn qns_outdev_discard(
    outdev: *mut QnsOutdev,
    counters: *const QnsCounters,
    dropped: *mut usize,
) -> QnsResult {
    // SAFETY: the caller guarantees outdev is NULL or live and unshared.
    let Some(outdev) = (unsafe { outdev.as_mut() }) else {
        return QnsResult::NullPointer;
    };
    // SAFETY: the caller guarantees counters is NULL or live.
    let counters = unsafe { QnsCounters::from_ptr(counters) };
    let n = boundary(0, || outdev.0.discard(counters));
    if !dropped.is_null() {
        // SAFETY: not NULL and writable (caller's guarantee).
        unsafe { dropped.write(n) };
    }
    QnsResult::Ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::counters::{qns_counters_free, qns_counters_get, qns_counters_new, QnsCount};

    #[test]
    // One block walks the whole C-side sequence, as a C caller would.
    #[allow(clippy::multiple_unsafe_ops_per_block)]
    fn push_write_in_pieces_and_discard_through_the_c_abi() {
        let payload = *b"0123456789";
        let iov = [libc::iovec {
            iov_base: payload.as_ptr().cast_mut().cast::<std::ffi::c_void>(),
            iov_len: payload.len(),
        }];
        // SAFETY: every pointer below comes from this library's constructors
        // or from live locals, and each handle is freed exactly once.
        unsafe {
            let counters = qns_counters_new(c"filter-redirector".as_ptr());
            let q = qns_outdev_new(false, 0, 30);
            assert_eq!(
                qns_outdev_push(q, counters, iov.as_ptr(), 1, 0),
                QnsResult::Ok
            );
            assert_eq!(
                qns_outdev_push(q, counters, iov.as_ptr(), 1, 0),
                QnsResult::Ok
            );
            assert_eq!(
                qns_outdev_push(q, counters, iov.as_ptr(), 1, 0),
                QnsResult::BacklogFull
            );
            // 28 queued: at or above 30 / 16, above 30 / 64
            assert!(qns_outdev_congested(q) && !qns_outdev_drained(q));
            assert!(!qns_outdev_congested(std::ptr::null()));
            assert!(qns_outdev_drained(std::ptr::null()));
            let (mut data, mut len) = (std::ptr::null(), 0);
            assert_eq!(qns_outdev_pending(q, &mut data, &mut len), QnsResult::Ok);
            assert_eq!(len, 28);
            assert_eq!(std::slice::from_raw_parts(data, 4), b"\0\0\0\x0a");
            assert_eq!(
                qns_outdev_advance(q, counters, 29),
                QnsResult::InvalidArgument
            );
            assert_eq!(qns_outdev_advance(q, counters, 20), QnsResult::Ok);
            let mut dropped = 0;
            assert_eq!(qns_outdev_discard(q, counters, &mut dropped), QnsResult::Ok);
            assert_eq!(dropped, 1);
            let mut count = QnsCount::default();
            qns_counters_get(counters, QnsCounterId::Outdev as u32, &mut count);
            assert_eq!(
                count,
                QnsCount {
                    packets: 1,
                    bytes: 10
                }
            );
            qns_counters_get(counters, QnsCounterId::OutdevErrors as u32, &mut count);
            assert_eq!(
                count,
                QnsCount {
                    packets: 2,
                    bytes: 20
                }
            );
            qns_outdev_free(q);
            qns_counters_free(counters);
        }
    }
}
