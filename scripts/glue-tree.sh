#!/usr/bin/env bash
# A git tree of QEMU 10.2.2 with the qemu-glue/ patches applied as commits.
#
#   scripts/glue-tree.sh DIR     make DIR such a tree, for editing the glue
#   scripts/glue-tree.sh --check build and smoke-test the tree at every patch
#
# Editing: commit --fixup and rebase in DIR, then export the series back with
#   rm qemu-glue/*.patch
#   git -C DIR config branch.master.description "$(cat qemu-glue/cover-letter.txt)"
#   git -C DIR -c core.abbrev=8 format-patch --zero-commit --cover-letter \
#       --cover-from-description=subject -o "$PWD/qemu-glue" base
#   perl DIR/scripts/checkpatch.pl qemu-glue/0*.patch
# (fixed ids and abbreviations keep diffs of the patches small; the cover
# letter, 0000, is qemu-glue/cover-letter.txt: its first paragraph is the
# subject, then the shortlog and diffstat of the series).
#
# --check (run by scripts/test.sh) replays the series with `git rebase -x`
# in a cached tree ($QNS_CACHE, as scripts/build-qemu.sh) and, after each
# patch: checkpatch.pl on it, an incremental build of the minimal QEMU
# that scripts/build-qemu.sh builds (the same tree preparation and
# configuration: scripts/qemu-tree.sh), and scripts/glue-patch-smoke.py on
# the result. A patch that passed with the same series up to it and the
# same library is not checked again.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
CACHE="${QNS_CACHE:-$HOME/.cache/qemu-netfilter-stats}"
# shellcheck source=scripts/qemu-tree.sh
. "$repo/scripts/qemu-tree.sh"

# A fresh git tree at DIR of the source, prepared as build-qemu.sh
# prepares its trees, tagged base.
new_tree() {
    local dir=$1
    qemu_prepare_tree "$dir"
    (cd "$dir" && git init -q && git add -A &&
        git -c user.name=base -c user.email=base@localhost \
            commit -qm "QEMU 10.2.2 (+ds), prepared for these builds" &&
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
    local TREE_FORMAT=2 args key tree
    qemu_source
    qemu_configure_args minimal
    args=("${qemu_args[@]}")
    key=$(echo "$TREE_FORMAT $qemu_source_id ${args[*]}" | sha256sum | cut -c1-16)
    tree="$CACHE/glue-check-$key"
    mkdir -p "$CACHE"
    exec 9>"$tree.lock"
    flock 9
    if [ ! -f "$tree/.prepared" ]; then
        echo "glue-tree: preparing $tree" >&2
        rm -rf "$tree"
        new_tree "$tree"
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
    qemu_glue_patches
    git -c user.name=check -c user.email=check@localhost am -q "${qemu_glue[@]}"
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
        qemu_source
        new_tree "$dir"
        cd "$dir"
        qemu_glue_patches
        git am -q "${qemu_glue[@]}"
        git log --oneline base..HEAD
        ;;
esac
