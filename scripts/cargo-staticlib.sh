#!/usr/bin/env bash
# Called by meson.build: build the static library with cargo and install it
# at OUTPUT only when it changed, so that QEMU relinks only then.
#   cargo-staticlib.sh [--rustc RUSTC] [--target TRIPLE] CARGO SOURCE_DIR TARGET_DIR OUTPUT
# --rustc: the rustc cargo runs (as RUSTC); --target: the Rust target triple
# to build for (cargo --target; the archive is then in TARGET_DIR/TRIPLE/).
set -euo pipefail
rustc="" triple=""
while [ $# -gt 4 ]; do
    case $1 in
        --rustc) rustc=$2; shift 2 ;;
        --target) triple=$2; shift 2 ;;
        *) echo "cargo-staticlib.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ $# -eq 4 ] || { echo "usage: cargo-staticlib.sh [--rustc RUSTC] [--target TRIPLE] CARGO SOURCE_DIR TARGET_DIR OUTPUT" >&2; exit 2; }
cargo=$1 src=$2 target=$3 output=$4
target_args=()
built="$target/release/libqemu_netfilter_stats.a"
if [ -n "$triple" ]; then
    target_args=(--target "$triple")
    built="$target/$triple/release/libqemu_netfilter_stats.a"
fi
[ -z "$rustc" ] || export RUSTC="$rustc"
stamp="$target/.checkout"
# SOURCE_DIR is QEMU's subprojects/ symlink, which build-qemu.sh points at
# whichever checkout builds. cargo judges freshness by mtimes, so another
# checkout's older files would look up to date against its build: when the
# last build was not this checkout's (another path, or an archive newer
# than this script's stamp), rebuild this crate (its dependencies stay).
real=$(realpath "$src")
# cargo runs in SOURCE_DIR, so that it reads the crate's .cargo/config.toml
# (where `cargo vendor` says to put its source replacement), then CARGO_HOME's.
if [ "$(cat "$stamp" 2>/dev/null)" != "$real" ] || [ "$built" -nt "$stamp" ]; then
    (cd "$src" && "$cargo" clean --quiet --release -p qemu-netfilter-stats \
        ${target_args[@]+"${target_args[@]}"} \
        --manifest-path "$src/Cargo.toml" --target-dir "$target")
fi
# QEMU uses the committed header, so cbindgen (feature "header") is not built.
(cd "$src" && "$cargo" rustc --quiet --locked --release --lib --crate-type staticlib \
    ${target_args[@]+"${target_args[@]}"} \
    --no-default-features --manifest-path "$src/Cargo.toml" --target-dir "$target")
echo "$real" >"$stamp"
if ! cmp -s "$built" "$output"; then
    cp "$built" "$output.tmp"
    mv "$output.tmp" "$output"
fi
