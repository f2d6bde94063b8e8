#!/bin/sh
# Stops the broker scripts/kafka-up.sh started in DIR (default ~/.cache/kubeless-local/kafka/broker):
# SIGTERM (a clean shutdown), SIGKILL after KAFKA_STOP_TIMEOUT seconds (20). `--purge` also deletes DIR
# (its topics and committed offsets).
set -eu
purge=""
if [ "${1:-}" = "--purge" ]; then purge=1; shift; fi
dir=${1:-$HOME/.cache/kubeless-local/kafka/broker}
timeout=${KAFKA_STOP_TIMEOUT:-20}
if [ -f "$dir/pid" ]; then
    pid=$(cat "$dir/pid")
    if kill -TERM "$pid" 2>/dev/null; then
        waited=0
        while kill -0 "$pid" 2>/dev/null; do
            if [ "$waited" -ge $((timeout * 10)) ]; then
                echo "kafka-down: the broker (pid $pid) did not stop within ${timeout}s; killing it" >&2
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
            waited=$((waited + 1))
        done
    fi
    rm -f "$dir/pid"
fi
if [ -n "$purge" ]; then rm -rf "$dir"; fi
