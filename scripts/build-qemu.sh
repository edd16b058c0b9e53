#!/usr/bin/env bash
# Build QEMU 10.2.2 with this repository's glue patches (qemu-glue/, after
# its cover letter)
# and the Rust library as a meson subproject.
#
#   scripts/build-qemu.sh            minimal (microvm, virtio-net) -> build/qemu/
#   scripts/build-qemu.sh --full     default devices, slirp, qtests, built with
#                                    ASan and UBSan (the tests' build) -> build/qemu-full/
#   scripts/build-qemu.sh --stock    minimal, *no* patches (benchmark baseline)
#                                    -> build/qemu-stock/
#   scripts/build-qemu.sh --rust     minimal, configured --enable-rust: QEMU's
#                                    own Rust (its HPET) and this library in
#                                    one binary -> build/qemu-rust/
#   QNS_GLUE_UPTO=NNNN scripts/build-qemu.sh
#                                    patches up to NNNN only (a "before" build)
#
# The QEMU source comes from QEMU_SRC (an unpacked 10.2.2 tree; it is copied,
# never modified) or from the verified tarball (scripts/fetch-qemu.sh).
#
# The patched tree and its build live in a cache outside the clone
# ($QNS_CACHE, default ~/.cache/qemu-netfilter-stats), keyed on what shapes
# the configured tree: the source, the mode, the configure options and
# TREE_FORMAT below. The build/qemu* entries of the repository are symlinks
# to it. Nothing depends on the cache being there: a miss builds from
# scratch. Rebuilds are incremental: when the glue patches change, the old
# ones are reversed and the new ones applied, so ninja recompiles only the
# files they touch; cargo runs on every build and decides itself whether the
# Rust library changed.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
mode=minimal
case "${1:-}" in
    "") ;;
    --full) mode=full ;;
    --stock) mode=stock ;;
    --rust) mode=rust ;;
    *) echo "usage: $0 [--full|--stock|--rust]" >&2; exit 2 ;;
esac

"$repo/scripts/deps.sh"
# shellcheck source=scripts/qemu-tree.sh
. "$repo/scripts/qemu-tree.sh"

CACHE="${QNS_CACHE:-$HOME/.cache/qemu-netfilter-stats}"
mkdir -p "$CACHE"

qemu_source
qemu_configure_args $mode
configure_args=("${qemu_args[@]}")
ninja_targets=(qemu-system-x86_64)
patches=()
case $mode in
    full)
        ninja_targets+=(tests/qtest/test-filter-redirector
            tests/qtest/test-filter-mirror tests/qtest/test-netfilter
            tests/qtest/qos-test tests/qtest/e1000-filter-hold-test
            tests/qtest/netfilter-stats-test tests/qtest/migration-test) ;;
esac
if [ $mode != stock ]; then
    qemu_glue_patches
    for p in "${qemu_glue[@]}"; do
        # QNS_GLUE_UPTO=NNNN stops after patch NNNN: the "before" build of a
        # before/after benchmark (BENCHMARKS.md); the next build without it
        # brings the whole series back.
        n=$(basename "$p")
        [ -n "${QNS_GLUE_UPTO:-}" ] && ((10#${n%%-*} > 10#$QNS_GLUE_UPTO)) && continue
        patches+=("$p")
    done
fi

# Bump when this script changes how it prepares or configures the tree.
TREE_FORMAT=2
key=$(echo "$TREE_FORMAT $qemu_source_id $mode ${configure_args[*]}" | sha256sum | cut -c1-16)
tree="$CACHE/qemu-$mode-$key"

exec 9>"$tree.lock"
flock 9

if [ ! -f "$tree/.prepared" ]; then
    echo "build-qemu: preparing $tree" >&2
    rm -rf "$tree"
    qemu_prepare_tree "$tree" $mode
    mkdir -p "$tree/.qns-applied"
    touch "$tree/.prepared"
fi
qemu_tree_config "$tree" $mode

# Bring the tree's glue patches up to date with qemu-glue/.
applied="$tree/.qns-applied"
wanted=$(mktemp -d)
trap 'rm -rf "$wanted"' EXIT
[ ${#patches[@]} -eq 0 ] || cp "${patches[@]}" "$wanted/"
if ! diff -rq "$applied" "$wanted" >/dev/null; then
    echo "build-qemu: updating the glue patches in $tree" >&2
    # the applied patches, last first
    mapfile -t reverse < <(printf '%s\n' "$applied"/*.patch | sort -r)
    for p in "${reverse[@]}"; do
        [ -e "$p" ] || continue
        patch -d "$tree" -p1 -R -s --no-backup-if-mismatch <"$p" || {
            echo "build-qemu: cannot reverse ${p##*/}; remove $tree and run again" >&2
            exit 1
        }
        rm "$p"
    done
    for p in "$wanted"/*.patch; do
        [ -e "$p" ] || continue
        patch -d "$tree" -p1 -s --no-backup-if-mismatch <"$p"
        cp "$p" "$applied/"
    done
fi

if [ $mode != stock ]; then
    # Point the subproject at this checkout (it may be a new clone each time).
    ln -sfn "$repo" "$tree/subprojects/qemu-netfilter-stats"
fi

if [ ! -f "$tree/build/build.ninja" ]; then
    mkdir -p "$tree/build"
    (cd "$tree/build" && ../configure "${configure_args[@]}" >configure.log 2>&1) || {
        tail -30 "$tree/build/configure.log" >&2
        exit 1
    }
fi
ninja -C "$tree/build" "${ninja_targets[@]}" >"$tree/build/ninja.log" 2>&1 || {
    # FAILED lines list every output of a step: keep them short.
    grep -E -A12 "^FAILED|error" "$tree/build/ninja.log" | cut -c1-300 | head -60 >&2
    echo "build-qemu: build failed; full log: $tree/build/ninja.log" >&2
    exit 1
}

# The option ROMs that -kernel needs (linuxboot_dma.bin, pvh.bin, ...) are
# built by make, not ninja; put them where a QEMU run from its build tree
# looks for data files.
make -C "$tree/build/pc-bios/optionrom" -s >>"$tree/build/ninja.log" 2>&1 || {
    tail -20 "$tree/build/ninja.log" >&2
    echo "build-qemu: the option ROMs did not build (is gcc-multilib installed?)" >&2
    exit 1
}
for rom in "$tree"/build/pc-bios/optionrom/*.bin; do
    ln -sfn "$rom" "$tree/build/qemu-bundle/usr/local/share/qemu/"
done

mkdir -p "$repo/build"
case $mode in
    minimal) link=qemu ;; full) link=qemu-full ;; stock) link=qemu-stock ;;
    rust) link=qemu-rust ;;
esac
ln -sfn "$tree/build" "$repo/build/$link"
echo "build-qemu: $repo/build/$link/qemu-system-x86_64" >&2
