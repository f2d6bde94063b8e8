#!/bin/sh
# Stops the node scripts/cluster-local-up.sh STATE_DIR started: its namespace is killed (every process
# in it dies with it), then its cgroups are removed depth-first and its unpacked images deleted.
set -eu
[ $# -eq 1 ] || { echo "usage: $0 STATE_DIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
exec python3 "$here/../tests/support/k8s_node.py" down "$1"
