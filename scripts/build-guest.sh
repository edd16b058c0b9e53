#!/usr/bin/env bash
# Build the test guest and print the directory that holds it (vmlinuz and
# initrd.gz): the kernel of Debian's linux-image-amd64, unpacked, not
# installed; an initramfs of busybox-static, the NIC drivers (virtio-mmio,
# virtio-pci, virtio-net, e1000) and tests/guest/qns-guest.c built static.
# Everything comes from Debian's archive (apt-get download).
#
# The guest is cached in $QNS_CACHE (default ~/.cache/qemu-netfilter-stats),
# keyed on the package versions and on this script, the init and the
# traffic program; a miss builds it again (about 15 s).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
CACHE="${QNS_CACHE:-$HOME/.cache/qemu-netfilter-stats}"
mkdir -p "$CACHE"

# The NIC drivers; what they depend on comes along, loaded first.
MODULES=(virtio_mmio virtio_pci virtio_net e1000)

"$repo/scripts/deps.sh"

candidate() {
    apt-cache policy "$1" | awk '/Candidate:/ {print $2}'
}
meta=$(candidate linux-image-amd64)
if [ -z "$meta" ] || [ "$meta" = "(none)" ]; then
    # a machine whose package lists were never fetched
    [ "$(id -u)" = 0 ] || { echo "build-guest: run as root: apt-get update" >&2; exit 1; }
    apt-get update -qq
fi
kernel_pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kernel_pkg" ] || { echo "build-guest: no kernel package behind linux-image-amd64" >&2; exit 1; }
versions="$kernel_pkg=$(candidate "$kernel_pkg") busybox-static=$(candidate busybox-static)"
key=$( (echo "$versions ${MODULES[*]}"
    cat "$0" "$repo/tests/guest/init" "$repo/tests/guest/qns-guest.c") | sha256sum | cut -c1-16)
out="$CACHE/guest-$key"
if [ -f "$out/initrd.gz" ]; then
    echo "$out"
    exit 0
fi

exec 9>"$out.lock"
flock 9
[ -f "$out/initrd.gz" ] && { echo "$out"; exit 0; }
echo "build-guest: building $out ($versions)" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -qq "$kernel_pkg" busybox-static 2>/dev/null)
dpkg-deb -x "$work/$kernel_pkg"_*.deb "$work/kernel"
dpkg-deb -x "$work"/busybox-static_*.deb "$work/busybox"
kver=$(ls "$work/kernel/lib/modules")

root=$work/root
mkdir -p "$root"/{bin,dev,etc,proc,sys,tmp,lib/modules}
cp "$work/busybox/bin/busybox" "$root/bin/busybox"
# Copy module $1 after the modules it depends on (its modinfo's depends=),
# appending each to the init's load order.
add_module() {
    local m=$1 f d
    grep -qx "$m" "$root/etc/qns-modules" && return
    f=$(find "$work/kernel/lib/modules/$kver" -name "$m.ko" | head -1)
    [ -n "$f" ] || { echo "build-guest: $kver has no $m.ko" >&2; exit 1; }
    for d in $(grep -a -o -m1 'depends=[a-z0-9_,-]*' "$f" | cut -d= -f2 | tr , ' '); do
        add_module "${d//-/_}"
    done
    cp "$f" "$root/lib/modules/"
    echo "$m" >>"$root/etc/qns-modules"
}
: >"$root/etc/qns-modules"
for m in "${MODULES[@]}"; do
    add_module "$m"
done
install -m 755 "$repo/tests/guest/init" "$root/init"
gcc -static -O2 -Wall -Werror -o "$root/bin/qns-guest" "$repo/tests/guest/qns-guest.c"

mkdir -p "$out.tmp"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$out.tmp/initrd.gz"
cp "$work/kernel/boot/vmlinuz-$kver" "$out.tmp/vmlinuz"
echo "$versions" >"$out.tmp/VERSIONS"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
