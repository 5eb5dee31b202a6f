#!/usr/bin/env bash
# Build and run the fuzz targets (src/bin/*.rs) with Debian's libFuzzer; see README.md.
#
#   fuzz.sh build
#   fuzz.sh run [TARGET...]      each target for $FUZZ_SECONDS (default 60), then the executions;
#                                new inputs go to corpus-work/<target>, crashes to artifacts/<target>/
#   fuzz.sh short SECONDS        what `make test` runs: the committed crash inputs replayed, then
#                                SECONDS in all over the committed corpus (new inputs discarded)
#   fuzz.sh repro TARGET FILE... replay inputs once each
#   fuzz.sh seed [PCAP]          rewrite corpus/ from the core's test frames (and a capture)
#
# FUZZ_ARGS adds libFuzzer options to `run` and `short`.
set -euo pipefail
CALLER=$PWD
cd "$(dirname "$0")"
# A path as the caller meant it.
from_caller() { case $1 in /*) echo "$1" ;; *) echo "$CALLER/$1" ;; esac; }

LIBFUZZER_DIR=/usr/lib/llvm-14/lib
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
BIN=target/$TRIPLE/release
# libFuzzer's coverage hooks, emitted by rustc's LLVM: 8-bit edge counters,
# the PC table (for `cov:`), and comparisons traced (for `-use_value_profile`).
# Debug assertions, overflow checks, opt-level and unwinding: Cargo.toml.
SANCOV="-C passes=sancov-module -C llvm-args=-sanitizer-coverage-level=3
  -C llvm-args=-sanitizer-coverage-inline-8bit-counters -C llvm-args=-sanitizer-coverage-pc-table
  -C llvm-args=-sanitizer-coverage-trace-compares -L native=$LIBFUZZER_DIR"

targets() { for f in src/bin/*.rs; do basename "$f" .rs; done; }

# Inputs as long as a worker's buffers for the packet targets.
max_len() {
  case $1 in
    vm_frames | underlay) echo 70000 ;;
    *) echo 8192 ;;
  esac
}

build() {
  [ -e "$LIBFUZZER_DIR/libFuzzer.a" ] || { echo "fuzz.sh: $LIBFUZZER_DIR/libFuzzer.a missing: apt-get install libfuzzer-14-dev" >&2; exit 1; }
  # --target: RUSTFLAGS then reach only the target's crates, not build scripts.
  RUSTFLAGS="$SANCOV" cargo build --release --target "$TRIPLE" --bins
}

# fuzz TARGET SECONDS WORKDIR: one bounded run; prints a summary line, fails on a crash.
fuzz() {
  local t=$1 secs=$2 work=$3 log
  mkdir -p "$work" "artifacts/$t"
  log=artifacts/$t/last.log
  local status=0
  # shellcheck disable=SC2086
  "$BIN/$t" -max_total_time="$secs" -print_final_stats=1 -use_value_profile=1 -max_len="$(max_len "$t")" \
    -timeout=10 -rss_limit_mb=2048 -artifact_prefix="artifacts/$t/" ${FUZZ_ARGS:-} "$work" "corpus/$t" >"$log" 2>&1 || status=$?
  local execs rate cov ft corp
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  read -r cov ft corp < <(grep -E '^#[0-9]+' "$log" | tail -1 | sed -E 's/.*cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+).*/\1 \2 \3/') || true
  printf '%-14s %12s executions %9s/s  cov %-6s ft %-7s corpus %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}"
  grep '^nvgred-fuzz: known bug' "$log" | grep -v 'not a new crash' | sed 's/^/  /' || true
  echo "${execs:-0}" >>"$TOTALS"
  if [ "$status" -ne 0 ]; then
    echo "fuzz.sh: $t failed (exit $status); log: native/fuzz/$log" >&2
    grep -E 'nvgred-fuzz: panic|^  at |ERROR: libFuzzer|Test unit written' "$log" | head -8 | sed 's/^/  /' >&2
    local unit
    unit=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    [ -n "$unit" ] && echo "  reproduce: make fuzz-repro FUZZ_TARGET=$t FUZZ_INPUT=native/fuzz/$unit" >&2
    return 1
  fi
}

total() {
  awk '{ s += $1 } END { printf "total          %12d executions\n", s }' "$TOTALS"
}

cmd=${1:-run}
shift || true
case $cmd in
  build) build ;;
  run)
    build
    TOTALS=$(mktemp)
    trap 'rm -f "$TOTALS"' EXIT
    failed=0
    for t in ${@:-$(targets)}; do
      fuzz "$t" "${FUZZ_SECONDS:-60}" "corpus-work/$t" || failed=1
    done
    total
    exit $failed
    ;;
  short)
    secs=${1:?seconds}
    build
    set -- $(targets)
    mkdir -p artifacts
    for t in "$@"; do
      crashes=(crashes/"$t"/*)
      [ -e "${crashes[0]}" ] || continue
      "$BIN/$t" "${crashes[@]}" >"artifacts/$t.replay.log" 2>&1 || {
        echo "fuzz.sh: a committed crash input of $t crashes (log: native/fuzz/artifacts/$t.replay.log)" >&2
        exit 1
      }
    done
    TOTALS=$(mktemp)
    work=$(mktemp -d)
    trap 'rm -rf "$TOTALS" "$work"' EXIT
    each=$(((secs + $# - 1) / $#))
    failed=0
    for t in "$@"; do
      fuzz "$t" "$each" "$work/$t" || failed=1
    done
    total
    exit $failed
    ;;
  repro)
    t=${1:?target}
    shift
    inputs=()
    for f in "$@"; do inputs+=("$(from_caller "$f")"); done
    build
    exec "$BIN/$t" "${inputs[@]}"
    ;;
  seed)
    # The seed tool is an ordinary program: no instrumentation, no libFuzzer.
    cargo run --release --example seed -- ${1:+"$(from_caller "$1")"}
    ;;
  *)
    echo "usage: fuzz.sh build|run [TARGET...]|short SECONDS|repro TARGET FILE...|seed [PCAP]" >&2
    exit 2
    ;;
esac
