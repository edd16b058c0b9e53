#!/usr/bin/env bash
# Install what building the patched QEMU and running the tests needs:
# Debian packages (apt-get) and the Python build tools QEMU's configure wants
# offline (pip). Idempotent: installs only what is missing. Not root: prints
# the exact commands and stops.
set -euo pipefail

DEBIAN_PACKAGES=(
    # QEMU's build
    build-essential libglib2.0-dev ninja-build pkg-config libfdt-dev
    device-tree-compiler libslirp-dev flex bison python3-venv
    # the x86 option ROMs (linuxboot_dma.bin for -kernel) are built -m16
    gcc-multilib
    # firmware the +ds tarball lacks (passed to QEMU with -L)
    seabios ipxe-qemu
    # bindgen (layout test of the generated header) needs libclang
    libclang-dev clang
    # the C ABI test runs under valgrind; patches are checked with perl
    valgrind perl
    # the test guest's initramfs (scripts/build-guest.sh); tap devices
    cpio iproute2
    # the live view's Prometheus file: checked with promtool, scraped by
    # node_exporter's textfile collector in the tests
    prometheus prometheus-node-exporter
    # the shell scripts' lint
    shellcheck
    # QEMU's own Rust (build-qemu.sh --rust) generates its bindings with it
    bindgen
)

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing+=("$p")
done

pip_missing=()
python3 -c 'import mesonbuild, sys
from mesonbuild import coredata
v = tuple(int(x) for x in coredata.version.split(".")[:2])
sys.exit(0 if v >= (1, 5) else 1)' 2>/dev/null || pip_missing+=("meson>=1.5,<2")
python3 -c 'import pycotap' 2>/dev/null || pip_missing+=("pycotap==1.3.1")
# the end-to-end tests
python3 -c 'import pytest' 2>/dev/null || pip_missing+=("pytest>=7")
python3 -c 'import pytest_timeout' 2>/dev/null || pip_missing+=("pytest-timeout>=2")
# the Python's lint (ruff.toml)
command -v ruff >/dev/null || pip_missing+=("ruff>=0.6")
# the live view (run from here: tests/e2e/qemu.py would shadow the package)
(cd / && python3 -c 'import qemu.qmp') 2>/dev/null || pip_missing+=("qemu.qmp==0.0.6")

if [ ${#missing[@]} -eq 0 ] && [ ${#pip_missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "deps: missing packages. Run as root, then try again:" >&2
    [ ${#missing[@]} -eq 0 ] ||
        echo "    sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    [ ${#pip_missing[@]} -eq 0 ] ||
        echo "    python3 -m pip install$(printf " '%s'" "${pip_missing[@]}")" >&2
    exit 1
fi

if [ ${#missing[@]} -ne 0 ]; then
    echo "deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ${#pip_missing[@]} -ne 0 ]; then
    echo "deps: pip installing ${pip_missing[*]}" >&2
    python3 -m pip install -q "${pip_missing[@]}"
fi
