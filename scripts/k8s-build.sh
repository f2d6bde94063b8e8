#!/bin/sh
# Builds kube-apiserver and etcd for the cluster tests (tests/cluster) from the Go module proxy with
# the machine's Go (>= 1.24), once: the binaries are cached under
# ~/.cache/kubeless-local/k8s/<version>/ (never in the repo) and a second call returns at once.
# Cold build: about 5-13 min on 2 cores, 1.8 GB RAM peak. Prints the cache folder.
set -eu
K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.4
here=$(cd "$(dirname "$0")" && pwd)
cache=${KUBELESS_LOCAL_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubeless-local/k8s/$K8S_VERSION}

if [ -x "$cache/kube-apiserver" ] && [ -x "$cache/etcd" ]; then
    echo "$cache"
    exit 0
fi
command -v go >/dev/null 2>&1 || { echo "k8s-build: Go >= 1.24 is needed to build kube-apiserver" >&2; exit 2; }
# Go >= 1.21 fetches the toolchain the module asks for by itself (GOTOOLCHAIN=auto); older Go cannot.
minor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
if [ -n "$minor" ] && [ "$minor" -lt 21 ]; then
    echo "k8s-build: $(go env GOVERSION) is too old to build kube-apiserver $K8S_VERSION; install Go >= 1.24" >&2
    exit 2
fi
mkdir -p "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The wrapper module: k8s.io/kubernetes with its staging modules replaced by their published versions.
cp "$here/k8s/apiserver/go.mod" "$work/go.mod"
cd "$work"
export GOFLAGS="-mod=mod -buildvcs=false"  # -mod=mod: go.sum is written here, in the temp copy
start=$(date +%s)
echo "k8s-build: building etcd $ETCD_VERSION and kube-apiserver $K8S_VERSION into $cache" >&2
go build -trimpath -o "$cache/etcd.part" go.etcd.io/etcd/server/v3
go build -trimpath -o "$cache/kube-apiserver.part" \
    -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34" \
    k8s.io/kubernetes/cmd/kube-apiserver
mv "$cache/etcd.part" "$cache/etcd"
mv "$cache/kube-apiserver.part" "$cache/kube-apiserver"
echo "k8s-build: done in $(( $(date +%s) - start )) s" >&2
echo "$cache"
