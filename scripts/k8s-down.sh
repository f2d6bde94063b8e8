#!/bin/sh
# Stops what scripts/k8s-up.sh STATE_DIR started (by the pids it recorded): TERM, then KILL after 10 s.
set -eu
[ $# -eq 1 ] || { echo "usage: $0 STATE_DIR" >&2; exit 2; }
for name in apiserver etcd; do
    pidfile="$1/$name.pid"
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || { rm -f "$pidfile"; continue; }
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
done
