#!/bin/sh
# Builds the Kubernetes binaries of the cluster tests (tests/cluster) from the Go module proxy with the
# machine's Go (>= 1.24), once each: the binaries are cached under
# ~/.cache/kubeless-local/k8s/<version>/ (never in the repo) and a second call returns at once.
#   usage: scripts/k8s-build.sh          etcd and kube-apiserver (scripts/k8s-up.sh)
#          scripts/k8s-build.sh --node   those, kube-controller-manager, kube-scheduler, kubelet, kubectl
#                                        (`cluster up` against the node), and a
#                                        static `pause` from the source's build/pause/linux/pause.c (gcc)
#                                        (a whole node: tests/support/k8s_node.py)
# One binary at a time (2 cores); each prints a progress line. Cold: etcd + kube-apiserver about
# 5-13 min, kube-controller-manager ~2-6 min, kube-scheduler and kubelet ~1-3 min each; 1.8 GB RAM peak.
# Prints the cache folder.
set -eu
K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.4
here=$(cd "$(dirname "$0")" && pwd)
cache=${KUBELESS_LOCAL_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubeless-local/k8s/$K8S_VERSION}

case "${1:-}" in
    "") wanted="etcd kube-apiserver" ;;
    --node) wanted="etcd kube-apiserver kube-controller-manager kube-scheduler kubelet pause kubectl" ;;
    *) echo "usage: $0 [--node]" >&2; exit 2 ;;
esac
missing=""
for name in $wanted; do [ -x "$cache/$name" ] || missing="$missing $name"; done
if [ -z "$missing" ]; then
    echo "$cache"
    exit 0
fi
command -v go >/dev/null 2>&1 || { echo "k8s-build: Go >= 1.24 is needed to build$missing" >&2; exit 2; }
# Go >= 1.21 fetches the toolchain the module asks for by itself (GOTOOLCHAIN=auto); older Go cannot.
minor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
if [ -n "$minor" ] && [ "$minor" -lt 21 ]; then
    echo "k8s-build: $(go env GOVERSION) is too old to build Kubernetes $K8S_VERSION; install Go >= 1.24" >&2
    exit 2
fi
mkdir -p "$cache"
work=$(mktemp -d)
trap 'rm -f "$cache"/*.part; rm -rf "$work"' EXIT
# The wrapper module: k8s.io/kubernetes with its staging modules replaced by their published versions.
cp "$here/k8s/apiserver/go.mod" "$work/go.mod"
cd "$work"
export GOFLAGS="-mod=mod -buildvcs=false"  # -mod=mod: go.sum is written here, in the temp copy
version_flags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34"
total=$(echo $missing | wc -w)
n=0
for name in $missing; do
    n=$((n + 1))
    start=$(date +%s)
    case "$name" in
        pause)  # the pod sandbox's process: C, static, so its image needs nothing else
            echo "k8s-build: [$n/$total] building pause $K8S_VERSION into $cache" >&2
            gcc -Os -static -DVERSION="$K8S_VERSION" -o "$cache/pause.part" \
                "$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
            mv "$cache/pause.part" "$cache/pause"
            continue ;;
        etcd) package=go.etcd.io/etcd/server/v3; version=$ETCD_VERSION ;;
        *) package=k8s.io/kubernetes/cmd/$name; version=$K8S_VERSION ;;
    esac
    echo "k8s-build: [$n/$total] building $name $version into $cache" >&2
    go build -trimpath -o "$cache/$name.part" -ldflags "$version_flags" "$package"
    mv "$cache/$name.part" "$cache/$name"
    echo "k8s-build: [$n/$total] $name done in $(( $(date +%s) - start )) s" >&2
done
echo "$cache"
