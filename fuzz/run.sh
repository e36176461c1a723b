#!/usr/bin/env bash
# Fuzzes every target in fuzz/fuzz_targets with libFuzzer (cargo fuzz, nightly, debug
# assertions, AddressSanitizer unless --no-sanitizer) for SECONDS each (default 20), one after
# another, and prints each one's executions, time, rate and coverage (libFuzzer's final stats).
# Fails when any target crashes, panics, times out (a step over 10 s), leaks or runs out of
# memory; the input that did it is left in fuzz/artifacts/TARGET/. Corpora grow in
# fuzz/corpus/TARGET/ (neither is in git).
#
#   fuzz/run.sh [--runs N] [--no-sanitizer] [SECONDS] [TARGET...]
#
#   --runs N         stop each target after N executions instead (SECONDS, if given too, still
#                    bounds it): for long runs, e.g. `fuzz/run.sh --runs 10000000 --no-sanitizer`.
#   --no-sanitizer   build without AddressSanitizer (`-s none`, in fuzz/target/nosan): several
#                    times faster; panics, debug assertions and the device harness's guard pages
#                    still catch what they catch, but not heap overflows or use-after-free in
#                    unsafe code. CI's short runs keep ASan.
set -euo pipefail
cd "$(dirname "$0")"

runs=
sanitizer=(--debug-assertions)
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=${2:?--runs needs a count}; shift 2 ;;
    --runs=*) runs=${1#--runs=}; shift ;;
    --no-sanitizer) sanitizer=(--debug-assertions -s none --target-dir target/nosan); shift ;;
    -h|--help) sed -n '2,/^set /p' "$(basename "$0")" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) break ;;
  esac
done
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
  seconds=$1
  shift
elif [ -n "$runs" ]; then
  seconds=0 # no limit
else
  seconds=20
fi

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
echo "==> building ${#targets[@]} fuzz targets (${sanitizer[*]})"
cargo +nightly fuzz build "${sanitizer[@]}"

limits=(-max_total_time="$seconds")
what="${seconds}s"
if [ -n "$runs" ]; then
  limits+=(-runs="$runs")
  what="$runs runs"
  [ "$seconds" -gt 0 ] && what+=" or ${seconds}s"
fi

failed=()
summary=()
for t in "${targets[@]}"; do
  echo "==> $t for $what"
  mkdir -p "corpus/$t"
  log=$(mktemp)
  status=0
  began=$(date +%s.%N)
  cargo +nightly fuzz run "${sanitizer[@]}" "$t" "corpus/$t" -- \
    "${limits[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  took=$(awk -v b="$began" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - b }')
  # The last status line (coverage) and the final stats.
  done_line=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: //p' "$log")
  # libFuzzer's own rate counts whole seconds only; this one counts startup too.
  rate=$(awk -v n="${execs:-0}" -v t="$took" 'BEGIN { printf "%d", (t > 0 ? n / t : 0) }')
  echo "    $done_line"
  grep -E '^stat::' "$log" | sed 's/^/    /' || true
  if [ "$status" -ne 0 ]; then
    failed+=("$t")
    echo "    FAILED (status $status):"
    grep -E -A 30 'panicked|ERROR: |SUMMARY|Test unit written' "$log" | head -60 | sed 's/^/    /'
  fi
  summary+=("$(printf '%-16s %12s execs %7ss %8s/s  %s' "$t" "${execs:-?}" "$took" "${rate:-?}" \
    "$(grep -oE 'cov: [0-9]+ ft: [0-9]+' <<<"$done_line" || true)")")
  rm -f "$log"
done

echo "==> fuzzing summary ($what per target${sanitizer[2]:+, no sanitizer})"
printf '    %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "==> crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
