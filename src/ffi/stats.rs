//! C ABI of [`StatsListBuilder`]: builds the list behind
//! `query-netfilter-stats`, which C converts to QAPI types and frees with one
//! call.

use std::ffi::{c_char, CString};

use super::{boundary, counters::QnsCounters, cstr_arg, QnsResult};
use crate::stats::{FilterStats, StatsListBuilder};

/// Collects the filters of one query (opaque).
///
/// Owner: whoever called [`qns_stats_builder_new`], until it passes it to
/// [`qns_stats_builder_finish`] (which consumes it) or
/// [`qns_stats_builder_free`]. Thread safety: none; one thread at a time.
pub struct QnsStatsBuilder(StatsListBuilder);

/// One filter-specific counter in a [`QnsFilterStats`].
#[derive(Debug)]
#[repr(C)]
pub struct QnsCounterStats {
    /// The counter's name (`indev`, `outdev`, ...), NUL-terminated.
    pub name: *const c_char,
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
}

/// One filter's entry in a [`QnsStatsList`]. Every pointer belongs to the
/// list and is valid until [`qns_stats_list_free`].
#[derive(Debug)]
#[repr(C)]
pub struct QnsFilterStats {
    /// The filter's QOM id.
    pub name: *const c_char,
    /// The id of its netdev.
    pub netdev: *const c_char,
    /// Its QOM type name.
    pub qom_type: *const c_char,
    /// Packets the netdev sent through the filter.
    pub packets_tx: u64,
    /// Packets the netdev received through the filter.
    pub packets_rx: u64,
    /// Bytes the netdev sent through the filter.
    pub bytes_tx: u64,
    /// Bytes the netdev received through the filter.
    pub bytes_rx: u64,
    /// `n_counters` filter-specific counters, in this fixed order: `indev`,
    /// `outdev`, `indev-errors`, `outdev-errors` (each only for the filter
    /// types that have it). NULL when `n_counters` is 0.
    pub counters: *const QnsCounterStats,
    /// Entries at `counters`.
    pub n_counters: usize,
}

/// The result of a query: `len` filters in the order they were added.
/// Owned by the caller of [`qns_stats_builder_finish`]; freed, with every
/// string and array in it, by one call to [`qns_stats_list_free`].
#[derive(Debug)]
#[repr(C)]
pub struct QnsStatsList {
    /// The entries; NULL when `len` is 0.
    pub filters: *const QnsFilterStats,
    /// Entries at `filters`.
    pub len: usize,
}

/// What a `*mut QnsStatsList` handed to C really points to: the C view first
/// (same address), then the storage it points into.
#[repr(C)]
struct OwnedStatsList {
    view: QnsStatsList,
    _entries: Vec<FilterStats>,
    _filters: Vec<QnsFilterStats>,
    _counters: Vec<Vec<QnsCounterStats>>,
}

impl OwnedStatsList {
    fn new(entries: Vec<FilterStats>) -> Box<Self> {
        let counters: Vec<Vec<QnsCounterStats>> = entries
            .iter()
            .map(|e| {
                e.counters
                    .iter()
                    .map(|(id, count)| QnsCounterStats {
                        name: id.c_name().as_ptr(),
                        packets: count.packets,
                        bytes: count.bytes,
                    })
                    .collect()
            })
            .collect();
        // The pointers below point into heap buffers (CString, Vec) that do
        // not move when the Vecs holding them are moved into the Box.
        let filters: Vec<QnsFilterStats> = entries
            .iter()
            .zip(&counters)
            .map(|(e, c)| QnsFilterStats {
                name: e.name.as_ptr(),
                netdev: e.netdev.as_ptr(),
                qom_type: e.qom_type.as_ptr(),
                packets_tx: e.tx.packets,
                packets_rx: e.rx.packets,
                bytes_tx: e.tx.bytes,
                bytes_rx: e.rx.bytes,
                counters: if c.is_empty() {
                    std::ptr::null()
                } else {
                    c.as_ptr()
                },
                n_counters: c.len(),
            })
            .collect();
        Box::new(OwnedStatsList {
            view: QnsStatsList {
                filters: if filters.is_empty() {
                    std::ptr::null()
                } else {
                    filters.as_ptr()
                },
                len: filters.len(),
            },
            _entries: entries,
            _filters: filters,
            _counters: counters,
        })
    }
}

/// A new builder: for every filter when `name` is NULL, or for the one filter
/// called `name`. Returns NULL only on an internal error.
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string (copied; need not outlive
/// the call).
#[no_mangle]
pub unsafe extern "C" fn qns_stats_builder_new(name: *const c_char) -> *mut QnsStatsBuilder {
    let only = if name.is_null() {
        None
    } else {
        // SAFETY: not NULL; the caller guarantees a NUL-terminated string.
        Some(unsafe { std::ffi::CStr::from_ptr(name) }.to_owned())
    };
    boundary(std::ptr::null_mut(), || {
        Box::into_raw(Box::new(QnsStatsBuilder(StatsListBuilder::new(only))))
    })
}

/// Add one filter: its QOM id `name`, its netdev id `netdev`, its QOM type
/// name `qom_type`, and its counters, read now. A filter that the query does
/// not ask for is skipped (still `QNS_RESULT_OK`).
///
/// Every pointer is required: NULL gives `QNS_RESULT_NULL_POINTER`. Which
/// filter-specific counters are reported depends on the type the counters
/// were created for
/// ([`qns_counters_new`](super::counters::qns_counters_new)), not on `qom_type`, which is only
/// the label in the list.
///
/// # Safety
/// `builder` NULL or live; the strings NULL or NUL-terminated (copied);
/// `counters` NULL or live counters.
#[no_mangle]
pub unsafe extern "C" fn qns_stats_builder_add(
    builder: *mut QnsStatsBuilder,
    name: *const c_char,
    netdev: *const c_char,
    qom_type: *const c_char,
    counters: *const QnsCounters,
) -> QnsResult {
    // SAFETY: the caller guarantees builder is NULL or live and unshared.
    let Some(builder) = (unsafe { builder.as_mut() }) else {
        return QnsResult::NullPointer;
    };
    let name = cstr_arg!(name);
    let netdev = cstr_arg!(netdev);
    let qom_type = cstr_arg!(qom_type);
    // SAFETY: the caller guarantees counters is NULL or live.
    let Some(counters) = (unsafe { QnsCounters::from_ptr(counters) }) else {
        return QnsResult::NullPointer;
    };
    boundary(QnsResult::Panic, || {
        builder.0.add(name, netdev, qom_type, counters);
        QnsResult::Ok
    })
}

/// Finish the query, consuming `builder` (whatever the result). On success
/// `*list` is the list, which the caller frees with [`qns_stats_list_free`].
/// When a filter was named and not added, returns `QNS_RESULT_NOT_FOUND` and,
/// if `error` is not NULL, sets `*error` to a message naming it
/// (`netfilter 'X' not found`), which the caller frees with
/// [`qns_string_free`].
///
/// # Safety
/// `builder` NULL or from [`qns_stats_builder_new`] and not consumed before;
/// `list` NULL or writable; `error` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn qns_stats_builder_finish(
    builder: *mut QnsStatsBuilder,
    list: *mut *mut QnsStatsList,
    error: *mut *mut c_char,
) -> QnsResult {
    if builder.is_null() {
        return QnsResult::NullPointer;
    }
    // SAFETY: from Box::into_raw in qns_stats_builder_new, consumed once
    // (caller's guarantee).
    let builder = unsafe { Box::from_raw(builder) };
    if list.is_null() {
        return QnsResult::NullPointer;
    }
    boundary(QnsResult::Panic, || match builder.0.finish() {
        Ok(entries) => {
            let owned = Box::into_raw(OwnedStatsList::new(entries));
            // SAFETY: list is not NULL and writable (caller's guarantee).
            // OwnedStatsList is repr(C) with the view first, so the pointer
            // to the whole allocation is a valid pointer to the view.
            unsafe { list.write(owned.cast::<QnsStatsList>()) };
            QnsResult::Ok
        }
        Err(not_found) => {
            if !error.is_null() {
                let text = CString::new(not_found.to_string()).unwrap_or_default();
                // SAFETY: error is not NULL and writable (caller's guarantee).
                unsafe { error.write(text.into_raw()) };
            }
            QnsResult::NotFound
        }
    })
}

/// Abandon a builder without finishing it. NULL is ignored.
///
/// # Safety
/// `builder` NULL or from [`qns_stats_builder_new`] and not consumed before.
#[no_mangle]
pub unsafe extern "C" fn qns_stats_builder_free(builder: *mut QnsStatsBuilder) {
    if !builder.is_null() {
        // SAFETY: from Box::into_raw, freed once (caller's guarantee).
        drop(unsafe { Box::from_raw(builder) });
    }
}

/// Free a list from [`qns_stats_builder_finish`] and everything in it. NULL
/// is ignored.
///
/// # Safety
/// `list` NULL or from [`qns_stats_builder_finish`] and not freed before.
#[no_mangle]
pub unsafe extern "C" fn qns_stats_list_free(list: *mut QnsStatsList) {
    if !list.is_null() {
        // SAFETY: qns_stats_builder_finish made this pointer from
        // Box::into_raw of an OwnedStatsList (view at offset 0); freed once.
        drop(unsafe { Box::from_raw(list.cast::<OwnedStatsList>()) });
    }
}

/// Free a string the library handed out (an error message). NULL is ignored.
///
/// # Safety
/// `s` NULL or a string from this library that says it is freed here, not
/// freed before.
#[no_mangle]
pub unsafe extern "C" fn qns_string_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: made by CString::into_raw in this library; freed once.
        drop(unsafe { CString::from_raw(s) });
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use super::*;
    use crate::ffi::counters::{qns_counters_count_packet, qns_counters_free, qns_counters_new};

    #[test]
    // One block walks the whole C-side sequence, as a C caller would.
    #[allow(clippy::multiple_unsafe_ops_per_block)]
    fn list_round_trip_through_the_c_abi() {
        // SAFETY: every pointer below comes from this library's
        // constructors, is live where it is used, and freed exactly once.
        unsafe {
            let counters = qns_counters_new(c"filter-redirector".as_ptr());
            assert_eq!(qns_counters_count_packet(counters, 0, 60), QnsResult::Ok);
            let builder = qns_stats_builder_new(std::ptr::null());
            let add = qns_stats_builder_add(
                builder,
                c"r0".as_ptr(),
                c"n0".as_ptr(),
                c"filter-redirector".as_ptr(),
                counters,
            );
            assert_eq!(add, QnsResult::Ok);
            let mut list = std::ptr::null_mut();
            let finish = qns_stats_builder_finish(builder, &mut list, std::ptr::null_mut());
            assert_eq!(finish, QnsResult::Ok);
            let view = &*list;
            assert_eq!(view.len, 1);
            let f = &*view.filters;
            assert_eq!(CStr::from_ptr(f.name), c"r0");
            assert_eq!((f.packets_tx, f.bytes_tx), (1, 60));
            assert_eq!(f.n_counters, 4);
            assert_eq!(CStr::from_ptr((*f.counters.add(3)).name), c"outdev-errors");
            qns_stats_list_free(list);

            let builder = qns_stats_builder_new(c"nope".as_ptr());
            let mut error = std::ptr::null_mut();
            let finish = qns_stats_builder_finish(builder, &mut list, &mut error);
            assert_eq!(finish, QnsResult::NotFound);
            assert_eq!(CStr::from_ptr(error), c"netfilter 'nope' not found");
            qns_string_free(error);
            qns_counters_free(counters);
        }
    }
}
