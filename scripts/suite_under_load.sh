#!/usr/bin/env bash
# The whole default suite (`make test`) under an artificial CPU load: BUSY processes that
# spin forever (2 by default, one per core of a 2-core machine), RUNS times in a row (3 by
# default), stopping at the first failure. Prints one line per run: wall time, the load
# average before and after, the result; each run's pytest output goes to LOGDIR/run-N.log.
#
#   scripts/suite_under_load.sh                 # 2 busy processes, 3 runs
#   BUSY=2 RUNS=1 LOGDIR=/tmp/load scripts/suite_under_load.sh
#   RUNS=5 scripts/suite_under_load.sh tests/adversarial/test_malicious_host.py  # these files
#
# With arguments, each run is `pytest ARGS` (one process) instead of `make test`.
# The busy processes are this script's own children, ended by their pids when it exits.
set -uo pipefail
cd "$(dirname "$0")/.."
BUSY=${BUSY:-2}
RUNS=${RUNS:-3}
LOGDIR=${LOGDIR:-$(mktemp -d)}
mkdir -p "$LOGDIR"

busy=()
stop_busy() { [ ${#busy[@]} -eq 0 ] || kill "${busy[@]}" 2>/dev/null; }
trap stop_busy EXIT
for _ in $(seq "$BUSY"); do
  python3 -c 'while True: pass' &
  busy+=($!)
done
echo "busy processes: ${busy[*]:-none}; logs in $LOGDIR"

for run in $(seq "$RUNS"); do
  load_before=$(cut -d' ' -f1-3 /proc/loadavg)
  start=$(date +%s)
  if [ $# -gt 0 ]; then
    .venv/bin/python -m pytest -p no:cacheprovider "$@" >"$LOGDIR/run-$run.log" 2>&1
  else
    make test >"$LOGDIR/run-$run.log" 2>&1
  fi
  rc=$?
  wall=$(($(date +%s) - start))
  load_after=$(cut -d' ' -f1-3 /proc/loadavg)
  summary=$(grep -E "[0-9]+ (passed|failed)" "$LOGDIR/run-$run.log" | tail -1)
  echo "run $run: $(date -u +%H:%M) UTC, ${wall} s ($((wall / 60)) min $((wall % 60)) s)," \
    "load $load_before -> $load_after, exit $rc: $summary"
  [ "$rc" -eq 0 ] || exit "$rc"
done
