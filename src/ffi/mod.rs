//! The C ABI: the only module with `unsafe` code.
//!
//! Every export is `unsafe extern "C"` (or safe, when it takes no pointer)
//! with a `# Safety` section saying what C must guarantee, and is written as
//! its checks, one line, then its body:
//! - [`arg!`] turns a handle or object pointer into a reference, and a NULL
//!   one into `QNS_RESULT_NULL_POINTER` (or the export's own fallback);
//!   [`out!`] does the same for an out-parameter, written only on success;
//! - a handle's state is reached through [`Handle::with`](crate::handle::Handle::with), the panic
//!   boundary: a Rust panic becomes `QNS_RESULT_PANIC` instead of unwinding
//!   into C, and poisons the handle, so that every later call on it gets
//!   `QNS_RESULT_POISONED`, never half-updated state.
//!
//! An export that does not go through [`Handle::with`](crate::handle::Handle::with) says why it cannot
//! panic, and `tests::exports_outside_the_boundary_do_not_panic` calls each
//! with hostile arguments. (A panic escaping an `extern "C"` function would
//! abort QEMU, not corrupt it.)
//!
//! The header `include/qemu_netfilter_stats.h` is generated from this module
//! by cbindgen (see `build.rs`), so doc comments here are C documentation:
//! they name functions as `qns_foo()`, never with Rust link syntax.

use std::ffi::c_char;

pub use crate::result::QnsResult;

pub mod counters;
pub mod decoder;
pub mod outdev;
pub mod stats;

/// A static, NUL-terminated English description of `result`; never NULL.
/// An unknown value gets a generic text. Cannot panic: an array lookup.
#[no_mangle]
pub extern "C" fn qns_result_message(result: u32) -> *const c_char {
    crate::result::message(result).as_ptr()
}

/// `arg!(ptr)` is `&*ptr`, or returns `QNS_RESULT_NULL_POINTER` from the
/// export when `ptr` is NULL; `arg!(ptr, else value)` returns `value`.
/// Every export's `# Safety` section requires its pointer arguments to be
/// NULL or to point to a live object of their type.
macro_rules! arg {
    ($ptr:expr) => {
        $crate::ffi::arg!($ptr, else $crate::ffi::QnsResult::NullPointer)
    };
    ($ptr:expr, else $fallback:expr) => {
        // SAFETY: the export's contract: NULL or a live, aligned object of
        // this type that C does not change during the call.
        match unsafe { $ptr.as_ref() } {
            Some(r) => r,
            None => return $fallback,
        }
    };
}

/// `out!(ptr)`: the out-parameter behind `ptr`, as a `MaybeUninit` to write
/// on success, or return `QNS_RESULT_NULL_POINTER` when `ptr` is NULL.
macro_rules! out {
    ($ptr:expr) => {
        // SAFETY: the export's contract: NULL or writable memory for one
        // value of this type; `MaybeUninit` needs no initialised value.
        match unsafe { $ptr.cast::<::std::mem::MaybeUninit<_>>().as_mut() } {
            Some(r) => r,
            None => return $crate::ffi::QnsResult::NullPointer,
        }
    };
}

/// `opt_arg!(ptr)`: `Some(&*ptr)`, or `None` for a NULL `ptr` (an
/// optional argument, such as the counters a call may update).
macro_rules! opt_arg {
    ($ptr:expr) => {
        // SAFETY: the export's contract: NULL or a live, aligned object of
        // this type.
        unsafe { $ptr.as_ref() }
    };
}

pub(crate) use {arg, opt_arg, out};

/// `value`, or `default` for the 0 by which a C caller asks for it.
fn or_default<T: Default + PartialEq>(value: T, default: T) -> T {
    if value == T::default() {
        default
    } else {
        value
    }
}

/// Free a `Box` that an export handed to C; NULL is ignored.
///
/// # Safety
/// `ptr` must be NULL or from `Box::into_raw` of a `Box<T>`, not freed before.
unsafe fn free_box<T>(ptr: *mut T) {
    if !ptr.is_null() {
        // SAFETY: from Box::into_raw, freed once (the caller's guarantee).
        drop(unsafe { Box::from_raw(ptr) });
    }
}

/// How many buffers [`with_iovec_slices`] keeps on the stack: QEMU hands a
/// packet in one or two.
const INLINE_PARTS: usize = 4;

/// Call `f` with the buffers of a C `iovec` array as slices, skipping empty
/// entries; an entry with a NULL base and a non-zero length is
/// `QNS_RESULT_NULL_POINTER` (and `f` is not called).
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

#[cfg(test)]
mod tests {
    use super::*;

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
            assert_eq!(got.unwrap(), expected, "{n} entries");
        }
        let null = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 1,
        }];
        // SAFETY: one entry, which with_iovec_slices must refuse to read.
        let refused = unsafe { with_iovec_slices(null.as_ptr(), 1, |_| ()) };
        assert_eq!(refused, Err(QnsResult::NullPointer));
    }
}
