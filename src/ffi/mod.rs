//! The C ABI: the only module with `unsafe` code.
//!
//! Rules every export follows:
//! - it is `unsafe extern "C"` with a `# Safety` section saying what C must
//!   guarantee;
//! - it checks its pointers first (NULL is an error code, never a crash);
//! - it runs inside [`boundary`], so a Rust panic becomes
//!   [`QnsResult::Panic`] (or NULL) instead of unwinding into C;
//! - out-parameters are written only on success.
//!
//! The header `include/qemu_netfilter_stats.h` is generated from this module
//! by cbindgen (see `build.rs`).

use std::{
    ffi::{c_char, CStr},
    panic::{catch_unwind, AssertUnwindSafe},
};

pub mod counters;
pub mod decoder;
pub mod encoder;
pub mod outdev;
pub mod stats;

/// The result of every fallible call. The values are fixed: they are part of
/// the ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub enum QnsResult {
    /// Success.
    Ok = 0,
    /// A pointer argument that must not be NULL was NULL.
    NullPointer = 1,
    /// An argument was out of range (an unknown direction or counter id, a
    /// negative count, ...).
    InvalidArgument = 2,
    /// A frame was longer than the maximum (or its length field was).
    FrameTooLarge = 3,
    /// A frame's vnet header length was larger than the frame.
    VnetHeaderTooLarge = 4,
    /// A zero-length frame.
    EmptyFrame = 5,
    /// The stream ended inside a frame.
    TruncatedFrame = 6,
    /// The decoder is discarding input after a fatal error, until reset.
    Desynchronized = 7,
    /// The filter named in a stats query does not exist.
    NotFound = 8,
    /// The handle is in use by a call further up the stack (a frame callback
    /// called back into its own decoder).
    Busy = 9,
    /// The library hit an internal error (a Rust panic was caught).
    Panic = 10,
    /// An outdev's backlog is full: the frame was refused (and counted).
    BacklogFull = 11,
}

impl QnsResult {
    fn message(self) -> &'static CStr {
        match self {
            QnsResult::Ok => c"success",
            QnsResult::NullPointer => c"a required pointer argument was NULL",
            QnsResult::InvalidArgument => c"an argument was out of range",
            QnsResult::FrameTooLarge => c"frame longer than the maximum frame length",
            QnsResult::VnetHeaderTooLarge => c"vnet header length larger than the frame",
            QnsResult::EmptyFrame => c"zero-length frame",
            QnsResult::TruncatedFrame => c"stream ended inside a frame",
            QnsResult::Desynchronized => {
                c"input discarded: the stream is out of step until the decoder is reset"
            }
            QnsResult::NotFound => c"no such filter",
            QnsResult::Busy => c"handle is busy (re-entered from its own callback)",
            QnsResult::Panic => c"internal error in the netfilter stats library",
            QnsResult::BacklogFull => c"outdev backlog full: the peer is not reading",
        }
    }
}

/// A static, NUL-terminated English description of `result`; never NULL.
/// An unknown value gets a generic text.
#[no_mangle]
pub extern "C" fn qns_result_message(result: u32) -> *const c_char {
    const RESULTS: [QnsResult; 12] = [
        QnsResult::Ok,
        QnsResult::NullPointer,
        QnsResult::InvalidArgument,
        QnsResult::FrameTooLarge,
        QnsResult::VnetHeaderTooLarge,
        QnsResult::EmptyFrame,
        QnsResult::TruncatedFrame,
        QnsResult::Desynchronized,
        QnsResult::NotFound,
        QnsResult::Busy,
        QnsResult::Panic,
        QnsResult::BacklogFull,
    ];
    RESULTS
        .into_iter()
        .find(|r| *r as u32 == result)
        .map_or(c"unknown result code", QnsResult::message)
        .as_ptr()
}

/// The maximum frame length a `_new` call asked for; 0 means QEMU's
/// `NET_BUFSIZE`.
fn max_frame_len_or_default(max_frame_len: u32) -> u32 {
    if max_frame_len == 0 {
        crate::decoder::DEFAULT_MAX_FRAME_LEN
    } else {
        max_frame_len
    }
}

/// Run `body`, turning a panic into `on_panic`: a panic must never unwind
/// into C, and returning an error keeps the VM running.
#[inline(always)]
fn boundary<T>(on_panic: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(on_panic)
}

/// How many buffers [`with_iovec_slices`] keeps on the stack: QEMU hands a
/// packet in one or two.
const INLINE_PARTS: usize = 4;

/// Call `f` with the buffers of a C `iovec` array as slices, skipping empty
/// entries; an entry with a NULL base and a non-zero length is
/// [`QnsResult::NullPointer`] (and `f` is not called).
///
/// Up to [`INLINE_PARTS`] slices stay in an array on the stack, which `f`
/// borrows where it is: a list allocated per packet was a fifth of the
/// patched redirector's time with 64-byte frames, and a list returned by
/// value was copied through a store-forwarding stall.
///
/// # Safety
/// `iov` must be NULL or point to `iovcnt` `struct iovec`s, each describing
/// `iov_len` readable bytes that stay unchanged while `f` runs.
#[inline(always)]
unsafe fn with_iovec_slices<R>(
    iov: *const libc::iovec,
    iovcnt: usize,
    f: impl FnOnce(&[&[u8]]) -> R,
) -> Result<R, QnsResult> {
    if iovcnt == 0 {
        return Ok(f(&[]));
    }
    if iov.is_null() {
        return Err(QnsResult::NullPointer);
    }
    // SAFETY: iov is not NULL and the caller guarantees iovcnt entries.
    let iovs = unsafe { std::slice::from_raw_parts(iov, iovcnt) };
    let mut inline: [&[u8]; INLINE_PARTS] = [&[]; INLINE_PARTS];
    let mut heap = Vec::new();
    let mut len = 0;
    for v in iovs.iter().filter(|v| v.iov_len > 0) {
        if v.iov_base.is_null() {
            return Err(QnsResult::NullPointer);
        }
        // SAFETY: not NULL, and the caller guarantees each iovec describes
        // iov_len readable bytes, unchanged while f runs.
        let part = unsafe { std::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len) };
        if len < INLINE_PARTS {
            inline[len] = part;
        } else {
            if heap.is_empty() {
                heap.extend_from_slice(&inline);
            }
            heap.push(part);
        }
        len += 1;
    }
    Ok(if len > INLINE_PARTS {
        f(&heap)
    } else {
        f(&inline[..len])
    })
}

/// Evaluate to the `&CStr` behind `ptr`, or return
/// [`QnsResult::NullPointer`] from the enclosing function.
///
/// The caller's `# Safety` section must require that a non-NULL `ptr` points
/// to a NUL-terminated string that stays valid and unchanged for the call.
macro_rules! cstr_arg {
    ($ptr:expr) => {{
        let ptr: *const ::std::ffi::c_char = $ptr;
        if ptr.is_null() {
            return QnsResult::NullPointer;
        }
        // SAFETY: not NULL (checked above); the exporting function's contract
        // makes the caller guarantee a valid NUL-terminated string.
        unsafe { ::std::ffi::CStr::from_ptr(ptr) }
    }};
}
pub(crate) use cstr_arg;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_result_has_its_own_message() {
        let mut seen = std::collections::HashSet::new();
        for code in 0..=11 {
            // SAFETY: qns_result_message returns a static NUL-terminated string.
            let msg = unsafe { CStr::from_ptr(qns_result_message(code)) };
            assert!(seen.insert(msg.to_owned()), "code {code}");
        }
        // SAFETY: as above.
        let unknown = unsafe { CStr::from_ptr(qns_result_message(99)) };
        assert_eq!(unknown, c"unknown result code");
    }

    #[test]
    fn iovec_slices_skip_empty_entries_inline_or_not() {
        // lengths 0, 1, 2, 0, 1, 2, ...: 6 non-empty buffers of 10, more
        // than stay inline
        let bufs: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; usize::from(i % 3)]).collect();
        let iov: Vec<libc::iovec> = bufs
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.as_ptr().cast_mut().cast(),
                iov_len: b.len(),
            })
            .collect();
        for n in 0..=iov.len() {
            let expected: Vec<Vec<u8>> = bufs[..n]
                .iter()
                .filter(|b| !b.is_empty())
                .cloned()
                .collect();
            // SAFETY: iov[..n] describe live, unchanged buffers.
            let got = unsafe {
                with_iovec_slices(iov.as_ptr(), n, |parts| {
                    parts.iter().map(|p| p.to_vec()).collect::<Vec<_>>()
                })
            };
            let got = got.unwrap();
            assert_eq!(got, expected, "{n} entries");
        }
        let null = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 1,
        }];
        // SAFETY: one entry, which with_iovec_slices must refuse to read.
        let refused = unsafe { with_iovec_slices(null.as_ptr(), 1, |_| ()) };
        assert_eq!(refused, Err(QnsResult::NullPointer));
    }

    #[test]
    fn boundary_catches_panics() {
        let r = boundary(QnsResult::Panic, || panic!("boom"));
        assert_eq!(r, QnsResult::Panic);
    }
}
