#!/usr/bin/env bash
# Fuzz the frame decoder against a reference model (fuzz/fuzz_targets/
# decoder.rs) for SECONDS (default 60) with libFuzzer, starting from the
# committed seeds in fuzz/corpus/decoder. New inputs go to a scratch copy, so
# the committed corpus stays small; a crash or mismatch is saved under
# fuzz/artifacts/decoder/ and fails the run.
#
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}

command -v cargo-fuzz >/dev/null || cargo install --quiet --locked cargo-fuzz
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r fuzz/corpus/decoder "$work/corpus"
mkdir -p fuzz/artifacts/decoder
# One worker: the machine has two cores and the rest of the tests need one.
set +e
cargo +nightly fuzz run --fuzz-dir fuzz decoder "$work/corpus" -- \
    -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix=fuzz/artifacts/decoder/ >"$work/log" 2>&1
status=$?
set -e
# The whole log is kept (fuzz/ artifacts are not committed); libFuzzer puts a
# tab after "#N".
cp "$work/log" fuzz/artifacts/decoder.log
grep -E "^#[0-9]+[[:space:]]+(DONE|INITED)|stat::(number_of_executed_units|average_exec_per_sec)" \
    "$work/log" || true
if [ "$status" -ne 0 ]; then
    tail -40 "$work/log"
    echo "fuzz: FAILED (exit $status); the input is under fuzz/artifacts/decoder/," \
        "the log in fuzz/artifacts/decoder.log" >&2
    exit 1
fi
echo "fuzz: no crash or mismatch in ${seconds}s"
