//! Links QEMU's C decoder, which `run.sh` extracts from the QEMU source and
//! compiles into a static library before it builds this package.

use std::{env, path::Path};

fn main() {
    println!("cargo:rerun-if-env-changed=QNS_BENCH_QEMU_C_LIB_DIR");
    let Ok(dir) = env::var("QNS_BENCH_QEMU_C_LIB_DIR") else {
        panic!(
            "QNS_BENCH_QEMU_C_LIB_DIR is not set: build and run this benchmark \
             with benches/decoder-counters/run.sh, which builds QEMU's C decoder first"
        );
    };
    let lib = Path::new(&dir).join("libqns_bench_qemu_c.a");
    assert!(lib.is_file(), "{} is missing", lib.display());
    println!("cargo:rerun-if-changed={}", lib.display());
    println!("cargo:rustc-link-search=native={dir}");
    println!("cargo:rustc-link-lib=static=qns_bench_qemu_c");
}
