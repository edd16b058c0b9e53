#!/usr/bin/env bash
# Build QEMU 10.2.2 with this repository's glue patches (qemu-glue/*.patch)
# and the Rust library as a meson subproject.
#
#   scripts/build-qemu.sh            minimal (microvm, virtio-net) -> build/qemu/
#   scripts/build-qemu.sh --full     default devices, slirp, qtests -> build/qemu-full/
#   scripts/build-qemu.sh --stock    minimal, *no* patches (benchmark baseline)
#                                    -> build/qemu-stock/
#
# The QEMU source comes from QEMU_SRC (an unpacked 10.2.2 tree; it is copied,
# never modified) or from the verified tarball (scripts/fetch-qemu.sh).
#
# The patched tree and its build live in a cache outside the clone
# ($QNS_CACHE, default ~/.cache/qemu-netfilter-stats), keyed on everything
# that shapes them: the source, the patches, this script and the mode. The
# build/qemu* entries of the repository are symlinks to it. Nothing depends on
# the cache being there: a miss builds from scratch. A change to the Rust code
# keeps the key, so ninja rebuilds incrementally (cargo runs on every build and
# decides itself whether the library changed).
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

configure_args=(--target-list=x86_64-softmmu --without-default-features
    --disable-tcg --enable-kvm --disable-docs --disable-werror
    --disable-download --disable-install-blobs)
ninja_targets=(qemu-system-x86_64)
patches=()
case $mode in
    minimal | stock)
        configure_args+=(--without-default-devices --with-devices-x86_64=microvm) ;;
    full)
        configure_args+=(--enable-slirp)
        ninja_targets+=(tests/qtest/test-filter-redirector
            tests/qtest/test-filter-mirror tests/qtest/test-netfilter) ;;
esac
if [ $mode != stock ]; then
    patches=("$repo"/qemu-glue/*.patch)
fi

key=$( {
    echo "$source_id $mode ${configure_args[*]}"
    cat "$0"
    [ ${#patches[@]} -eq 0 ] || cat "${patches[@]}"
} | sha256sum | cut -c1-16)
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
    for p in "${patches[@]}"; do
        patch -d "$tree" -p1 -s --no-backup-if-mismatch <"$p"
    done
    touch "$tree/.prepared"
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
    grep -B5 -A20 -m3 "FAILED\|error:" "$tree/build/ninja.log" >&2 || tail -40 "$tree/build/ninja.log" >&2
    exit 1
}

mkdir -p "$repo/build"
case $mode in
    minimal) link=qemu ;; full) link=qemu-full ;; stock) link=qemu-stock ;;
esac
ln -sfn "$tree/build" "$repo/build/$link"
echo "build-qemu: $repo/build/$link/qemu-system-x86_64" >&2
