//! C ABI of [`FilterCounters`].

use super::{arg, free_box, QnsResult};
use crate::counters::{FilterCounters, QnsCounterId, QnsDirection};

/// The counters of one filter (opaque; `NetFilterCounters` in C, the name
/// QEMU's `include/net/filter.h` declares it under).
///
/// Owner: whoever called `qns_counters_new()`; released with
/// `qns_counters_free()`. Thread safety: `qns_counters_count_packet()` and
/// reading the counters (`qns_stats_builder_add()` and
/// `qns_stats_builder_add_counters()`) may run on any thread at the same time.
/// Each value read is exact, but packets and bytes are read one after the
/// other: a reader may see a packet counted before its bytes. The counters
/// are atomics, with no panic boundary: no call on them can panic.
pub struct QnsCounters(pub(crate) FilterCounters);

/// New counters, all zero. Each filter class reports the ones it has through
/// its `get_stats` hook. Free them with `qns_counters_free()`. Never NULL;
/// cannot panic (running out of memory aborts).
#[no_mangle]
pub extern "C" fn qns_counters_new() -> *mut QnsCounters {
    Box::into_raw(Box::new(QnsCounters(FilterCounters::default())))
}

/// Free counters from `qns_counters_new()`. NULL is ignored. Cannot panic.
///
/// # Safety
/// `counters` must be NULL or from `qns_counters_new()`, not freed before, and
/// not in use by any other call (on any thread) now or later.
#[no_mangle]
pub unsafe extern "C" fn qns_counters_free(counters: *mut QnsCounters) {
    // SAFETY: forwarded from this function's contract.
    unsafe { free_box(counters) }
}

/// Count one packet of `bytes` bytes handed to the filter in `direction` (a
/// `QnsDirection`). The packet path: no lock, no allocation. Cannot panic:
/// two relaxed atomic adds (which wrap).
///
/// # Safety
/// `counters` must be NULL or live counters from `qns_counters_new()`.
#[no_mangle]
pub unsafe extern "C" fn qns_counters_count_packet(
    counters: *mut QnsCounters,
    direction: u32,
    bytes: u64,
) -> QnsResult {
    let counters = &arg!(counters).0;
    let direction = match direction {
        0 => QnsDirection::Tx,
        1 => QnsDirection::Rx,
        _ => return QnsResult::InvalidArgument,
    };
    counters.count_packet(direction, bytes);
    QnsResult::Ok
}

/// The three ways to change a counter other than counting a packet.
#[derive(Clone, Copy)]
enum Update {
    Add,
    Sub,
    Set,
}

/// Change counter `id` (a `QnsCounterId`) of `counters`; an unknown id is
/// `QNS_RESULT_INVALID_ARGUMENT`.
///
/// # Safety
/// `counters` must be NULL or live counters from `qns_counters_new()`.
unsafe fn update(
    counters: *mut QnsCounters,
    id: u32,
    packets: u64,
    bytes: u64,
    how: Update,
) -> QnsResult {
    let counters = &arg!(counters).0;
    let Some(id) = QnsCounterId::from_raw(id) else {
        return QnsResult::InvalidArgument;
    };
    match how {
        Update::Add => counters.add(id, packets, bytes),
        Update::Sub => counters.sub(id, packets, bytes),
        Update::Set => counters.set(id, packets, bytes),
    }
    QnsResult::Ok
}

/// Add `packets` and `bytes` to counter `id` (a `QnsCounterId`). For a
/// duration (`hold-time`, `release-latency`, `delay`): `packets` events that
/// lasted `bytes` microseconds in all, counted in the histogram's bucket of
/// their mean, so add one event at a time. No lock, no allocation; an
/// unknown id is `QNS_RESULT_INVALID_ARGUMENT`. Cannot panic: a table lookup
/// and two relaxed atomic adds (which wrap).
///
/// # Safety
/// `counters` must be NULL or live counters from `qns_counters_new()`.
#[no_mangle]
pub unsafe extern "C" fn qns_counters_add(
    counters: *mut QnsCounters,
    id: u32,
    packets: u64,
    bytes: u64,
) -> QnsResult {
    // SAFETY: forwarded from this function's contract.
    unsafe { update(counters, id, packets, bytes, Update::Add) }
}

/// Take `packets` and `bytes` off the snapshot counter `id` (frames that
/// left a queue it counts). As `qns_counters_add()` otherwise.
///
/// # Safety
/// `counters` must be NULL or live counters from `qns_counters_new()`.
#[no_mangle]
pub unsafe extern "C" fn qns_counters_sub(
    counters: *mut QnsCounters,
    id: u32,
    packets: u64,
    bytes: u64,
) -> QnsResult {
    // SAFETY: forwarded from this function's contract.
    unsafe { update(counters, id, packets, bytes, Update::Sub) }
}

/// Make the snapshot counter `id` read `packets` and `bytes` (the length of
/// a table, taken where it changes or just before the counters are read).
/// As `qns_counters_add()` otherwise.
///
/// # Safety
/// `counters` must be NULL or live counters from `qns_counters_new()`.
#[no_mangle]
pub unsafe extern "C" fn qns_counters_set(
    counters: *mut QnsCounters,
    id: u32,
    packets: u64,
    bytes: u64,
) -> QnsResult {
    // SAFETY: forwarded from this function's contract.
    unsafe { update(counters, id, packets, bytes, Update::Set) }
}
