#!/usr/bin/env bash
# Fetch the QEMU 10.2.2 source (Debian's +ds tarball, which is the upstream
# release minus prebuilt firmware), verify it against the pinned sha256 and
# print the path of the verified tarball.
#
# The tarball is kept in $QNS_CACHE (default ~/.cache/qemu-netfilter-stats) so
# that later builds need no network. The deb-src entry is derived from the
# machine's own apt sources, so no mirror host is written into this project.
set -euo pipefail

QEMU_DEB_VERSION="1:10.2.2+ds-1"
QEMU_TARBALL="qemu_10.2.2+ds.orig.tar.xz"
QEMU_SHA256="be05230fe47a6937cd29f28f562932c8125f9c93c2a82c625198f7a4aa601dfb"
CACHE="${QNS_CACHE:-$HOME/.cache/qemu-netfilter-stats}"

mkdir -p "$CACHE"
tarball="$CACHE/$QEMU_TARBALL"

verify() {
    echo "$QEMU_SHA256  $1" | sha256sum --check --status
}

if [ -f "$tarball" ] && verify "$tarball"; then
    echo "$tarball"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "fetch-qemu: the QEMU source is not cached yet and fetching it needs root" >&2
    echo "  (a sid deb-src entry and apt-get update). Run as root:" >&2
    echo "    sudo $0" >&2
    echo "  or point QEMU_SRC at an unpacked QEMU 10.2.2 tree." >&2
    exit 1
fi

src_list=/etc/apt/sources.list.d/qemu-netfilter-stats-sid-src.sources
if [ ! -f "$src_list" ]; then
    # Copy the first stanza of the machine's own Debian source list and turn
    # it into a sid deb-src entry.
    awk 'BEGIN{RS=""; ORS="\n\n"} NR==1' /etc/apt/sources.list.d/debian.sources |
        sed -e 's/^Types:.*/Types: deb-src/' -e 's/^Suites:.*/Suites: sid/' \
            -e '/^#/d' >"$src_list"
    # Keep sid's binary packages out of this machine's upgrades.
    apt-get update -qq >&2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get source --download-only -qq "qemu=$QEMU_DEB_VERSION" >&2)
if ! verify "$work/$QEMU_TARBALL"; then
    echo "fetch-qemu: $QEMU_TARBALL does not match the pinned sha256" >&2
    exit 1
fi
mv "$work/$QEMU_TARBALL" "$tarball"
# Debian's packaging holds the fix for the missing edk2 blobs; keep it too.
mv "$work"/qemu_*.debian.tar.xz "$CACHE/" 2>/dev/null || true
echo "$tarball"
