//! The committed C header must be exactly what cbindgen makes of the code.
//! `UPDATE_HEADER=1 cargo test --test header` (scripts/update-header.sh)
//! rewrites it.

#[test]
fn committed_header_matches_the_code() {
    let generated_path = concat!(env!("OUT_DIR"), "/qemu_netfilter_stats.h");
    let committed_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/include/qemu_netfilter_stats.h"
    );
    let generated = std::fs::read_to_string(generated_path).expect("build.rs generated the header");
    if std::env::var_os("UPDATE_HEADER").is_some() {
        std::fs::write(committed_path, &generated).expect("include/ is writable");
        return;
    }
    let committed = std::fs::read_to_string(committed_path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/qemu_netfilter_stats.h is stale: run scripts/update-header.sh and commit it"
    );
}

/// The header's comments are C documentation: no Rust intra-doc link such
/// as "[`qns_decoder_new`]" may leak into them from the doc comments.
#[test]
fn header_comments_have_no_rust_link_syntax() {
    let header = include_str!("../include/qemu_netfilter_stats.h");
    for (n, line) in header.lines().enumerate() {
        assert!(!line.contains("[`"), "line {}: {line}", n + 1);
    }
}
