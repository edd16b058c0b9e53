//! The C ABI walked from Rust as C walks it (`tests/c/abi_test.c` does the
//! same from a C compiler, at greater length).

// Each test is one C-side sequence in one block, as a C caller writes it.
#![allow(clippy::multiple_unsafe_ops_per_block)]

use std::ffi::{c_void, CStr};

use qemu_netfilter_stats::{
    counters::QnsCounterId,
    ffi::{counters::*, decoder::*, outdev::*, stats::*, QnsResult},
    stats::QnsStatsList,
};

/// Counter `id` of `counters`, read the way QEMU reads it: through a stats
/// list.
///
/// # Safety
/// `counters` must be live counters.
unsafe fn read(counters: *mut QnsCounters, id: QnsCounterId) -> (u64, u64) {
    // SAFETY: the builder and list are this library's, used once each.
    unsafe {
        let b = qns_stats_builder_new();
        let ok = QnsResult::Ok;
        assert_eq!(
            qns_stats_builder_add(b, c"f".as_ptr(), c"n".as_ptr(), c"t".as_ptr(), counters),
            ok
        );
        assert_eq!(
            qns_stats_builder_add_counters(b, counters, &(id as u32), 1),
            ok
        );
        let mut list: *mut QnsStatsList = std::ptr::null_mut();
        assert_eq!(qns_stats_builder_finish(b, &mut list), ok);
        let f = &*(*list).filters;
        // a count of events (bytes always 0) is in the values alone, after
        // the directions' four
        let value = if f.n_counters == 1 {
            ((*f.counters).packets, (*f.counters).bytes)
        } else {
            assert_eq!((f.n_counters, f.n_values), (0, 5));
            ((*f.values.add(4)).value, 0)
        };
        qns_stats_list_free(list);
        value
    }
}

/// The first number that is no `QnsCounterId`.
const UNKNOWN_ID: u32 = QnsCounterId::CheckpointRequests as u32 + 1;
#[test]
fn outdev_push_write_in_pieces_and_discard() {
    let payload = *b"0123456789";
    let iov = [libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast::<c_void>(),
        iov_len: payload.len(),
    }];
    // SAFETY: every pointer comes from this library's constructors or from
    // live locals, and each handle is freed exactly once.
    unsafe {
        let counters = qns_counters_new();
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
        let (mut data, mut len) = (std::ptr::null(), 0);
        assert_eq!(qns_outdev_pending(q, &mut data, &mut len), QnsResult::Ok);
        assert_eq!(
            (len, std::slice::from_raw_parts(data, 4)),
            (28, &b"\0\0\0\x0a"[..])
        );
        assert_eq!(
            qns_outdev_advance(q, counters, 29),
            QnsResult::InvalidArgument
        );
        assert_eq!(qns_outdev_advance(q, counters, 20), QnsResult::Ok);
        assert!(qns_outdev_mid_frame(q));
        let mut dropped = 0;
        assert_eq!(qns_outdev_discard(q, counters, &mut dropped), QnsResult::Ok);
        assert_eq!(dropped, 1);
        assert_eq!(read(counters, QnsCounterId::Outdev), (1, 10));
        assert_eq!(read(counters, QnsCounterId::OutdevErrors), (2, 20));
        qns_outdev_free(q);
        qns_counters_free(counters);
    }
}

#[test]
fn stats_list_in_one_pass_with_each_class_order() {
    // SAFETY: as above.
    unsafe {
        let (r, b) = (qns_counters_new(), qns_counters_new());
        assert_eq!(qns_counters_count_packet(r, 0, 60), QnsResult::Ok);
        assert_eq!(qns_counters_count_packet(b, 1, 7), QnsResult::Ok);
        assert_eq!(
            qns_counters_count_packet(b, 2, 7),
            QnsResult::InvalidArgument
        );
        let builder = qns_stats_builder_new();
        let ids = [
            QnsCounterId::OutdevErrors as u32,
            QnsCounterId::Indev as u32,
        ];
        let (name, netdev, ty) = (c"r0", c"n0", c"filter-redirector");
        assert_eq!(
            qns_stats_builder_add_counters(builder, r, ids.as_ptr(), 2),
            QnsResult::InvalidArgument
        );
        assert_eq!(
            qns_stats_builder_add(builder, name.as_ptr(), netdev.as_ptr(), ty.as_ptr(), r),
            QnsResult::Ok
        );
        assert_eq!(
            qns_stats_builder_add_counters(builder, r, ids.as_ptr(), 2),
            QnsResult::Ok
        );
        assert_eq!(
            qns_stats_builder_add_counters(builder, r, [u32::MAX].as_ptr(), 1),
            QnsResult::InvalidArgument
        );
        assert_eq!(
            qns_stats_builder_add_counters(builder, r, std::ptr::null(), 1),
            QnsResult::NullPointer
        );
        let null = std::ptr::null();
        assert_eq!(
            qns_stats_builder_add(builder, null, netdev.as_ptr(), ty.as_ptr(), b),
            QnsResult::NullPointer
        );
        assert_eq!(
            qns_stats_builder_add(
                builder,
                c"b0".as_ptr(),
                netdev.as_ptr(),
                c"filter-buffer".as_ptr(),
                b
            ),
            QnsResult::Ok
        );
        let mut list = std::ptr::null_mut();
        assert_eq!(qns_stats_builder_finish(builder, &mut list), QnsResult::Ok);
        let view = &*list;
        assert_eq!(view.len, 2);
        let f = std::slice::from_raw_parts(view.filters, 2);
        // The strings are the caller's own, not copies.
        assert_eq!(
            (f[0].name, f[0].netdev, f[0].qom_type),
            (name.as_ptr(), netdev.as_ptr(), ty.as_ptr())
        );
        assert_eq!(
            (f[0].packets_tx, f[0].bytes_tx, f[0].packets_rx),
            (1, 60, 0)
        );
        assert_eq!(f[0].n_counters, 2);
        let counters = std::slice::from_raw_parts(f[0].counters, 2);
        assert_eq!(CStr::from_ptr(counters[0].name), c"outdev-errors");
        assert_eq!(CStr::from_ptr(counters[1].name), c"indev");
        assert_eq!(
            (CStr::from_ptr(f[1].name), f[1].packets_rx, f[1].bytes_rx),
            (c"b0", 1, 7)
        );
        assert_eq!((f[1].n_counters, f[1].counters), (0, std::ptr::null()));
        qns_stats_list_free(list);
        assert_eq!(
            qns_stats_builder_finish(std::ptr::null_mut(), &mut list),
            QnsResult::NullPointer
        );
        // A NULL out-parameter still consumes the builder (valgrind would
        // see the leak otherwise).
        assert_eq!(
            qns_stats_builder_finish(qns_stats_builder_new(), std::ptr::null_mut()),
            QnsResult::NullPointer
        );
        qns_counters_free(r);
        qns_counters_free(b);
    }
}

unsafe extern "C" fn ignore(_: *mut c_void, _: *const u8, _: usize, _: u32) {}

#[test]
fn decoder_fatal_error_wins_over_an_earlier_one_in_the_same_chunk() {
    let mut wire = 0u32.to_be_bytes().to_vec();
    wire.extend_from_slice(&101u32.to_be_bytes());
    // SAFETY: as above; `ignore` may be called with any opaque pointer.
    unsafe {
        let d = qns_decoder_new(false, 100);
        let c = qns_counters_new();
        let feed = |bytes: &[u8]| {
            qns_decoder_feed(
                d,
                c,
                bytes.as_ptr(),
                bytes.len(),
                Some(ignore),
                std::ptr::null_mut(),
            )
        };
        assert_eq!(feed(&wire), QnsResult::FrameTooLarge);
        assert_eq!(feed(b"more"), QnsResult::Desynchronized);
        assert_eq!(feed(b""), QnsResult::Desynchronized);
        assert!(CStr::from_ptr(qns_decoder_error_message(d))
            .to_bytes()
            .starts_with(b"frame length 101"));
        // the empty frame's 4 bytes, the oversized header's 4, then "more"
        assert_eq!(read(c, QnsCounterId::IndevErrors), (2, 12));
        assert_eq!(qns_decoder_reset(d, c), QnsResult::Ok);
        assert_eq!(feed(b""), QnsResult::Ok);
        qns_decoder_free(d);
        qns_counters_free(c);
    }
}

/// The exports that skip the panic boundary say why they cannot panic;
/// here each meets hostile arguments.
#[test]
fn exports_outside_the_boundary_do_not_panic() {
    for code in [0, 11, 12, u32::MAX] {
        assert!(!qemu_netfilter_stats::ffi::qns_result_message(code).is_null());
    }
    // SAFETY: every pointer is NULL or from the constructor it is freed by.
    unsafe {
        let c = qns_counters_new();
        assert!(!c.is_null());
        for direction in [0, 1, 2, u32::MAX] {
            for bytes in [0, u64::MAX, u64::MAX] {
                qns_counters_count_packet(c, direction, bytes);
            }
        }
        assert_eq!(
            qns_counters_count_packet(std::ptr::null_mut(), 0, 1),
            QnsResult::NullPointer
        );
        for id in [0, 5, UNKNOWN_ID - 1, UNKNOWN_ID, u32::MAX] {
            for (packets, bytes) in [(0, 0), (u64::MAX, u64::MAX)] {
                qns_counters_add(c, id, packets, bytes);
                qns_counters_sub(c, id, packets, bytes);
                qns_counters_set(c, id, packets, bytes);
            }
        }
        for f in [qns_counters_add, qns_counters_sub, qns_counters_set] {
            assert_eq!(f(std::ptr::null_mut(), 0, 1, 1), QnsResult::NullPointer);
        }
        let mut value = std::mem::MaybeUninit::uninit();
        for (provider, index) in [(0, 0), (1, 0), (0, usize::MAX), (2, 0), (u32::MAX, 0)] {
            qns_stats_schema(provider, index, value.as_mut_ptr());
            assert!(!qns_stats_schema(provider, index, std::ptr::null_mut()));
        }
        qns_counters_free(c);
        qns_counters_free(std::ptr::null_mut());
        for (vnet, max) in [(false, 0), (true, 1), (true, u32::MAX)] {
            // The constructors never return NULL: QEMU does not check.
            let (d, q) = (
                qns_decoder_new(vnet, max),
                qns_outdev_new(vnet, max, usize::MAX),
            );
            assert!(!d.is_null() && !q.is_null());
            qns_decoder_free(d);
            qns_outdev_free(q);
        }
        qns_outdev_free(qns_outdev_new(false, 0, 0));
        qns_decoder_free(std::ptr::null_mut());
        qns_outdev_free(std::ptr::null_mut());
        let b = qns_stats_builder_new();
        assert!(!b.is_null());
        qns_stats_builder_free(b);
        qns_stats_builder_free(std::ptr::null_mut());
        qns_stats_list_free(std::ptr::null_mut());
        assert!(!qns_outdev_congested(std::ptr::null()));
        assert!(qns_outdev_drained(std::ptr::null()));
        assert!(!qns_outdev_mid_frame(std::ptr::null()));
    }
}

#[test]
fn snapshot_counters_and_a_decoder_counting_elsewhere() {
    // SAFETY: every handle is from its constructor, used, then freed once.
    unsafe {
        let c = qns_counters_new();
        let queued = QnsCounterId::PrimaryQueued as u32;
        assert_eq!(qns_counters_add(c, queued, 3, 300), QnsResult::Ok);
        assert_eq!(qns_counters_sub(c, queued, 1, 100), QnsResult::Ok);
        assert_eq!(read(c, QnsCounterId::PrimaryQueued), (2, 200));
        let conns = QnsCounterId::Connections as u32;
        assert_eq!(qns_counters_set(c, conns, 9, 0), QnsResult::Ok);
        assert_eq!(qns_counters_set(c, conns, 4, 0), QnsResult::Ok);
        assert_eq!(read(c, QnsCounterId::Connections), (4, 0));
        assert_eq!(
            qns_counters_add(c, UNKNOWN_ID, 1, 1),
            QnsResult::InvalidArgument
        );

        // colo-compare's secondary_in: frames and bad input in its own
        // counters, a zero-length frame (rejected) then one good frame
        let d = qns_decoder_new(false, 0);
        let (frames, errors) = (
            QnsCounterId::Secondary as u32,
            QnsCounterId::SecondaryInErrors as u32,
        );
        assert_eq!(
            qns_decoder_count_as(d, frames, UNKNOWN_ID),
            QnsResult::InvalidArgument
        );
        assert_eq!(qns_decoder_count_as(d, frames, errors), QnsResult::Ok);
        let input = [0, 0, 0, 0, 0, 0, 0, 2, 0xaa, 0xbb];
        assert_eq!(
            qns_decoder_feed(
                d,
                c,
                input.as_ptr(),
                input.len(),
                Some(ignore),
                std::ptr::null_mut()
            ),
            QnsResult::EmptyFrame
        );
        assert_eq!(read(c, QnsCounterId::Secondary), (1, 2));
        assert_eq!(read(c, QnsCounterId::SecondaryInErrors), (1, 4));
        assert_eq!(read(c, QnsCounterId::Indev), (0, 0));
        assert_eq!(read(c, QnsCounterId::IndevErrors), (0, 0));
        qns_decoder_free(d);

        // an object that is not a filter: no directions, only its counters
        let b = qns_stats_builder_new();
        let (name, ty) = (c"comp0", c"colo-compare");
        assert_eq!(
            qns_stats_builder_add_object(b, std::ptr::null(), ty.as_ptr()),
            QnsResult::NullPointer
        );
        assert_eq!(
            qns_stats_builder_add_object(b, name.as_ptr(), ty.as_ptr()),
            QnsResult::Ok
        );
        let ids = [conns, frames];
        assert_eq!(
            qns_stats_builder_add_counters(b, c, ids.as_ptr(), 2),
            QnsResult::Ok
        );
        let mut list = std::ptr::null_mut();
        assert_eq!(qns_stats_builder_finish(b, &mut list), QnsResult::Ok);
        let f = &*(*list).filters;
        assert_eq!(CStr::from_ptr(f.netdev), c"");
        let values: Vec<_> = std::slice::from_raw_parts(f.values, f.n_values)
            .iter()
            .map(|v| (CStr::from_ptr(v.name).to_str().unwrap(), v.value))
            .collect();
        assert_eq!(
            values,
            [
                ("connections", 4),
                ("secondary-packets", 1),
                ("secondary-bytes", 2)
            ]
        );
        qns_stats_list_free(list);
        qns_counters_free(c);
    }
}

#[test]
fn schemas_name_every_value_once_with_its_unit() {
    use qemu_netfilter_stats::stats::{QnsStatKind, QnsStatSchema, QnsStatUnit};
    use QnsStatKind::{Cumulative, Instant, Log2Histogram};
    for provider in [0, 1] {
        let mut values = Vec::new();
        let mut v = std::mem::MaybeUninit::<QnsStatSchema>::uninit();
        // SAFETY: v is writable.
        while unsafe { qns_stats_schema(provider, values.len(), v.as_mut_ptr()) } {
            // SAFETY: a true return wrote a valid value.
            let v = unsafe { v.assume_init() };
            // SAFETY: the schema's names are static C strings.
            let name = unsafe { CStr::from_ptr(v.name) }.to_str().unwrap();
            values.push((name, v.kind, v.unit, v.exponent));
        }
        let names: std::collections::BTreeSet<_> = values.iter().map(|v| v.0).collect();
        assert_eq!(
            names.len(),
            values.len(),
            "a name twice in provider {provider}"
        );
        for (name, _, unit, exponent) in &values {
            let bytes = name.starts_with("bytes") || name.ends_with("-bytes");
            assert_eq!(*unit == QnsStatUnit::Bytes, bytes, "{name}");
            assert_eq!(*unit == QnsStatUnit::Seconds, *exponent == -6, "{name}");
        }
        let find = |n: &str| *values.iter().find(|v| v.0 == n).unwrap();
        if provider == 0 {
            // directions, 12 counters of frames, two durations, two of events
            assert_eq!(values.len(), 4 + 2 * 12 + 2 * 2 + 2);
            assert_eq!(
                find("packets-tx"),
                ("packets-tx", Cumulative, QnsStatUnit::None, 0)
            );
            assert_eq!(
                find("hold-time"),
                ("hold-time", Log2Histogram, QnsStatUnit::Seconds, -6)
            );
            assert_eq!(
                find("delay-sum"),
                ("delay-sum", Cumulative, QnsStatUnit::Seconds, -6)
            );
            assert_eq!(
                find("buffered-bytes"),
                ("buffered-bytes", Instant, QnsStatUnit::Bytes, 0)
            );
        } else {
            assert_eq!(find("primary-queued-packets").1, Instant);
            assert_eq!(
                find("miscompare-udp"),
                ("miscompare-udp", Cumulative, QnsStatUnit::None, 0)
            );
            assert_eq!(
                find("release-latency"),
                ("release-latency", Log2Histogram, QnsStatUnit::Seconds, -6)
            );
            assert_eq!(
                find("checkpoint-requests"),
                ("checkpoint-requests", Cumulative, QnsStatUnit::None, 0)
            );
            assert!(!names.contains("packets-tx"));
        }
    }
}
