#!/bin/sh
# The real-cluster check: a kind cluster with Kubeless v1.0.8 (`kubeless-local cluster up`), each
# template's function pushed to it and called there (`push --wait`: through the API server's service
# proxy, as `kubeless function call` does), and the answer compared with the same function under `dev`
# (docker backend, the same images).
# Needs Docker, kind, kubectl and internet (the kind node image, the Kubeless controller and the unzip
# image it uses as init container come from a public registry), so it cannot run in CI here.
#   usage: scripts/e2e-kind.sh [RUNTIME...]     (default: python3.11 nodejs20 ruby3.1 php8.2)
# The go template is not in the default list: its image compiles the function at start under `dev`; on a
# cluster Kubeless would need a compilation phase, which the catalog does not describe (docs/push.md).
# KEEP_CLUSTER=1 keeps the cluster (named $KIND_CLUSTER, default kubeless-e2e) afterwards.
set -eu
name=${KIND_CLUSTER:-kubeless-e2e}
[ $# -gt 0 ] || set -- python3.11 nodejs20 ruby3.1 php8.2
for tool in docker kind kubectl kubeless-local; do
    command -v "$tool" >/dev/null 2>&1 || { echo "e2e-kind: $tool is needed" >&2; exit 2; }
done
work=$(mktemp -d)
dev_pid=""
cleanup() {
    [ -z "$dev_pid" ] || kill "$dev_pid" 2>/dev/null || true
    [ -n "${KEEP_CLUSTER:-}" ] || kubeless-local cluster down --name "$name" || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

kubeless-local runtime build "$@"
kubeless-local cluster up --name "$name"
i=0
until kubeless-local cluster status --name "$name" | grep -q "controller: available"; do
    i=$((i + 1)); [ $i -le 120 ] || { echo "e2e-kind: the Kubeless controller is not available after 10 min" >&2; exit 1; }
    sleep 5
done

failed=0
for runtime in "$@"; do
    fn=$(echo "e2e-$runtime" | tr -d '.')
    (cd "$work" && kubeless-local init "$fn" --runtime "$runtime" >/dev/null)
    # On the cluster: `push --wait` prints "NAME: ANSWER" once the Deployment is available.
    cluster_answer=$(kubeless-local push "$work/$fn" --context "kind-$name" --wait --yes | sed -n "s/^$fn: //p")
    # Under dev (docker backend): the same function, called once it answers.
    (cd "$work/$fn" && exec kubeless-local dev --backend docker) > "$work/$fn.dev.log" 2>&1 &
    dev_pid=$!
    i=0
    until dev_answer=$(kubeless-local call "$fn" 2>/dev/null); do
        i=$((i + 1)); [ $i -le 300 ] || { echo "e2e-kind: $fn did not start under dev; see $work/$fn.dev.log" >&2; exit 1; }
        sleep 1
    done
    kill "$dev_pid"; wait "$dev_pid" 2>/dev/null || true; dev_pid=""
    if [ "$cluster_answer" = "$dev_answer" ]; then
        echo "ok   $runtime: $cluster_answer"
    else
        echo "FAIL $runtime: cluster answered [$cluster_answer], dev answered [$dev_answer]"
        failed=1
    fi
done
exit $failed
