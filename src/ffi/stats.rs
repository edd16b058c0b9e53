//! C ABI of [`StatsListBuilder`]: builds the list behind
//! `query-netfilter-stats` and `query-stats`, which C converts to QAPI types
//! and frees with one call; and the values of `query-stats-schemas`.

use std::ffi::c_char;

use super::{arg, counters::QnsCounters, free_box, out, QnsResult};
use crate::{
    counters::QnsCounterId,
    handle::Handle,
    stats::{
        schema, OwnedStatsList, QnsStatSchema, QnsStatsList, QnsStatsProvider, StatsListBuilder,
    },
};

/// Collects the filters of one query (opaque; `NetFilterStatsBuilder` in C,
/// the name QEMU's `include/net/filter.h` declares it under).
///
/// Use: for each filter, `qns_stats_builder_add()` and then, from the filter
/// class's `get_stats` hook, `qns_stats_builder_add_counters()`; then
/// `qns_stats_builder_finish()`. Owner: whoever called
/// `qns_stats_builder_new()`, until `qns_stats_builder_finish()` (which consumes
/// it) or `qns_stats_builder_free()`. Thread safety: none; one thread at a time.
pub struct QnsStatsBuilder(Handle<StatsListBuilder>);

/// A new, empty builder. Never NULL; cannot panic (running out of memory
/// aborts).
#[no_mangle]
pub extern "C" fn qns_stats_builder_new() -> *mut QnsStatsBuilder {
    Box::into_raw(Box::new(QnsStatsBuilder(Handle::new(
        StatsListBuilder::default(),
    ))))
}

/// Add one filter: its QOM id `name`, its netdev id `netdev`, its QOM type
/// name `qom_type`, and the packets and bytes of each direction in
/// `counters`, read now. The strings are not copied: the list points to
/// them, so they must stay valid and unchanged until `qns_stats_list_free()`.
/// Every pointer is required.
///
/// # Safety
/// `builder` NULL or live; the strings NULL or NUL-terminated; `counters`
/// NULL or live counters.
#[no_mangle]
pub unsafe extern "C" fn qns_stats_builder_add(
    builder: *mut QnsStatsBuilder,
    name: *const c_char,
    netdev: *const c_char,
    qom_type: *const c_char,
    counters: *const QnsCounters,
) -> QnsResult {
    let (builder, counters) = (&arg!(builder).0, &arg!(counters).0);
    if name.is_null() || netdev.is_null() || qom_type.is_null() {
        return QnsResult::NullPointer;
    }
    builder
        .with(|b| b.add(name, netdev, qom_type, counters))
        .into()
}

/// Add an object that is not a filter (colo-compare): its QOM id `name` and
/// QOM type name `qom_type`, an empty netdev and no directions; its counters
/// follow with `qns_stats_builder_add_counters()`. The strings are kept as
/// `qns_stats_builder_add()` keeps them.
///
/// # Safety
/// `builder` NULL or live; the strings NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn qns_stats_builder_add_object(
    builder: *mut QnsStatsBuilder,
    name: *const c_char,
    qom_type: *const c_char,
) -> QnsResult {
    let builder = &arg!(builder).0;
    if name.is_null() || qom_type.is_null() {
        return QnsResult::NullPointer;
    }
    builder.with(|b| b.add_object(name, qom_type)).into()
}

/// Add the filter-specific counters `ids[0..n_ids]` (`QnsCounterId` values)
/// of `counters`, read now and in that order, to the filter added last (after
/// those of an earlier call for it): the call a filter class's `get_stats`
/// hook makes. A counter of packets and bytes goes to the filter's
/// `counters` (`query-netfilter-stats`) and its `values` (`query-stats`); a
/// count of events or a duration to its `values` alone. An unknown id, or
/// no filter added yet, is `QNS_RESULT_INVALID_ARGUMENT` (nothing is added).
///
/// # Safety
/// `builder` NULL or live; `counters` NULL or live counters; `ids` NULL or
/// `n_ids` readable values (NULL allowed when `n_ids` is 0).
#[no_mangle]
pub unsafe extern "C" fn qns_stats_builder_add_counters(
    builder: *mut QnsStatsBuilder,
    counters: *const QnsCounters,
    ids: *const u32,
    n_ids: usize,
) -> QnsResult {
    let (builder, counters) = (&arg!(builder).0, &arg!(counters).0);
    let ids: &[u32] = match (n_ids, ids.is_null()) {
        (0, _) => &[],
        (_, true) => return QnsResult::NullPointer,
        // SAFETY: not NULL, and the caller guarantees n_ids readable values.
        _ => unsafe { std::slice::from_raw_parts(ids, n_ids) },
    };
    let Some(ids) = ids
        .iter()
        .map(|&id| QnsCounterId::from_raw(id))
        .collect::<Option<Vec<_>>>()
    else {
        return QnsResult::InvalidArgument;
    };
    builder
        .with(|b| match b.add_counters(counters, &ids) {
            true => QnsResult::Ok,
            false => QnsResult::InvalidArgument,
        })
        .into()
}

/// Finish the query, consuming `builder` (whatever the result). On success
/// `*list` is the list of the filters in the order they were added, which
/// the caller frees with `qns_stats_list_free()`.
///
/// # Safety
/// `builder` NULL or from `qns_stats_builder_new()` and not consumed before;
/// `list` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn qns_stats_builder_finish(
    builder: *mut QnsStatsBuilder,
    list: *mut *mut QnsStatsList,
) -> QnsResult {
    if builder.is_null() {
        return QnsResult::NullPointer;
    }
    // SAFETY: from Box::into_raw in qns_stats_builder_new, consumed once
    // (the caller's guarantee).
    let builder = unsafe { Box::from_raw(builder) };
    let list = out!(list);
    let finished = builder.0.with(|b| std::mem::take(b).finish());
    finished
        .map(|owned| {
            // OwnedStatsList is repr(C) with the view first, so a pointer to
            // the whole is a pointer to the view.
            list.write(Box::into_raw(owned).cast::<QnsStatsList>());
        })
        .into()
}

/// Abandon a builder without finishing it. NULL is ignored. Cannot panic.
///
/// # Safety
/// `builder` NULL or from `qns_stats_builder_new()` and not consumed before.
#[no_mangle]
pub unsafe extern "C" fn qns_stats_builder_free(builder: *mut QnsStatsBuilder) {
    // SAFETY: forwarded from this function's contract.
    unsafe { free_box(builder) }
}

/// Free a list from `qns_stats_builder_finish()` and everything in it (not the
/// strings, which belong to the caller). NULL is ignored. Cannot panic.
///
/// # Safety
/// `list` NULL or from `qns_stats_builder_finish()` and not freed before.
#[no_mangle]
pub unsafe extern "C" fn qns_stats_list_free(list: *mut QnsStatsList) {
    // SAFETY: qns_stats_builder_finish made this pointer from Box::into_raw
    // of an OwnedStatsList (view at offset 0); freed once (the contract).
    unsafe { free_box(list.cast::<OwnedStatsList>()) }
}

/// Value `index` of the `query-stats-schemas` entry of `provider` (a
/// `QnsStatsProvider`): true, with `*value` written, while `index` is below
/// the number of values; false after the last, and for an unknown provider
/// or a NULL `value`. The values come in the order the objects report them.
/// Cannot panic: it walks the provider's table.
///
/// # Safety
/// `value` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn qns_stats_schema(
    provider: u32,
    index: usize,
    value: *mut QnsStatSchema,
) -> bool {
    let provider = match provider {
        0 => QnsStatsProvider::Netfilter,
        1 => QnsStatsProvider::ColoCompare,
        _ => return false,
    };
    // SAFETY: the contract: NULL or writable; MaybeUninit needs no valid
    // value there (its enums have invalid bit patterns).
    let out = unsafe {
        value
            .cast::<std::mem::MaybeUninit<QnsStatSchema>>()
            .as_mut()
    };
    match (schema(provider).nth(index), out) {
        (Some(entry), Some(out)) => {
            out.write(entry);
            true
        }
        _ => false,
    }
}
