//! C ABI of [`FilterCounters`].

use std::ffi::c_char;

use super::{boundary, QnsResult};
use crate::counters::{Count, FilterCounters, QnsCounterId, QnsDirection};

/// The counters of one filter (opaque).
///
/// Owner: whoever called [`qns_counters_new`]; released with
/// [`qns_counters_free`]. Thread safety: every `qns_counters_*` call except
/// `_free` may run on any thread at the same time as any other.
pub struct QnsCounters(FilterCounters);

/// One counter's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct QnsCount {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
}

impl From<Count> for QnsCount {
    fn from(c: Count) -> Self {
        QnsCount {
            packets: c.packets,
            bytes: c.bytes,
        }
    }
}

impl QnsCounters {
    /// The counters behind a C pointer, for the exports of sibling modules.
    ///
    /// # Safety
    /// `ptr` must be NULL or come from [`qns_counters_new`] and not be freed.
    pub(crate) unsafe fn from_ptr<'a>(ptr: *const QnsCounters) -> Option<&'a FilterCounters> {
        // SAFETY: the caller guarantees ptr is NULL or a live QnsCounters.
        unsafe { ptr.as_ref() }.map(|c| &c.0)
    }
}

fn direction_from_raw(raw: u32) -> Option<QnsDirection> {
    match raw {
        0 => Some(QnsDirection::Tx),
        1 => Some(QnsDirection::Rx),
        _ => None,
    }
}

/// New counters, all zero, for a filter of QOM type `qom_type` (for example
/// `"filter-redirector"`); the type decides which filter-specific counters
/// the stats list reports. Returns NULL if `qom_type` is NULL.
///
/// The caller owns the result and frees it with [`qns_counters_free`].
///
/// # Safety
/// `qom_type` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn qns_counters_new(qom_type: *const c_char) -> *mut QnsCounters {
    if qom_type.is_null() {
        return std::ptr::null_mut();
    }
    boundary(std::ptr::null_mut(), || {
        // SAFETY: not NULL (checked above); the caller guarantees a
        // NUL-terminated string.
        let qom_type = unsafe { std::ffi::CStr::from_ptr(qom_type) };
        let counters = FilterCounters::for_type(&qom_type.to_string_lossy());
        Box::into_raw(Box::new(QnsCounters(counters)))
    })
}

/// Free counters from [`qns_counters_new`]. NULL is ignored.
///
/// # Safety
/// `counters` must be NULL or from [`qns_counters_new`], not freed before,
/// and not in use by any other call (on any thread) now or later.
#[no_mangle]
pub unsafe extern "C" fn qns_counters_free(counters: *mut QnsCounters) {
    if counters.is_null() {
        return;
    }
    // SAFETY: the caller guarantees it came from Box::into_raw in
    // qns_counters_new and is freed only once.
    drop(unsafe { Box::from_raw(counters) });
}

/// Count one packet of `bytes` bytes handed to the filter in `direction` (a
/// `QnsDirection`). The packet path: no lock, no allocation.
///
/// # Safety
/// `counters` must be NULL or live counters from [`qns_counters_new`].
#[no_mangle]
pub unsafe extern "C" fn qns_counters_count_packet(
    counters: *const QnsCounters,
    direction: u32,
    bytes: u64,
) -> QnsResult {
    // SAFETY: the caller guarantees counters is NULL or live.
    let Some(counters) = (unsafe { QnsCounters::from_ptr(counters) }) else {
        return QnsResult::NullPointer;
    };
    let Some(direction) = direction_from_raw(direction) else {
        return QnsResult::InvalidArgument;
    };
    counters.count_packet(direction, bytes);
    QnsResult::Ok
}

/// Add `packets` and `bytes` to the filter-specific counter `id` (a
/// `QnsCounterId`).
///
/// # Safety
/// `counters` must be NULL or live counters from [`qns_counters_new`].
#[no_mangle]
pub unsafe extern "C" fn qns_counters_add(
    counters: *const QnsCounters,
    id: u32,
    packets: u64,
    bytes: u64,
) -> QnsResult {
    // SAFETY: the caller guarantees counters is NULL or live.
    let Some(counters) = (unsafe { QnsCounters::from_ptr(counters) }) else {
        return QnsResult::NullPointer;
    };
    let Some(id) = QnsCounterId::from_raw(id) else {
        return QnsResult::InvalidArgument;
    };
    counters.add(id, packets, bytes);
    QnsResult::Ok
}

/// Read one value of `counters` into `*out`: the shared checks of the two
/// getters below.
///
/// # Safety
/// As [`qns_counters_get_direction`].
unsafe fn read_into(
    counters: *const QnsCounters,
    out: *mut QnsCount,
    read: impl FnOnce(&FilterCounters) -> Option<Count>,
) -> QnsResult {
    // SAFETY: the caller guarantees counters is NULL or live.
    let Some(counters) = (unsafe { QnsCounters::from_ptr(counters) }) else {
        return QnsResult::NullPointer;
    };
    if out.is_null() {
        return QnsResult::NullPointer;
    }
    let Some(count) = read(counters) else {
        return QnsResult::InvalidArgument;
    };
    // SAFETY: out is not NULL and the caller guarantees it is writable.
    unsafe { out.write(count.into()) };
    QnsResult::Ok
}

/// Read the packets and bytes counted in `direction` (a `QnsDirection`) into
/// `*out`.
///
/// # Safety
/// `counters` must be NULL or live counters from [`qns_counters_new`]; `out`
/// must be NULL or point to writable memory for one `QnsCount`.
#[no_mangle]
pub unsafe extern "C" fn qns_counters_get_direction(
    counters: *const QnsCounters,
    direction: u32,
    out: *mut QnsCount,
) -> QnsResult {
    // SAFETY: this function's contract is read_into's.
    unsafe {
        read_into(counters, out, |c| {
            Some(c.direction(direction_from_raw(direction)?))
        })
    }
}

/// Read the filter-specific counter `id` (a `QnsCounterId`) into `*out`.
///
/// # Safety
/// As [`qns_counters_get_direction`].
#[no_mangle]
pub unsafe extern "C" fn qns_counters_get(
    counters: *const QnsCounters,
    id: u32,
    out: *mut QnsCount,
) -> QnsResult {
    // SAFETY: this function's contract is read_into's.
    unsafe { read_into(counters, out, |c| Some(c.get(QnsCounterId::from_raw(id)?))) }
}
