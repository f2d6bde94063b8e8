#!/bin/sh
# Builds the real Kubeless v1.0.8 function controller (cmd/function-controller) for the controller
# end-to-end test (tests/cluster/test_controller.py) from the Go module proxy with the machine's Go,
# once: the binary is cached under ~/.cache/kubeless-local/kubeless/<version>/ (never in the repo), and
# a second call returns at once. `go install ...@v1.0.8` is refused by the module proxy,
# so the module is downloaded and built inside a writable copy of its folder.
# Cold build: about 80 s on 2 cores. Prints the cache folder.
set -eu
KUBELESS_VERSION=v1.0.8
cache=${KUBELESS_LOCAL_KUBELESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubeless-local/kubeless/$KUBELESS_VERSION}

if [ -x "$cache/function-controller" ]; then
    echo "$cache"
    exit 0
fi
command -v go >/dev/null 2>&1 || { echo "kubeless-controller-build: Go is needed to build the Kubeless controller" >&2; exit 2; }
mkdir -p "$cache"
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
# The module cache is read-only: download there, build in a copy.
src=$(cd "$work" && GOFLAGS= go mod download -json "github.com/kubeless/kubeless@$KUBELESS_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$src" ] || { echo "kubeless-controller-build: go mod download gave no module folder" >&2; exit 1; }
cp -R "$src/." "$work/kubeless"
chmod -R u+w "$work/kubeless"
cd "$work/kubeless"
export GOFLAGS="-mod=mod -buildvcs=false"  # -mod=mod: go.sum may be completed here, in the temp copy
start=$(date +%s)
echo "kubeless-controller-build: building the Kubeless $KUBELESS_VERSION function controller into $cache" >&2
go build -trimpath -ldflags "-s -w" -o "$cache/function-controller.part" ./cmd/function-controller
mv "$cache/function-controller.part" "$cache/function-controller"
echo "kubeless-controller-build: done in $(( $(date +%s) - start )) s" >&2
echo "$cache"
