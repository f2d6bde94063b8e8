#!/bin/sh
# Prepare Docker for the docker backend's tests (idempotent):
#   1. install docker.io + debootstrap when missing,
#   2. start dockerd without the default bridge (no traffic to private ranges) unless an engine answers,
#   3. create debian:bookworm-slim locally when it is missing (no registry can be reached here),
#   4. build the runtime images with `kubeless-local runtime build`.
# `.ci/docker-setup.sh stop` stops the dockerd this script started.
# Env: DOCKERD_LOG (default /tmp/kubeless-local-dockerd.log), SKIP_BUILD=1 to skip step 4.
set -eu

HERE=$(cd "$(dirname "$0")/.." && pwd)
LOG=${DOCKERD_LOG:-/tmp/kubeless-local-dockerd.log}
PIDFILE=/tmp/kubeless-local-dockerd.pid
BASE=debian:bookworm-slim

if [ "${1:-}" = "stop" ]; then
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        kill "$(cat "$PIDFILE")"
        i=0
        while kill -0 "$(cat "$PIDFILE")" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.2; i=$((i + 1)); done
        rm -f "$PIDFILE"
        echo "dockerd stopped"
    fi
    exit 0
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. packages
if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    echo "installing docker.io and debootstrap"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq docker.io debootstrap >/dev/null
fi

# 2. the engine
if ! docker info >/dev/null 2>&1; then
    echo "starting dockerd (log: $LOG)"
    # --bridge=none: no docker0 on 172.17.0.0/16; containers use --network host.
    as_root sh -c "nohup dockerd --bridge=none --iptables=false --ip-masq=false >'$LOG' 2>&1 & echo \$! >'$PIDFILE'"
    i=0
    until docker info >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -gt 150 ]; then
            echo "dockerd did not answer within 30 s; see $LOG" >&2
            tail -20 "$LOG" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
fi
echo "docker engine: $(docker version --format '{{.Server.Version}}')"

# 3. the base image
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    # The Debian mirror this machine's apt uses (deb822 .sources first, then sources.list lines);
    # no mirror is written here.
    MIRROR=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' | grep -v security | head -1)
    if [ -z "$MIRROR" ]; then
        MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | sed -n 's/^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]\{1,\}\)\{0,1\}\([^[:space:]]*\).*/\2/p' | grep -v security | head -1)
    fi
    if [ -z "$MIRROR" ]; then
        echo "no Debian mirror found in this machine's apt sources (/etc/apt/sources.list*); add one, or create $BASE yourself (docker import/pull)" >&2
        exit 1
    fi
    ROOTFS=$(mktemp -d /tmp/kubeless-local-rootfs.XXXXXX)
    echo "creating $BASE with debootstrap from $MIRROR (about 30 s)"
    as_root debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >/tmp/kubeless-local-debootstrap.log 2>&1 || {
        echo "debootstrap failed; see /tmp/kubeless-local-debootstrap.log" >&2; exit 1; }
    # the same apt sources as the host (its mirror and security updates)
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
        if [ -f "$f" ]; then as_root cp "$f" "$ROOTFS$f"; fi
    done
    as_root rm -rf "$ROOTFS/var/cache/apt/archives/"*.deb "$ROOTFS/var/lib/apt/lists/"*
    as_root tar -C "$ROOTFS" -c . | docker import - "$BASE" >/dev/null
    as_root rm -rf "$ROOTFS"
fi

# 4. the runtime images
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cd "$HERE"
    if command -v kubeless-local >/dev/null 2>&1; then
        kubeless-local runtime build
    else
        python -m kubeless_local runtime build
    fi
fi
