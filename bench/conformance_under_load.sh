#!/bin/bash
# The conformance suite on the process backend while busy loops keep every core busy: races that
# a quiet machine hides (a worker that finishes spawning and is taken before the warm one) show up.
#
#   bench/conformance_under_load.sh [RUNS] [pytest args...]     RUNS defaults to 1
#   BUSY=2 (busy-loop processes, default 2 = this machine's cores)
#
# Prints each run's pytest summary, then "under load: K/N passed" and the ids of the tests that
# failed (with how many runs they failed in). Exits 0 only when every run passed.
set -uo pipefail
cd "$(dirname "$0")/.."

runs="${1:-1}"
shift || true
[ "$#" -gt 0 ] || set -- tests/conformance
case "$runs" in ''|*[!0-9]*|0) echo "usage: $0 [RUNS>=1] [pytest args...]" >&2; exit 2 ;; esac
busy="${BUSY:-2}"

# The checkout's code, also in the runtime servers and CLI processes the tests spawn.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export KUBELESS_LOCAL_TEST_BACKENDS=process

logs="$(mktemp -d)"
pids=()
stop_load() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    wait "${pids[@]}" 2>/dev/null
    rm -rf "$logs"
}
trap stop_load EXIT
trap 'exit 130' INT TERM

# Each busy loop ends by itself when this script is gone (even after a SIGKILL) or after an hour per run.
for _ in $(seq "$busy"); do
    python3 -c '
import os, sys, time
parent, end = os.getppid(), time.monotonic() + float(sys.argv[1])
while os.getppid() == parent and time.monotonic() < end:
    pass
' "$((runs * 3600))" &
    pids+=($!)
done
echo "load: $busy busy-loop processes (pids ${pids[*]}); suite: pytest -q $*"

passed=0
for i in $(seq "$runs"); do
    log="$logs/run-$i.log"
    python3 -m pytest -q -p no:cacheprovider -rfE "$@" </dev/null >"$log" 2>&1
    rc=$?
    [ "$rc" -eq 0 ] && passed=$((passed + 1))
    echo "run $i/$runs: exit $rc, $(tail -n 1 "$log")"
    # pytest's short summary: "FAILED <id> - <reason>" / "ERROR <id> - <reason>"
    sed -n 's/^\(FAILED\|ERROR\) \([^ ]*\).*/\2/p' "$log" >>"$logs/failed"
    [ "$rc" -eq 0 ] || [ "$rc" -eq 1 ] || { echo "--- pytest output (exit $rc):"; tail -n 30 "$log"; }
done

echo "under load: $passed/$runs passed"
if [ -s "$logs/failed" ]; then
    echo "failing tests (runs failed in, id):"
    sort "$logs/failed" | uniq -c | sort -rn
fi
[ "$passed" -eq "$runs" ]
