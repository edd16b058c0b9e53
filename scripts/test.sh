#!/usr/bin/env bash
# Run every test: the README's test command, and what .ci/run calls.
#
#   1. Rust: cargo fmt --check, clippy and rustdoc (warnings are errors),
#      cargo test
#      (unit tests, header drift, bindgen layout check)
#   2. the C ABI from a C program under valgrind; miri on the FFI tests;
#      a minute of fuzzing the decoder against a reference model
#   3. every glue patch on its own (scripts/glue-tree.sh --check):
#      QEMU's checkpatch.pl, an incremental build, a smoke test; and the
#      minimal build configured --enable-rust, QEMU's own Rust code and
#      this library linked into one binary, smoke-tested
#   4. the patched QEMU (minimal build): end-to-end QMP/HMP tests, then the
#      same tests with QEMU under valgrind
#   5. the sanitizer build (default devices, ASan and UBSan): the
#      end-to-end tests again, QEMU's own filter and NIC qtests, the glue's
#      query-netfilter-stats qtest and its e1000 and virtio-net filter-hold
#      qtests (unplug included)
#   6. a real Linux guest on the sanitizer build (scripts/build-guest.sh;
#      KVM where it can boot Linux, TCG otherwise): its traffic through
#      every filter type on virtio-net (microvm), virtio-net-pci and e1000
#      (pc) and a tap netdev with the vnet header, a flood into a slow
#      redirector, a NIC reset while held, and a COLO chain of two QEMUs
#
# Every test that starts QEMU checks how it ended (tests/e2e/qemu.py):
# quit must end it with status 0, no sanitizer report, within its bound.
# Under CI=true nothing is skipped: a missing tool or capability fails.
# Installs what is missing (as root) or says what to install.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

"$repo/scripts/deps.sh"

passed=0
failed=0
failures=()
skipped=()
step() {
    local name=$1
    shift
    echo
    echo "=== $name"
    if "$@"; then
        passed=$((passed + 1))
        echo "=== $name: ok"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "=== $name: FAILED"
    fi
}

# The Python (ruff.toml) and the shell scripts (shellcheck; the guest's
# init is busybox's sh).
lint() {
    ruff check --quiet . &&
        shellcheck -S style scripts/*.sh .ci/run benches/decoder-counters/run.sh &&
        shellcheck -S warning -s dash tests/guest/init
}

rust_checks() {
    cargo fmt --check &&
        cargo clippy --quiet --all-targets -- -D warnings &&
        RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps &&
        cargo test
}

# Miri and cargo-fuzz need the nightly toolchain (and miri its component):
# installed with rustup when missing. Where that cannot be done, a
# developer's run says so loudly and goes on; under CI=true nothing is
# skipped, and the suite fails with the reason.
nightly() {
    local what=$1
    if ! cargo +nightly --version >/dev/null 2>&1; then
        rustup toolchain install nightly --profile minimal >/dev/null 2>&1 || {
            unavailable "$what" "no nightly toolchain (rustup toolchain install nightly failed)"
            return
        }
    fi
    if [ "$what" = miri ] &&
        ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^miri'; then
        rustup component add --toolchain nightly miri rust-src >/dev/null 2>&1 || {
            unavailable miri "the nightly miri component cannot be installed"
            return
        }
    fi
}

# A tool a suite needs cannot be had: fail under CI=true, skip (loudly) otherwise.
unavailable() {
    if [ "${CI:-}" = true ]; then
        echo "FAILED: $2 (CI=true skips nothing)"
        return 1
    fi
    echo "SKIPPED: $2"
    skipped+=("$1: $2")
    return 2
}

# Run "$@" once the nightly toolchain for $1 is there; a developer's run
# without it has skipped (and said so), which is no failure.
with_nightly() {
    local rc=0
    nightly "$1" || rc=$?
    shift
    case $rc in
        0) "$@" ;;
        2) return 0 ;;
        *) return 1 ;;
    esac
}

miri() {
    # Miri checks the tests that go through the unsafe FFI layer for
    # undefined behaviour.
    cargo +nightly miri test --lib -- ffi:: handle:: &&
        cargo +nightly miri test --test ffi
}

bench_smoke() {
    # Not a measurement: the decoder benchmark still builds, and every
    # decoder it runs hands out exactly the expected frames (3 samples).
    cargo fmt --check --manifest-path benches/decoder-counters/Cargo.toml &&
        QNS_BENCH_REPS=3 benches/decoder-counters/run.sh >/dev/null
}

e2e() {
    # Every test is bounded: one that hangs fails after 180 s.
    (cd tests/e2e && python3 -m pytest -v -p no:cacheprovider --timeout=180)
}

e2e_valgrind() {
    # The same suite with every QEMU under valgrind: no invalid access
    # anywhere (uninitialised memory too, which ASan does not see), no leak
    # from the library or any C file the glue changes.
    local logs
    logs=$(mktemp -d)
    (cd tests/e2e && QNS_QUIT_TIMEOUT=120 QNS_QEMU_WRAPPER="valgrind --leak-check=full --show-leak-kinds=definite,indirect,possible --log-file=$logs/qemu-%p.log" \
        python3 -m pytest -q -p no:cacheprovider --timeout=600) &&
        scripts/check-valgrind-logs.py "$logs"
    local rc=$?
    rm -rf "$logs"
    return $rc
}

# The sanitizer build: default devices, ASan and UBSan (build-qemu.sh --full).
SANITIZED=$repo/build/qemu-full/qemu-system-x86_64

e2e_sanitizers() {
    # The same suite on the sanitizer build: any report fails the test
    # that started that QEMU (tests/e2e/qemu.py), leaks at exit included.
    (cd tests/e2e && QNS_QEMU=$SANITIZED python3 -m pytest -q -p no:cacheprovider --timeout=300)
}

guest_tests() {
    # On the sanitizer build (not valgrind: a guest under TCG there would
    # take hours). CI=true: a test whose machine lacks root or
    # /dev/net/tun fails (tests/guest/conftest.py).
    scripts/build-guest.sh >/dev/null &&
        (cd tests/guest && QNS_QEMU=$SANITIZED python3 -m pytest -v -p no:cacheprovider --timeout=300)
}

# QEMU configured --enable-rust: its own Rust code (the HPET) and this
# library's in one binary, which links (one copy of Rust's std: both are
# built by the rustc QEMU found) and runs.
rust_build() {
    local qemu=build/qemu-rust/qemu-system-x86_64 symbols
    scripts/build-qemu.sh --rust || return 1
    symbols=$(nm --defined-only "$qemu")
    if ! grep -q '_ZN4hpet6device' <<<"$symbols" || ! grep -q ' qns_decoder_new$' <<<"$symbols"; then
        echo "build/qemu-rust lacks QEMU's Rust HPET or this library"
        return 1
    fi
    python3 scripts/glue-patch-smoke.py "$qemu"
}

# The minimal build, and QEMU's own headers in its tree: they name nothing
# of the library (include/net/filter.h declares its two handles under
# QEMU's names, NetFilterCounters and NetFilterStatsBuilder).
minimal_build() {
    local hits
    scripts/build-qemu.sh || return 1
    hits=$(grep -rnwE 'Qns[A-Za-z]+|qns_[a-z_]+|QNS_[A-Z_]+' \
        "$(readlink -f build/qemu)/../include") || true
    if [ -n "$hits" ]; then
        printf 'QEMU headers name the library:\n%s\n' "$hits"
        return 1
    fi
}

qemu_qtests() {
    local build wrapper rc=0 t
    build=$(readlink -f build/qemu-full)
    # the sanitizer build's options, as the Python tests run it
    eval "$(cd tests/e2e && python3 qemu.py --sanitizer-env)"
    # qtest derives the target from the binary's name, so pass the firmware
    # directories through a wrapper of the same name.
    wrapper=$(mktemp -d)
    printf '#!/bin/sh\nexec %s -L /usr/share/seabios -L /usr/lib/ipxe/qemu "$@"\n' \
        "$build/qemu-system-x86_64" >"$wrapper/qemu-system-x86_64"
    chmod +x "$wrapper/qemu-system-x86_64"
    for t in test-filter-redirector test-filter-mirror test-netfilter \
        netfilter-stats-test e1000-filter-hold-test; do
        echo "--- $t"
        QTEST_QEMU_BINARY="$wrapper/qemu-system-x86_64" timeout 600 \
            "$build/tests/qtest/$t" --tap -k || rc=1
    done
    # QEMU's own virtio-net and e1000 qos tests (the glue changes the
    # net core under them) and the glue's filter-hold ones.
    echo "--- qos-test: virtio-net and e1000"
    local paths
    paths=$(QTEST_QEMU_BINARY="$wrapper/qemu-system-x86_64" \
        "$build/tests/qtest/qos-test" -l | grep -E '/(virtio-net|virtio-net-pci|e1000)/' || true)
    echo "$paths" | grep -q '/filter-hold/' ||
        { echo "qos-test lists no filter-hold test"; rc=1; }
    for t in $paths; do
        QTEST_QEMU_BINARY="$wrapper/qemu-system-x86_64" timeout 600 \
            "$build/tests/qtest/qos-test" --tap -k -p "$t" || rc=1
    done
    # COLO migration with its network on the path (the glue's scenarios
    # of upstream's COLO qtest): a pair that checkpoints, fails over.
    echo "--- migration-test: COLO"
    QTEST_QEMU_BINARY="$wrapper/qemu-system-x86_64" timeout 600 \
        "$build/tests/qtest/migration-test" --tap -k -p /x86_64/migration/colo/network || rc=1
    rm -rf "$wrapper"
    return $rc
}

step "lint: ruff, shellcheck" lint
step "rust: fmt, clippy, cargo test" rust_checks
step "C ABI under valgrind" scripts/test-c-abi.sh
step "miri on the FFI tests" with_nightly miri miri
step "fuzz the decoder against a reference model (60 s)" with_nightly fuzz scripts/fuzz.sh 60
step "decoder benchmark smoke run" bench_smoke
step "build patched QEMU (minimal); its headers name nothing of the library" minimal_build
step "every glue patch on its own: checkpatch, build, smoke test" scripts/glue-tree.sh --check
step "build with --enable-rust: QEMU's Rust and this library in one binary" rust_build
step "end-to-end (patched QEMU, QMP/HMP)" e2e
step "end-to-end with QEMU under valgrind" e2e_valgrind
step "build patched QEMU (default devices, qtests; ASan and UBSan)" scripts/build-qemu.sh --full
step "end-to-end on the sanitizer build" e2e_sanitizers
step "QEMU's own filter qtests on the sanitizer build" qemu_qtests
step "a real guest on the sanitizer build: traffic, holds and a COLO chain" guest_tests

echo
for f in "${failures[@]}"; do
    echo "FAILED: $f"
done
for s in "${skipped[@]}"; do
    echo "SKIPPED: $s"
done
echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
