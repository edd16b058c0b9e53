//! The C header and the Rust code must agree on the memory layout of every
//! type they share, as a C compiler sees the header.
//!
//! `tests/header.rs` proves that the committed header is what cbindgen makes
//! of the code, but not that a C compiler lays those declarations out the way
//! rustc lays out the `#[repr(C)]` types (a field cbindgen renders with the
//! wrong C type, a `usize` that is not `size_t`, a type that is not
//! `#[repr(C)]` at all). Here bindgen parses `include/qemu_netfilter_stats.h`
//! with libclang as C11, and every size, alignment, field offset, field type
//! and enum value (and enum size) libclang computes is compared with the Rust
//! one. A struct, enum constant or function in the header that this test does
//! not know about is itself a failure, so new ABI types cannot slip past it.
//!
//! The numbers are read from the text of bindgen's generated layout checks
//! (`["Size of QnsStatsList"][size_of::<QnsStatsList>() - 16usize];` and so on), the
//! field types from its struct definitions and the enums from its constants
//! and type aliases; the bindings are never compiled.

use std::{
    collections::{BTreeMap, BTreeSet},
    mem::{align_of, offset_of, size_of},
    sync::OnceLock,
};

use qemu_netfilter_stats::{
    counters::{QnsCounterId, QnsDirection},
    ffi::{counters::*, decoder::*, outdev::*, qns_result_message, stats::*, QnsResult},
    stats::{
        QnsCounterStats, QnsFilterStats, QnsStatKind, QnsStatSchema, QnsStatUnit, QnsStatValue,
        QnsStatsList, QnsStatsProvider,
    },
};

const HEADER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/include/qemu_netfilter_stats.h"
);

// ---------------------------------------------------------------------------
// The Rust side.

/// Size, alignment and fields of one struct.
#[derive(Debug, Default, PartialEq, Eq)]
struct Layout {
    size: usize,
    align: usize,
    /// In declaration order.
    fields: Vec<Field>,
}

#[derive(Debug, PartialEq, Eq)]
struct Field {
    name: String,
    offset: usize,
    /// The type, spelled the same way for both sides by [`normalize_type`]
    /// (`u64`, `* const i8`, ...): a field of the wrong size can hide in the
    /// padding at the end of a struct, where the offsets do not show it.
    ty: String,
}

/// The type of the field that `_field` returns, by name.
fn type_of_field<S, F>(_field: fn(&S) -> &F) -> String {
    normalize_type(&tokenize(std::any::type_name::<F>()))
}

/// The Rust [`Layout`] of `$ty`, whose fields (all of them, in order) are
/// listed. A field missing here shows up as a difference with the C side.
macro_rules! rust_layout {
    ($ty:ty { $($field:ident),* $(,)? }) => {
        Layout {
            size: size_of::<$ty>(),
            align: align_of::<$ty>(),
            fields: vec![$(Field {
                name: stringify!($field).to_owned(),
                offset: offset_of!($ty, $field),
                ty: type_of_field(|s: &$ty| &s.$field),
            }),*],
        }
    };
}

/// Every struct with fields that the header declares, by its C name.
fn rust_structs() -> BTreeMap<&'static str, Layout> {
    BTreeMap::from([
        (
            "QnsCounterStats",
            rust_layout!(QnsCounterStats {
                name,
                packets,
                bytes
            }),
        ),
        (
            "QnsFilterStats",
            rust_layout!(QnsFilterStats {
                name,
                netdev,
                qom_type,
                packets_tx,
                packets_rx,
                bytes_tx,
                bytes_rx,
                counters,
                n_counters,
                values,
                n_values
            }),
        ),
        (
            "QnsStatValue",
            rust_layout!(QnsStatValue {
                name,
                value,
                buckets,
                n_buckets
            }),
        ),
        (
            "QnsStatSchema",
            rust_layout!(QnsStatSchema {
                name,
                kind,
                unit,
                exponent
            }),
        ),
        ("QnsStatsList", rust_layout!(QnsStatsList { filters, len })),
        // Not ours but part of the ABI: qns_outdev_push takes the C
        // `struct iovec` from <sys/uio.h> as a `libc::iovec`.
        ("iovec", rust_layout!(libc::iovec { iov_base, iov_len })),
    ])
}

/// An enum's size and its constants (C name, Rust discriminant).
#[derive(Debug, Default, PartialEq, Eq)]
struct EnumValues {
    size: usize,
    values: BTreeMap<String, u64>,
}

/// The [`EnumValues`] of the Rust enum `$ty`, each variant under the name of
/// its C constant.
macro_rules! rust_enum {
    ($ty:ident { $($c_name:ident = $variant:ident),* $(,)? }) => {
        EnumValues {
            size: size_of::<$ty>(),
            values: BTreeMap::from([$((stringify!($c_name).to_owned(), $ty::$variant as u64)),*]),
        }
    };
}

/// Every enum the header declares, by its C name.
fn rust_enums() -> BTreeMap<&'static str, EnumValues> {
    BTreeMap::from([
        (
            "QnsResult",
            rust_enum!(QnsResult {
                QNS_RESULT_OK = Ok,
                QNS_RESULT_NULL_POINTER = NullPointer,
                QNS_RESULT_INVALID_ARGUMENT = InvalidArgument,
                QNS_RESULT_FRAME_TOO_LARGE = FrameTooLarge,
                QNS_RESULT_VNET_HEADER_TOO_LARGE = VnetHeaderTooLarge,
                QNS_RESULT_EMPTY_FRAME = EmptyFrame,
                QNS_RESULT_TRUNCATED_FRAME = TruncatedFrame,
                QNS_RESULT_DESYNCHRONIZED = Desynchronized,
                QNS_RESULT_BUSY = Busy,
                QNS_RESULT_PANIC = Panic,
                QNS_RESULT_POISONED = Poisoned,
                QNS_RESULT_BACKLOG_FULL = BacklogFull,
            }),
        ),
        (
            "QnsStatsProvider",
            rust_enum!(QnsStatsProvider {
                QNS_STATS_PROVIDER_NETFILTER = Netfilter,
                QNS_STATS_PROVIDER_COLO_COMPARE = ColoCompare,
            }),
        ),
        (
            "QnsStatUnit",
            rust_enum!(QnsStatUnit {
                QNS_STAT_UNIT_NONE = None,
                QNS_STAT_UNIT_BYTES = Bytes,
                QNS_STAT_UNIT_SECONDS = Seconds,
            }),
        ),
        (
            "QnsStatKind",
            rust_enum!(QnsStatKind {
                QNS_STAT_KIND_CUMULATIVE = Cumulative,
                QNS_STAT_KIND_INSTANT = Instant,
                QNS_STAT_KIND_LOG2_HISTOGRAM = Log2Histogram,
            }),
        ),
        (
            "QnsDirection",
            rust_enum!(QnsDirection {
                QNS_DIRECTION_TX = Tx,
                QNS_DIRECTION_RX = Rx,
            }),
        ),
        (
            "QnsCounterId",
            rust_enum!(QnsCounterId {
                QNS_COUNTER_ID_INDEV = Indev,
                QNS_COUNTER_ID_OUTDEV = Outdev,
                QNS_COUNTER_ID_INDEV_ERRORS = IndevErrors,
                QNS_COUNTER_ID_OUTDEV_ERRORS = OutdevErrors,
                QNS_COUNTER_ID_HELD = Held,
                QNS_COUNTER_ID_HOLD_TIME = HoldTime,
                QNS_COUNTER_ID_RELEASED = Released,
                QNS_COUNTER_ID_DROPPED = Dropped,
                QNS_COUNTER_ID_BUFFERED = Buffered,
                QNS_COUNTER_ID_CONNECTIONS = Connections,
                QNS_COUNTER_ID_REWRITTEN = Rewritten,
                QNS_COUNTER_ID_CLOSED = Closed,
                QNS_COUNTER_ID_WRITTEN = Written,
                QNS_COUNTER_ID_TRUNCATED = Truncated,
                QNS_COUNTER_ID_WRITE_ERRORS = WriteErrors,
                QNS_COUNTER_ID_PRIMARY = Primary,
                QNS_COUNTER_ID_SECONDARY = Secondary,
                QNS_COUNTER_ID_MISCOMPARE_TCP = MiscompareTcp,
                QNS_COUNTER_ID_MISCOMPARE_UDP = MiscompareUdp,
                QNS_COUNTER_ID_MISCOMPARE_ICMP = MiscompareIcmp,
                QNS_COUNTER_ID_MISCOMPARE_OTHER = MiscompareOther,
                QNS_COUNTER_ID_MISCOMPARE_TIMEOUT = MiscompareTimeout,
                QNS_COUNTER_ID_PRIMARY_DROPPED = PrimaryDropped,
                QNS_COUNTER_ID_SECONDARY_DROPPED = SecondaryDropped,
                QNS_COUNTER_ID_UNSUPPORTED = Unsupported,
                QNS_COUNTER_ID_SEND_ERRORS = SendErrors,
                QNS_COUNTER_ID_PRIMARY_QUEUED = PrimaryQueued,
                QNS_COUNTER_ID_SECONDARY_QUEUED = SecondaryQueued,
                QNS_COUNTER_ID_PRIMARY_IN_ERRORS = PrimaryInErrors,
                QNS_COUNTER_ID_SECONDARY_IN_ERRORS = SecondaryInErrors,
                QNS_COUNTER_ID_RELEASE_LATENCY = ReleaseLatency,
                QNS_COUNTER_ID_DELAY = Delay,
                QNS_COUNTER_ID_CHECKPOINT_REQUESTS = CheckpointRequests,
            }),
        ),
    ])
}

/// The names of the listed `ffi` functions; naming them makes the test fail
/// to compile if one does not exist. (That each is exported under that name
/// is checked by `scripts/test-c-abi.sh`, which links C code against them.)
macro_rules! rust_functions {
    ($($f:ident),* $(,)?) => {
        BTreeSet::from([$({
            let _ = $f;
            stringify!($f)
        }),*])
    };
}

fn rust_functions() -> BTreeSet<&'static str> {
    rust_functions![
        qns_result_message,
        qns_counters_new,
        qns_counters_free,
        qns_counters_count_packet,
        qns_counters_add,
        qns_counters_sub,
        qns_counters_set,
        qns_decoder_new,
        qns_decoder_count_as,
        qns_decoder_free,
        qns_decoder_feed,
        qns_decoder_reset,
        qns_decoder_error_message,
        qns_outdev_new,
        qns_outdev_free,
        qns_outdev_count_as,
        qns_outdev_push,
        qns_outdev_push_at,
        qns_outdev_pending,
        qns_outdev_advance,
        qns_outdev_advance_at,
        qns_outdev_congested,
        qns_outdev_drained,
        qns_outdev_mid_frame,
        qns_outdev_discard,
        qns_stats_builder_new,
        qns_stats_builder_add,
        qns_stats_builder_add_counters,
        qns_stats_builder_finish,
        qns_stats_builder_free,
        qns_stats_list_free,
        qns_stats_builder_add_object,
        qns_stats_schema,
    ]
}

// ---------------------------------------------------------------------------
// The C side, as libclang sees the header.

/// What the header declares, as far as this test is concerned.
#[derive(Debug, Default)]
struct CHeader {
    /// Structs with fields: their layouts, from bindgen's layout checks.
    structs: BTreeMap<String, Layout>,
    /// Structs declared without a body: the opaque handles.
    opaque: BTreeSet<String>,
    enums: BTreeMap<String, EnumValues>,
    functions: BTreeSet<String>,
}

/// Bindgen's output for the header, generated once for all the tests.
fn bindings() -> &'static str {
    static BINDINGS: OnceLock<String> = OnceLock::new();
    BINDINGS.get_or_init(|| {
        bindgen::Builder::default()
            .header(HEADER)
            .clang_args(["-x", "c", "-std=c11"])
            // Our declarations and what they use (`struct iovec`), not the
            // whole of the system headers.
            .allowlist_file(".*/qemu_netfilter_stats\\.h")
            .layout_tests(true)
            .prepend_enum_name(false)
            // `pub type QnsResult = u32;` rather than `c_uint`.
            .translate_enum_integer_types(true)
            .generate_comments(false)
            .formatter(bindgen::Formatter::None)
            // offset_of! layout checks (Rust 1.77+); the crate's MSRV.
            .rust_target(bindgen::RustTarget::stable(83, 0).expect("a known Rust version"))
            .generate()
            .expect("bindgen (libclang) parses the header as C11")
            .to_string()
    })
}

/// A token of bindgen's output: an identifier or number, a string literal
/// (with its quotes), or one punctuation character.
fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        let mut token = c.to_string();
        if c == '"' {
            for c in chars.by_ref() {
                token.push(c);
                if c == '"' {
                    break;
                }
            }
        } else if c.is_alphanumeric() || c == '_' {
            while let Some(&c) = chars.peek() {
                if !(c.is_alphanumeric() || c == '_') {
                    break;
                }
                token.push(c);
                chars.next();
            }
        }
        tokens.push(token);
    }
    tokens
}

fn is_ident(token: &str) -> bool {
    token.starts_with(|c: char| c.is_alphabetic() || c == '_')
}

/// The fields (name, type tokens) in the body of a struct, `tokens` starting
/// just after its `{`.
fn struct_fields(tokens: &[String]) -> Vec<(String, Vec<String>)> {
    let mut fields: Vec<(String, Vec<String>)> = Vec::new();
    let mut depth = 0usize;
    let mut expect_field = true;
    let mut i = 0;
    while let Some(token) = tokens.get(i) {
        match token.as_str() {
            "}" if depth == 0 => break,
            "," if depth == 0 => expect_field = true,
            "pub" if depth == 0 && expect_field => {}
            name if depth == 0 && expect_field => {
                assert!(
                    is_ident(name) && tokens[i + 1] == ":",
                    "unexpected {name:?} where a field was expected"
                );
                fields.push((name.to_owned(), Vec::new()));
                expect_field = false;
                i += 2; // The name and its `:`.
                continue;
            }
            other => {
                match other {
                    "<" | "(" | "[" | "{" => depth += 1,
                    // `->` in a function pointer type is not a bracket.
                    ">" if tokens[i - 1] == "-" => {}
                    ">" | ")" | "]" | "}" => depth -= 1,
                    _ => {}
                }
                if let Some((_, ty)) = fields.last_mut() {
                    ty.push(other.to_owned());
                }
            }
        }
        i += 1;
    }
    fields
}

/// A type as a string both sides spell alike: paths reduced to their last
/// segment (`::std::os::raw::c_char`, `core::ffi::c_void`, the crate's own
/// module paths) and C's integer aliases to the Rust type they stand for here.
fn normalize_type(tokens: &[String]) -> String {
    use std::{any::type_name, ffi::*};
    let c_types = [
        ("c_char", type_name::<c_char>()),
        ("c_schar", type_name::<c_schar>()),
        ("c_uchar", type_name::<c_uchar>()),
        ("c_short", type_name::<c_short>()),
        ("c_ushort", type_name::<c_ushort>()),
        ("c_int", type_name::<c_int>()),
        ("c_uint", type_name::<c_uint>()),
        ("c_long", type_name::<c_long>()),
        ("c_ulong", type_name::<c_ulong>()),
        ("c_longlong", type_name::<c_longlong>()),
        ("c_ulonglong", type_name::<c_ulonglong>()),
    ];
    let mut out = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let next = |k: usize| tokens.get(i + k).map(String::as_str);
        let path_segment = is_ident(token)
            && !matches!(token.as_str(), "const" | "mut") // `*const ::std::...`
            && next(1) == Some(":")
            && next(2) == Some(":");
        if token == ":" || path_segment {
            continue;
        }
        let token = c_types
            .iter()
            .find(|(c, _)| c == token)
            .map_or(token.as_str(), |(_, rust)| rust);
        out.push(token);
    }
    out.join(" ")
}

/// The number in the layout check that starts at `tokens[0]` (its message):
/// the last `<n>usize` before the `;`.
fn layout_number(tokens: &[String]) -> usize {
    tokens
        .iter()
        .take_while(|t| *t != ";")
        .filter_map(|t| t.strip_suffix("usize")?.parse().ok())
        .last()
        .unwrap_or_else(|| panic!("no number in the layout check {}", tokens[0]))
}

/// The size in bytes of the integer type bindgen gives a C enum.
fn int_size(rust_type: &str) -> usize {
    match rust_type {
        "u8" | "i8" => 1,
        "u16" | "i16" => 2,
        "u32" | "i32" => 4,
        "u64" | "i64" => 8,
        other => panic!("unexpected enum integer type {other}"),
    }
}

fn parse_c_header() -> CHeader {
    let tokens = tokenize(bindings());
    let mut header = CHeader::default();
    let mut constants = Vec::new();
    let mut aliases = BTreeMap::new();
    let mut struct_fields_seen = BTreeMap::new();
    let mut offsets: BTreeMap<String, Vec<(String, usize)>> = BTreeMap::new();

    for (i, token) in tokens.iter().enumerate() {
        let at = |k: usize| tokens.get(i + k).map_or("", String::as_str);
        match (token.as_str(), at(1)) {
            ("pub", "struct" | "union") => {
                let name = at(2).to_owned();
                assert_eq!(at(3), "{", "{name} has a body");
                let fields = struct_fields(&tokens[i + 4..]);
                if fields.len() == 1 && fields[0].0 == "_unused" {
                    header.opaque.insert(name);
                } else {
                    struct_fields_seen.insert(name, fields);
                }
            }
            // `pub const QNS_RESULT_OK : QnsResult = 0 ;` (or `= - 1 ;`)
            ("pub", "const") if at(3) == ":" && at(5) == "=" => {
                let value: String = tokens[i + 6..]
                    .iter()
                    .take_while(|t| *t != ";")
                    .map(String::as_str)
                    .collect();
                constants.push((at(2).to_owned(), at(4).to_owned(), value));
            }
            // `pub type QnsResult = u32 ;`
            ("pub", "type") if at(3) == "=" && at(5) == ";" => {
                aliases.insert(at(2).to_owned(), at(4).to_owned());
            }
            ("pub", "fn") => {
                header.functions.insert(at(2).to_owned());
            }
            _ => {}
        }
        let Some(message) = token.strip_prefix('"').and_then(|t| t.strip_suffix('"')) else {
            continue;
        };
        let number = || layout_number(&tokens[i..]);
        if let Some(name) = message.strip_prefix("Size of ") {
            header.structs.entry(name.to_owned()).or_default().size = number();
        } else if let Some(name) = message.strip_prefix("Alignment of ") {
            header.structs.entry(name.to_owned()).or_default().align = number();
        } else if let Some(path) = message.strip_prefix("Offset of field: ") {
            let (name, field) = path.split_once("::").expect("Struct::field");
            let struct_offsets = offsets.entry(name.to_owned()).or_default();
            struct_offsets.push((field.to_owned(), number()));
        }
    }

    // Every struct with fields must have had its layout checks, for every
    // field in order: a struct that bindgen could not lay out is a failure,
    // not a struct skipped.
    assert_eq!(
        header.structs.keys().collect::<Vec<_>>(),
        struct_fields_seen.keys().collect::<Vec<_>>(),
        "structs with layout checks and structs with fields differ"
    );
    for (name, fields) in struct_fields_seen {
        let offsets = offsets.remove(&name).unwrap_or_default();
        assert_eq!(
            offsets.iter().map(|f| &f.0).collect::<Vec<_>>(),
            fields.iter().map(|f| &f.0).collect::<Vec<_>>(),
            "bindgen gave no offset (or a partial list) for the fields of {name}"
        );
        let layout = header.structs.get_mut(&name).expect("checked above");
        layout.fields = offsets
            .into_iter()
            .zip(fields)
            .map(|((name, offset), (_, ty))| Field {
                name,
                offset,
                ty: normalize_type(&ty),
            })
            .collect();
    }

    for (name, ty, value) in constants {
        let Some(int_type) = aliases.get(&ty) else {
            continue; // Not an enum constant (QNS_DEFAULT_MAX_FRAME_LEN).
        };
        // As the Rust side does it: `discriminant as u64`.
        let value = value
            .parse::<u64>()
            .or_else(|_| value.parse::<i64>().map(|v| v as u64))
            .unwrap_or_else(|_| panic!("{name} = {value} is not an integer"));
        let e = header.enums.entry(ty).or_default();
        e.size = int_size(int_type);
        e.values.insert(name, value);
    }
    header
}

fn c_header() -> &'static CHeader {
    static HEADER: OnceLock<CHeader> = OnceLock::new();
    HEADER.get_or_init(parse_c_header)
}

// ---------------------------------------------------------------------------
// The checks.

#[test]
fn every_struct_in_the_header_is_checked() {
    let c: BTreeSet<&str> = c_header().structs.keys().map(String::as_str).collect();
    let rust: BTreeSet<&str> = rust_structs().into_keys().collect();
    assert_eq!(
        c, rust,
        "the header's structs with fields differ from the ones this test checks: \
         add the new struct to rust_structs()"
    );
    // The handles stay opaque to C (their Rust types are not #[repr(C)]).
    // QnsCounters and QnsStatsBuilder are exported under the names QEMU's
    // include/net/filter.h declares them by (cbindgen.toml).
    let opaque: Vec<&str> = c_header().opaque.iter().map(String::as_str).collect();
    assert_eq!(
        opaque,
        [
            "NetFilterCounters",
            "NetFilterStatsBuilder",
            "QnsDecoder",
            "QnsOutdev"
        ]
    );
}

#[test]
fn struct_layouts_match() {
    let c = &c_header().structs;
    let mut mismatches = Vec::new();
    for (name, rust) in rust_structs() {
        let Some(c) = c.get(name) else {
            mismatches.push(format!("{name}: not in the header"));
            continue;
        };
        if *c != rust {
            mismatches.push(format!("{name}:\n  C:    {c:?}\n  Rust: {rust:?}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "C and Rust layouts differ:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn enum_values_match() {
    let c = &c_header().enums;
    let rust = rust_enums();
    assert_eq!(
        c.keys().map(String::as_str).collect::<Vec<_>>(),
        rust.keys().copied().collect::<Vec<_>>(),
        "the header's enums differ from the ones this test checks"
    );
    for (name, rust) in rust {
        let c = &c[name];
        assert_eq!(c.size, 4, "sizeof(enum {name}) in C");
        assert_eq!(c.values, rust.values, "values of enum {name}");
        assert_eq!(c.size, rust.size, "size of enum {name}, C vs Rust");
    }
}

#[test]
fn every_function_in_the_header_is_in_the_ffi_module() {
    let c: BTreeSet<&str> = c_header().functions.iter().map(String::as_str).collect();
    assert_eq!(c, rust_functions());
}
