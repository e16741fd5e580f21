#!/usr/bin/env bash
# Runs test tiers several times in a row under a CPU hog, the way a busy CI machine meets them.
#
#   scripts/stress-tests.sh [RUNS] [HOGS] [PYTEST ARGS...]
#   e.g. scripts/stress-tests.sh 3 2 tests/cluster tests/unit
#
# RUNS (default 3) consecutive pytest runs, each with HOGS (default: the number of cores) busy
# processes spinning beside it. Prints one line per run and exits non-zero if any run failed.
set -uo pipefail
runs=${1:-3}
hogs=${2:-$(nproc)}
shift $(( $# >= 2 ? 2 : $# ))
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(tests/unit tests/cluster)
py=.venv/bin/python
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; }
trap cleanup EXIT
for _ in $(seq "$hogs"); do
  "$py" -c 'while True: pass' &
  pids+=($!)
done
echo "==> $runs runs of pytest ${args[*]} beside $hogs busy processes"
failed=0
for i in $(seq "$runs"); do
  start=$(date +%s)
  if "$py" -m pytest -q -p no:cacheprovider "${args[@]}" > "build/stress-run-$i.log" 2>&1; then
    status=passed
  else
    status=FAILED
    failed=$((failed + 1))
  fi
  echo "run $i: $status in $(( $(date +%s) - start )) s: $(tail -1 "build/stress-run-$i.log")"
done
echo "==> $((runs - failed))/$runs runs passed (logs: build/stress-run-N.log)"
[ "$failed" -eq 0 ]
