#!/usr/bin/env bash
# Called by meson.build: build the static library with cargo and install it
# at OUTPUT only when it changed, so that QEMU relinks only then.
#   cargo-staticlib.sh CARGO SOURCE_DIR TARGET_DIR OUTPUT
set -euo pipefail
cargo=$1 src=$2 target=$3 output=$4
built="$target/release/libqemu_netfilter_stats.a"
stamp="$target/.checkout"
# SOURCE_DIR is QEMU's subprojects/ symlink, which build-qemu.sh points at
# whichever checkout builds. cargo judges freshness by mtimes, so another
# checkout's older files would look up to date against its build: when the
# last build was not this checkout's (another path, or an archive newer
# than this script's stamp), rebuild this crate (its dependencies stay).
real=$(realpath "$src")
if [ "$(cat "$stamp" 2>/dev/null)" != "$real" ] || [ "$built" -nt "$stamp" ]; then
    "$cargo" clean --quiet --release -p qemu-netfilter-stats \
        --manifest-path "$src/Cargo.toml" --target-dir "$target"
fi
# QEMU uses the committed header, so cbindgen (feature "header") is not built.
"$cargo" rustc --quiet --locked --release --lib --crate-type staticlib \
    --no-default-features --manifest-path "$src/Cargo.toml" --target-dir "$target"
echo "$real" >"$stamp"
if ! cmp -s "$built" "$output"; then
    cp "$built" "$output.tmp"
    mv "$output.tmp" "$output"
fi
