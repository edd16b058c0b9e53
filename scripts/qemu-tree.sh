# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables it sets are its callers'
# The one preparation of a QEMU 10.2.2 tree and its configuration, shared
# by scripts/build-qemu.sh (the builds the tests and benchmarks run) and
# scripts/glue-tree.sh (the tree the glue is edited in and checked patch by
# patch), so that the per-patch check builds what build-qemu.sh builds.
# Sourced, not run, with $repo set to the repository.

# The source the trees come from: QEMU_SRC (an unpacked 10.2.2 tree, copied,
# never modified) or the verified tarball (scripts/fetch-qemu.sh). Sets
# qemu_source_id, which names it in the trees' cache keys.
qemu_source() {
    if [ -n "${QEMU_SRC:-}" ]; then
        [ -f "$QEMU_SRC/VERSION" ] || { echo "QEMU_SRC=$QEMU_SRC is not a QEMU tree" >&2; return 1; }
        qemu_source_id="tree:$(cd "$QEMU_SRC" && pwd):$(cat "$QEMU_SRC/VERSION")"
    else
        qemu_tarball=$("${repo:?}/scripts/fetch-qemu.sh")
        qemu_source_id="tarball:$(basename "$qemu_tarball")"
    fi
}

# Unpack the source (qemu_source first) into the empty directory $1 and
# prepare it for these builds (of mode $2, minimal by default).
qemu_prepare_tree() {
    local tree=$1 mode=${2:-minimal}
    mkdir -p "$tree"
    if [ -n "${QEMU_SRC:-}" ]; then
        cp -a "$QEMU_SRC/." "$tree/"
    else
        tar -xf "$qemu_tarball" -C "$tree" --strip-components=1
    fi
    # The +ds tarball has no edk2 blobs to unpack (Debian's own fix).
    sed -i 's/^if unpack_edk2_blobs$/if unpack_edk2_blobs and false/' \
        "$tree/pc-bios/meson.build"
    qemu_tree_config "$tree" "$mode"
    [ "$mode" != rust ] || qemu_rust_subprojects "$tree"
}

# The devices of the minimal machine in tree $1 (for mode $2): microvm with
# virtio-net, and e1000, which the glue changes, so that every patch of it
# is compiled; with --enable-rust (mode rust) the HPET too, which is QEMU's
# Rust HPET then, so that QEMU's own Rust code is in the binary with this
# library. Written only when it changed (meson then reconfigures), so that
# a tree prepared before takes it too.
qemu_tree_config() {
    local mak=$1/configs/devices/x86_64-softmmu/microvm.mak want
    want=$(printf '%s\n' CONFIG_PCI_DEVICES=n CONFIG_MICROVM=y CONFIG_VIRTIO_NET=y \
        CONFIG_E1000_PCI=y)
    [ "${2:-minimal}" != rust ] || want+=$'\nCONFIG_HPET=y'
    [ "$(cat "$mak" 2>/dev/null)" = "$want" ] || echo "$want" >"$mak"
}

# What configure --enable-rust needs in tree $1 that meson cannot download
# here: the crates QEMU's Rust code uses (the subprojects/*-rs.wrap files),
# fetched by cargo at their exact versions into subprojects/packagecache/
# under each wrap's source_filename (checked against its source_hash), and
# their meson overlays, which the +ds tarball lacks: the files of QEMU's
# subprojects/packagefiles/, kept in qemu-rust/ (qemu-rust/SOURCE says
# where each was read).
qemu_rust_subprojects() {
    local tree=$1 fetch=$1/.qns-crates w url crates=() i name version file hash
    mkdir -p "$tree/subprojects/packagefiles" "$tree/subprojects/packagecache" "$fetch/src"
    cp -a "${repo:?}"/qemu-rust/packagefiles/*-rs "$tree/subprojects/packagefiles/"
    # each wrap as NAME VERSION SOURCE_FILENAME SOURCE_HASH; its source_url
    # is https://crates.io/api/v1/crates/NAME/VERSION/download
    for w in "$tree"/subprojects/*-rs.wrap; do
        url=$(sed -n 's/^source_url = //p' "$w")
        file=$(sed -n 's/^source_filename = //p' "$w")
        hash=$(sed -n 's/^source_hash = //p' "$w")
        crates+=("$(echo "$url" | cut -d/ -f7) $(echo "$url" | cut -d/ -f8) $file $hash")
    done
    : >"$fetch/src/lib.rs"
    {
        printf '[package]\nname = "qemu-crates"\nversion = "0.0.0"\nedition = "2021"\n'
        printf 'publish = false\n\n[dependencies]\n'
        for i in "${crates[@]}"; do
            read -r name version file hash <<<"$i"
            echo "$name = \"=$version\""
        done
    } >"$fetch/Cargo.toml"
    (cd "$fetch" && cargo fetch --quiet)
    for i in "${crates[@]}"; do
        read -r name version file hash <<<"$i"
        cp "$(find "${CARGO_HOME:-$HOME/.cargo}/registry/cache" -name "$name-$version.crate" |
            head -1)" "$tree/subprojects/packagecache/$file"
        echo "$hash  $tree/subprojects/packagecache/$file" | sha256sum --check --quiet
    done
}

# The configure arguments of build mode $1 (minimal, full, stock, rust) in
# the array qemu_args.
qemu_configure_args() {
    # --without-default-features turns colo_proxy off: colo-compare and
    # filter-rewriter need it back. TCG boots the test guest where /dev/kvm
    # is missing or cannot run a Linux guest (PVM), and gives filter-replay.
    qemu_args=(--target-list=x86_64-softmmu --without-default-features
        --enable-tcg --enable-kvm --enable-colo-proxy --disable-docs
        --disable-werror --disable-download --disable-install-blobs)
    case $1 in
        minimal | stock | rust)
            qemu_args+=(--without-default-devices --with-devices-x86_64=microvm)
            # rust: QEMU's own Rust code linked beside this library (the
            # subproject uses the rustc QEMU found)
            [ "$1" != rust ] || qemu_args+=(--enable-rust) ;;
        full)
            # replication: the block side of a COLO pair. AddressSanitizer
            # and UndefinedBehaviorSanitizer: the tests that run this build
            # see every invalid access, leak-free or not, at the access.
            qemu_args+=(--enable-slirp --enable-replication --enable-asan --enable-ubsan) ;;
        *) echo "qemu_configure_args: unknown mode $1" >&2; return 1 ;;
    esac
}

# The glue series in order, without its cover letter (0000), in the array
# qemu_glue.
qemu_glue_patches() {
    local p
    qemu_glue=()
    for p in "${repo:?}"/qemu-glue/*.patch; do
        [[ $p == */0000-cover-letter.patch ]] || qemu_glue+=("$p")
    done
}
