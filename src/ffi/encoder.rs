//! C ABI of [`FrameEncoder`]: the outdev send path.

use super::{
    boundary, counters::QnsCounters, max_frame_len_or_default, with_iovec_slices, QnsResult,
};
use crate::{
    counters::QnsCounterId,
    encoder::{EncodeError, EncodedFrame, FrameEncoder},
};

/// Encodes frames for one outdev (opaque).
///
/// Owner: whoever called [`qns_encoder_new`]; released with
/// [`qns_encoder_free`]. Thread safety: none; one thread at a time.
pub struct QnsEncoder(FrameEncoder);

/// An encoded frame: write `len` bytes from `data` to the chardev in one
/// call, then hand the frame to [`qns_encoder_complete`], which releases it.
///
/// Filled by [`qns_encoder_encode`]. `capacity` and `header_len` belong to
/// the library: C must not change any field.
#[derive(Debug)]
#[repr(C)]
pub struct QnsFrame {
    /// Header and payload, contiguous.
    pub data: *mut u8,
    /// Bytes at `data`.
    pub len: usize,
    /// Private: the allocation's capacity.
    pub capacity: usize,
    /// Private: header bytes at the start of `data`.
    pub header_len: usize,
}

impl QnsFrame {
    const EMPTY: QnsFrame = QnsFrame {
        data: std::ptr::null_mut(),
        len: 0,
        capacity: 0,
        header_len: 0,
    };

    fn from_encoded(frame: EncodedFrame) -> Self {
        let (bytes, header_len) = frame.into_parts();
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        QnsFrame {
            data: bytes.as_mut_ptr(),
            len: bytes.len(),
            capacity: bytes.capacity(),
            header_len,
        }
    }
}

/// A new encoder. `vnet_hdr`: write the vnet header length field after each
/// length. `max_frame_len`: the largest payload sent; 0 means QEMU's
/// `NET_BUFSIZE` (69632). The caller frees it with [`qns_encoder_free`].
#[no_mangle]
pub extern "C" fn qns_encoder_new(vnet_hdr: bool, max_frame_len: u32) -> *mut QnsEncoder {
    let max = max_frame_len_or_default(max_frame_len);
    boundary(std::ptr::null_mut(), || {
        Box::into_raw(Box::new(QnsEncoder(FrameEncoder::new(vnet_hdr, max))))
    })
}

/// Free an encoder. NULL is ignored. Frames it encoded that were not
/// completed yet must still be passed to [`qns_encoder_complete`] with
/// another encoder, or leak.
///
/// # Safety
/// `encoder` must be NULL or from [`qns_encoder_new`] and not freed before.
#[no_mangle]
pub unsafe extern "C" fn qns_encoder_free(encoder: *mut QnsEncoder) {
    if encoder.is_null() {
        return;
    }
    // SAFETY: from Box::into_raw in qns_encoder_new, freed once (caller's
    // guarantee).
    drop(unsafe { Box::from_raw(encoder) });
}

/// Encode the payload made of `iov[0..iovcnt]` into `*out`, announcing a
/// vnet header of `vnet_hdr_len` bytes when the encoder has `vnet_hdr` on.
///
/// Returns `QNS_RESULT_EMPTY_FRAME` for a payload of 0 bytes (nothing to
/// send; not an error for the caller to report) and
/// `QNS_RESULT_FRAME_TOO_LARGE` for one over the maximum, which also counts
/// in `counters`' `outdev-errors`. On success the caller owns `*out` until it
/// passes it to [`qns_encoder_complete`].
///
/// # Safety
/// `encoder` NULL or live; `counters` NULL or live counters; `iov` must point
/// to `iovcnt` `struct iovec`s (it may be NULL when `iovcnt` is 0), each
/// describing readable memory; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn qns_encoder_encode(
    encoder: *mut QnsEncoder,
    counters: *const QnsCounters,
    iov: *const libc::iovec,
    iovcnt: usize,
    vnet_hdr_len: u32,
    out: *mut QnsFrame,
) -> QnsResult {
    // SAFETY: the caller guarantees encoder is NULL or live and not used by
    // anyone else during the call.
    let Some(encoder) = (unsafe { encoder.as_mut() }) else {
        return QnsResult::NullPointer;
    };
    // SAFETY: the caller guarantees counters is NULL or live.
    let counters = unsafe { QnsCounters::from_ptr(counters) };
    if out.is_null() {
        return QnsResult::NullPointer;
    }
    let encode = |parts: &[&[u8]]| {
        boundary(QnsResult::Panic, || {
            match encoder.0.encode(parts, vnet_hdr_len) {
                Ok(frame) => {
                    // SAFETY: out is not NULL and the caller guarantees it writable.
                    unsafe { out.write(QnsFrame::from_encoded(frame)) };
                    QnsResult::Ok
                }
                Err(EncodeError::EmptyFrame) => QnsResult::EmptyFrame,
                Err(EncodeError::FrameTooLarge { len, .. }) => {
                    if let Some(c) = counters {
                        c.add(QnsCounterId::OutdevErrors, 1, len as u64);
                    }
                    QnsResult::FrameTooLarge
                }
            }
        })
    };
    // SAFETY: the caller guarantees iov describes iovcnt readable buffers.
    match unsafe { with_iovec_slices(iov, iovcnt, encode) } {
        Ok(result) | Err(result) => result,
    }
}

/// Release a frame from [`qns_encoder_encode`] after writing it, and count
/// it: `sent` true adds it to `counters`' `outdev` counter (its payload
/// bytes), false to `outdev-errors`. `*frame` is emptied (data NULL), so
/// completing it twice is a harmless no-op.
///
/// # Safety
/// `encoder` NULL or live; `counters` NULL or live counters; `frame` NULL or
/// a `QnsFrame` filled by [`qns_encoder_encode`] (of any encoder) and not
/// changed since.
#[no_mangle]
pub unsafe extern "C" fn qns_encoder_complete(
    encoder: *mut QnsEncoder,
    counters: *const QnsCounters,
    frame: *mut QnsFrame,
    sent: bool,
) -> QnsResult {
    // SAFETY: the caller guarantees encoder is NULL or live and unshared.
    let Some(encoder) = (unsafe { encoder.as_mut() }) else {
        return QnsResult::NullPointer;
    };
    // SAFETY: the caller guarantees counters is NULL or live.
    let counters = unsafe { QnsCounters::from_ptr(counters) };
    // SAFETY: the caller guarantees frame is NULL or a valid QnsFrame.
    let Some(frame) = (unsafe { frame.as_mut() }) else {
        return QnsResult::NullPointer;
    };
    let taken = std::mem::replace(frame, QnsFrame::EMPTY);
    if taken.data.is_null() {
        return QnsResult::Ok;
    }
    // SAFETY: data, len and capacity came from a Vec<u8> that
    // QnsFrame::from_encoded leaked, unchanged since (caller's guarantee),
    // and the frame was emptied above so the Vec is rebuilt only once.
    let bytes = unsafe { Vec::from_raw_parts(taken.data, taken.len, taken.capacity) };
    let encoded = EncodedFrame::from_parts(bytes, taken.header_len);
    if let Some(c) = counters {
        let id = if sent {
            QnsCounterId::Outdev
        } else {
            QnsCounterId::OutdevErrors
        };
        c.add(id, 1, encoded.payload_len() as u64);
    }
    encoder.0.recycle(encoded);
    QnsResult::Ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::counters::{qns_counters_free, qns_counters_get, qns_counters_new, QnsCount};

    #[test]
    // One block walks the whole C-side sequence, as a C caller would.
    #[allow(clippy::multiple_unsafe_ops_per_block)]
    fn encode_and_complete_through_the_c_abi() {
        let a = *b"head";
        let b = *b"er+payload";
        let iov = [
            libc::iovec {
                iov_base: a.as_ptr().cast_mut().cast(),
                iov_len: a.len(),
            },
            libc::iovec {
                iov_base: b.as_ptr().cast_mut().cast(),
                iov_len: b.len(),
            },
        ];
        // SAFETY: every pointer below comes from this library's constructors
        // or from live locals, and each handle is freed exactly once.
        unsafe {
            let counters = qns_counters_new(c"filter-mirror".as_ptr());
            let enc = qns_encoder_new(true, 0);
            for sent in [true, false, true] {
                let mut frame = QnsFrame::EMPTY;
                assert_eq!(
                    qns_encoder_encode(enc, counters, iov.as_ptr(), 2, 12, &mut frame),
                    QnsResult::Ok
                );
                let bytes = std::slice::from_raw_parts(frame.data, frame.len);
                assert_eq!(bytes, b"\0\0\0\x0e\0\0\0\x0cheader+payload");
                assert_eq!(
                    qns_encoder_complete(enc, counters, &mut frame, sent),
                    QnsResult::Ok
                );
                // Completing twice is harmless.
                assert_eq!(
                    qns_encoder_complete(enc, counters, &mut frame, sent),
                    QnsResult::Ok
                );
            }
            let mut count = QnsCount::default();
            assert_eq!(
                qns_counters_get(counters, QnsCounterId::Outdev as u32, &mut count),
                QnsResult::Ok
            );
            assert_eq!(
                count,
                QnsCount {
                    packets: 2,
                    bytes: 28
                }
            );
            assert_eq!(
                qns_counters_get(counters, QnsCounterId::OutdevErrors as u32, &mut count),
                QnsResult::Ok
            );
            assert_eq!(
                count,
                QnsCount {
                    packets: 1,
                    bytes: 14
                }
            );
            qns_encoder_free(enc);
            qns_counters_free(counters);
        }
    }
}
