//! Generates the C header from `src/ffi/` with cbindgen (feature `header`,
//! on by default) into `$OUT_DIR/qemu_netfilter_stats.h`. The committed copy
//! in `include/` is what C code uses; `tests/header.rs` fails when the two
//! differ, and `scripts/update-header.sh` refreshes the committed copy.

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    #[cfg(feature = "header")]
    generate_header();
}

#[cfg(feature = "header")]
fn generate_header() {
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let config = cbindgen::Config::from_file(format!("{crate_dir}/cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen can read src/ffi")
        .write_to_file(format!("{out_dir}/qemu_netfilter_stats.h"));
}
