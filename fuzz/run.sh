#!/usr/bin/env bash
# Fuzzes every target in fuzz/fuzz_targets with libFuzzer (cargo fuzz, nightly, AddressSanitizer,
# debug assertions) for SECONDS each (default 20), one after another, and prints each one's
# executions and coverage (libFuzzer's final stats). Fails when any target crashes, panics,
# times out (a step over 10 s), leaks or runs out of memory; the input that did it is left in
# fuzz/artifacts/TARGET/. Corpora grow in fuzz/corpus/TARGET/ (neither is in git).
#
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-20}
shift || true

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
echo "==> building ${#targets[@]} fuzz targets"
cargo +nightly fuzz build --debug-assertions

failed=()
summary=()
for t in "${targets[@]}"; do
  echo "==> $t for ${seconds}s"
  mkdir -p "corpus/$t"
  log=$(mktemp)
  status=0
  cargo +nightly fuzz run --debug-assertions "$t" "corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  # The last status line (coverage) and the final stats.
  done_line=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: //p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: //p' "$log")
  echo "    $done_line"
  grep -E '^stat::' "$log" | sed 's/^/    /' || true
  if [ "$status" -ne 0 ]; then
    failed+=("$t")
    echo "    FAILED (status $status):"
    grep -E -A 30 'panicked|ERROR: |SUMMARY|Test unit written' "$log" | head -60 | sed 's/^/    /'
  fi
  summary+=("$(printf '%-16s %12s execs %8s/s  %s' "$t" "${execs:-?}" "${rate:-?}" \
    "$(grep -oE 'cov: [0-9]+ ft: [0-9]+' <<<"$done_line" || true)")")
  rm -f "$log"
done

echo "==> fuzzing summary (${seconds}s per target)"
printf '    %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "==> crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
