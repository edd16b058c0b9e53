#!/usr/bin/env bash
# Test the C ABI from C: build the static library, check that it exports every
# function the header declares, compile tests/c/abi_test.c against include/
# only, link it with the library and run it under valgrind, which must report
# no error and no leak.
#
#   scripts/test-c-abi.sh            # release build of the library
#   PROFILE=debug scripts/test-c-abi.sh
#   CC=clang scripts/test-c-abi.sh
#
# Exits non-zero on any failure: build, compile, a missing symbol, a failed
# check, a valgrind error or leak. The test's last line is "N passed, 0 failed".
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${PROFILE:-release}
cc=${CC:-cc}
header=include/qemu_netfilter_stats.h
lib=target/$profile/libqemu_netfilter_stats.a
out=target/c-abi-test
mkdir -p "$out"

die() {
    echo "test-c-abi: $*" >&2
    exit 1
}

command -v valgrind >/dev/null || die "valgrind is not installed (apt-get install valgrind)"
case $profile in
release) profile_args=(--release) ;;
debug) profile_args=() ;;
*) die "PROFILE must be release or debug, not '$profile'" ;;
esac

# 1. The static library, and the system libraries it needs (rustc prints them;
#    cargo replays the note when the build is fresh).
echo "== building $lib"
build_log=$out/cargo.log
if ! cargo rustc "${profile_args[@]}" --lib --crate-type staticlib \
    -- --print native-static-libs >"$build_log" 2>&1; then
    cat "$build_log" >&2
    die "cargo build failed"
fi
native_libs=$(sed -n 's/.*native-static-libs: //p' "$build_log" | tail -n 1)
if [ -z "$native_libs" ]; then
    native_libs="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"
    echo "   (no native-static-libs note; using: $native_libs)"
fi
[ -f "$lib" ] || die "$lib was not built"

# 2. Every function the header declares is exported by the library, and no
#    qns_ function is exported without being declared.
echo "== checking exported symbols"
declared=$("$cc" -std=c11 -E -P "$header" |
    grep -oE '\bqns_[A-Za-z0-9_]+[[:space:]]*\(' | tr -d '( \t' | sort -u)
[ -n "$declared" ] || die "found no qns_ function in $header"
exported=$(nm -g --defined-only "$lib" 2>/dev/null |
    awk '$2 == "T" && $3 ~ /^qns_/ { print $3 }' | sort -u)
missing=$(comm -23 <(echo "$declared") <(echo "$exported"))
undeclared=$(comm -13 <(echo "$declared") <(echo "$exported"))
[ -z "$missing" ] || die "declared in $header but not exported by $lib:"$'\n'"$missing"
[ -z "$undeclared" ] || die "exported by $lib but not declared in $header:"$'\n'"$undeclared"
echo "   $(echo "$declared" | wc -l) functions declared and exported"

# 3. The C test, from the header alone, and it must call every function.
echo "== compiling tests/c/abi_test.c"
cflags=(-std=c11 -Wall -Wextra -Wpedantic -Werror -g -pthread)
"$cc" "${cflags[@]}" -I include -c tests/c/abi_test.c -o "$out/abi_test.o"
used=$(nm -u "$out/abi_test.o" | awk '$2 ~ /^qns_/ { print $2 }' | sort -u)
unused=$(comm -23 <(echo "$declared") <(echo "$used"))
[ -z "$unused" ] || die "tests/c/abi_test.c does not call:"$'\n'"$unused"
# shellcheck disable=SC2086 # native_libs is a list of flags
"$cc" -pthread "$out/abi_test.o" "$lib" $native_libs -o "$out/abi_test"

# 4. Run it under valgrind.
echo "== running under valgrind"
status=0
valgrind --error-exitcode=1 --leak-check=full \
    --errors-for-leak-kinds=definite,indirect,possible \
    --show-leak-kinds=definite,indirect,possible \
    --track-origins=yes --log-file="$out/valgrind.log" \
    "$out/abi_test" >"$out/stdout.log" || status=$?
cat "$out/stdout.log"
if [ "$status" -ne 0 ] || grep -qE 'ERROR SUMMARY: [1-9]|definitely lost: [1-9]|indirectly lost: [1-9]|possibly lost: [1-9]' "$out/valgrind.log"; then
    cat "$out/valgrind.log" >&2
    die "the test failed (exit status $status); valgrind log: $out/valgrind.log"
fi
grep -E '(ERROR SUMMARY|in use at exit|definitely lost)' "$out/valgrind.log" | sed 's/^==[0-9]*== /   valgrind: /'
tail -n 1 "$out/stdout.log" | grep -qE '^[0-9]+ passed, 0 failed$' ||
    die "the test did not end with 'N passed, 0 failed'"
echo "== C ABI test passed"
