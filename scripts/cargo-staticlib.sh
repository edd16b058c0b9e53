#!/usr/bin/env bash
# Called by meson.build: build the static library with cargo and install it
# at OUTPUT only when it changed, so that QEMU relinks only then.
#   cargo-staticlib.sh CARGO SOURCE_DIR TARGET_DIR OUTPUT
set -euo pipefail
cargo=$1 src=$2 target=$3 output=$4
# QEMU uses the committed header, so cbindgen (feature "header") is not built.
"$cargo" rustc --quiet --locked --release --lib --crate-type staticlib \
    --no-default-features --manifest-path "$src/Cargo.toml" --target-dir "$target"
built="$target/release/libqemu_netfilter_stats.a"
if ! cmp -s "$built" "$output"; then
    cp "$built" "$output.tmp"
    mv "$output.tmp" "$output"
fi
