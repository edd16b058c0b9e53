#!/usr/bin/env bash
# Build QEMU 10.2.2 with this repository's glue patches (qemu-glue/*.patch)
# and the Rust library as a meson subproject.
#
#   scripts/build-qemu.sh            minimal (microvm, virtio-net) -> build/qemu/
#   scripts/build-qemu.sh --full     default devices, slirp, qtests, built with
#                                    ASan and UBSan (the tests' build) -> build/qemu-full/
#   scripts/build-qemu.sh --stock    minimal, *no* patches (benchmark baseline)
#                                    -> build/qemu-stock/
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
    *) echo "usage: $0 [--full|--stock]" >&2; exit 2 ;;
esac

"$repo/scripts/deps.sh"

CACHE="${QNS_CACHE:-$HOME/.cache/qemu-netfilter-stats}"
mkdir -p "$CACHE"

if [ -n "${QEMU_SRC:-}" ]; then
    [ -f "$QEMU_SRC/VERSION" ] || { echo "QEMU_SRC=$QEMU_SRC is not a QEMU tree" >&2; exit 1; }
    source_id="tree:$(cd "$QEMU_SRC" && pwd):$(cat "$QEMU_SRC/VERSION")"
else
    tarball=$("$repo/scripts/fetch-qemu.sh")
    source_id="tarball:$(basename "$tarball")"
fi

# --without-default-features turns colo_proxy off: colo-compare and
# filter-rewriter need it back. TCG boots the test guest where /dev/kvm is
# missing or cannot run a Linux guest (PVM), and gives filter-replay.
configure_args=(--target-list=x86_64-softmmu --without-default-features
    --enable-tcg --enable-kvm --enable-colo-proxy --disable-docs
    --disable-werror --disable-download --disable-install-blobs)
ninja_targets=(qemu-system-x86_64)
patches=()
case $mode in
    minimal | stock)
        configure_args+=(--without-default-devices --with-devices-x86_64=microvm) ;;
    full)
        # replication: the block side of a COLO pair. AddressSanitizer and
        # UndefinedBehaviorSanitizer: the tests that run this build see
        # every invalid access, leak-free or not, at the access.
        configure_args+=(--enable-slirp --enable-replication
            --enable-asan --enable-ubsan)
        ninja_targets+=(tests/qtest/test-filter-redirector
            tests/qtest/test-filter-mirror tests/qtest/test-netfilter
            tests/qtest/qos-test tests/qtest/e1000-filter-hold-test
            tests/qtest/netfilter-stats-test tests/qtest/migration-test) ;;
esac
if [ $mode != stock ]; then
    patches=()
    for p in "$repo"/qemu-glue/*.patch; do
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
key=$(echo "$TREE_FORMAT $source_id $mode ${configure_args[*]}" | sha256sum | cut -c1-16)
tree="$CACHE/qemu-$mode-$key"

exec 9>"$tree.lock"
flock 9

if [ ! -f "$tree/.prepared" ]; then
    echo "build-qemu: preparing $tree" >&2
    rm -rf "$tree"
    mkdir -p "$tree"
    if [ -n "${QEMU_SRC:-}" ]; then
        cp -a "$QEMU_SRC/." "$tree/"
    else
        tar -xf "$tarball" -C "$tree" --strip-components=1
    fi
    # The +ds tarball has no edk2 blobs to unpack (Debian's own fix).
    sed -i 's/^if unpack_edk2_blobs$/if unpack_edk2_blobs and false/' \
        "$tree/pc-bios/meson.build"
    printf '%s\n' CONFIG_PCI_DEVICES=n CONFIG_MICROVM=y CONFIG_VIRTIO_NET=y \
        >"$tree/configs/devices/x86_64-softmmu/microvm.mak"
    mkdir -p "$tree/.qns-applied"
    touch "$tree/.prepared"
fi

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
esac
ln -sfn "$tree/build" "$repo/build/$link"
echo "build-qemu: $repo/build/$link/qemu-system-x86_64" >&2
