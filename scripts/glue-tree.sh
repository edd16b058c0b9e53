#!/usr/bin/env bash
# A git tree of QEMU 10.2.2 with the qemu-glue/ patches applied as commits.
#
#   scripts/glue-tree.sh DIR     make DIR such a tree, for editing the glue
#   scripts/glue-tree.sh --check build and smoke-test the tree at every patch
#
# Editing: commit --fixup and rebase in DIR, then export the series back with
#   git -C DIR -c core.abbrev=8 format-patch --zero-commit -o "$PWD/qemu-glue" base
#   (after rm qemu-glue/*; fixed ids and abbreviations keep diffs of the patches small)
#   perl DIR/scripts/checkpatch.pl qemu-glue/*.patch
#
# --check (run by scripts/test.sh) replays the series with `git rebase -x`
# in a cached tree ($QNS_CACHE, as scripts/build-qemu.sh) and, after each
# patch: checkpatch.pl on it, an incremental build of the minimal QEMU
# (microvm with virtio-net, plus e1000 so that its patch compiles), and
# scripts/glue-patch-smoke.py on the result. A patch that passed with the
# same series up to it and the same library is not checked again.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
CACHE="${QNS_CACHE:-$HOME/.cache/qemu-netfilter-stats}"

# A fresh git tree of the unpacked tarball at DIR, tagged base.
new_tree() {
    local dir=$1 tarball
    tarball=$("$repo/scripts/fetch-qemu.sh")
    mkdir -p "$dir"
    tar -xf "$tarball" -C "$dir" --strip-components=1
    (cd "$dir" && git init -q && git add -A &&
        git -c user.name=base -c user.email=base@localhost commit -qm "QEMU 10.2.2 (+ds)" &&
        git tag base)
}

# After each commit of the rebase: check it, unless it passed before.
check_commit() {
    local tree=$1 n key log
    cd "$tree"
    n=$(git rev-list --count base..HEAD)
    key=$( (git diff base HEAD; cat "$tree/.library-id") | sha256sum | cut -c1-16)
    if [ -e ".checked/$key" ]; then
        echo "patch $n: passed before"
        return 0
    fi
    log="$tree/build/check-$n.log"
    git format-patch -1 --stdout HEAD | perl scripts/checkpatch.pl -q --no-signoff - || {
        echo "patch $n: checkpatch.pl failed: $(git log -1 --format=%s)" >&2
        return 1
    }
    ninja -C build qemu-system-x86_64 >"$log" 2>&1 || {
        grep -E -A12 "^FAILED|error" "$log" | cut -c1-300 | head -40 >&2
        echo "patch $n: the tree does not build: $(git log -1 --format=%s)" >&2
        return 1
    }
    python3 "$repo/scripts/glue-patch-smoke.py" build/qemu-system-x86_64 >>"$log" 2>&1 || {
        tail -20 "$log" >&2
        echo "patch $n: smoke test failed: $(git log -1 --format=%s)" >&2
        return 1
    }
    mkdir -p .checked
    touch ".checked/$key"
    echo "patch $n: ok ($(tail -1 "$log")): $(git log -1 --format=%s)"
}

check() {
    # Bump when this changes how the tree is prepared or configured.
    local TREE_FORMAT=1 args tarball key tree
    args=(--target-list=x86_64-softmmu --without-default-features --disable-tcg
        --enable-kvm --enable-colo-proxy --disable-docs --disable-werror
        --disable-download --disable-install-blobs --without-default-devices
        --with-devices-x86_64=microvm)
    tarball=$("$repo/scripts/fetch-qemu.sh")
    key=$(echo "$TREE_FORMAT $(basename "$tarball") ${args[*]}" | sha256sum | cut -c1-16)
    tree="$CACHE/glue-check-$key"
    mkdir -p "$CACHE"
    exec 9>"$tree.lock"
    flock 9
    if [ ! -f "$tree/.prepared" ]; then
        echo "glue-tree: preparing $tree" >&2
        rm -rf "$tree"
        new_tree "$tree"
        # As build-qemu.sh prepares its trees, committed into base so that
        # the rebase sees a clean tree.
        sed -i 's/^if unpack_edk2_blobs$/if unpack_edk2_blobs and false/' \
            "$tree/pc-bios/meson.build"
        printf '%s\n' CONFIG_PCI_DEVICES=n CONFIG_MICROVM=y CONFIG_VIRTIO_NET=y \
            CONFIG_E1000_PCI=y >"$tree/configs/devices/x86_64-softmmu/microvm.mak"
        (cd "$tree" && git add -A && git -c user.name=base -c user.email=base@localhost \
            commit -qm "build preparation" && git tag -f base)
        touch "$tree/.prepared"
    fi
    ln -sfn "$repo" "$tree/subprojects/qemu-netfilter-stats"
    # What the patches are built against: the library's sources.
    (cd "$repo" && git ls-files -z src include |
        xargs -0 cat Cargo.toml Cargo.lock meson.build meson.options build.rs \
            scripts/cargo-staticlib.sh scripts/glue-patch-smoke.py tests/e2e/qemu.py) |
        sha256sum >"$tree/.library-id"
    cd "$tree"
    # a check that failed (or was killed) leaves its rebase behind
    git rebase --abort 2>/dev/null || true
    git am --abort 2>/dev/null || true
    git checkout -q -f base
    git checkout -q -B check
    git -c user.name=check -c user.email=check@localhost am -q "$repo"/qemu-glue/*.patch
    if [ ! -f build/build.ninja ]; then
        mkdir -p build
        (cd build && ../configure "${args[@]}" >configure.log 2>&1) || {
            tail -30 build/configure.log >&2
            exit 1
        }
    fi
    git -c user.name=check -c user.email=check@localhost rebase -q \
        -x "'$repo/scripts/glue-tree.sh' --check-commit '$tree'" base
}

case "${1:?usage: $0 DIR | --check}" in
    --check) check ;;
    --check-commit) check_commit "$2" ;;
    *)
        dir=$1
        [ ! -e "$dir" ] || { echo "$dir exists" >&2; exit 1; }
        new_tree "$dir"
        cd "$dir"
        git am -q "$repo"/qemu-glue/*.patch
        git log --oneline base..HEAD
        ;;
esac
