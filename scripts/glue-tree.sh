#!/usr/bin/env bash
# For editing the glue: make DIR a git tree of QEMU 10.2.2 with the
# qemu-glue/ patches applied as commits. Edit there (commit --fixup, rebase),
# then export the series back with:
#   git -C DIR -c core.abbrev=8 format-patch --zero-commit -o "$PWD/qemu-glue" base
#   (after rm qemu-glue/*; fixed ids and abbreviations keep diffs of the patches small)
#   perl DIR/scripts/checkpatch.pl qemu-glue/*.patch
#
#   scripts/glue-tree.sh DIR
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:?usage: $0 DIR}
[ ! -e "$dir" ] || { echo "$dir exists" >&2; exit 1; }
tarball=$("$repo/scripts/fetch-qemu.sh")
mkdir -p "$dir"
tar -xf "$tarball" -C "$dir" --strip-components=1
cd "$dir"
git init -q
git add -A
git -c user.name=base -c user.email=base@localhost commit -qm "QEMU 10.2.2 (+ds)"
git tag base
git am -q "$repo"/qemu-glue/*.patch
git log --oneline base..HEAD
