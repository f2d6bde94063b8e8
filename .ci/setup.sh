#!/bin/sh
# Installs everything the test suite needs on a fresh Debian bookworm machine (as root), idempotently:
# the toolchains of the six runtimes (a JDK and Maven for Java, also the tests' Kafka broker:
# scripts/kafka-up.sh), wrk for benchmarks, containerd, runc, the CNI plugins and busybox-static for the cluster tests' node
# (tests/support/k8s_node.py), the Python package with its test extras, and a Docker engine with the runtime
# images (.ci/docker-setup.sh).
set -eu
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# python3-pip: Debian's own Python 3.11 with its pip, for tests/e2e/test_machine_python.py (a --prefix install
# lays out as local/lib/python3.11/dist-packages there)
PACKAGES="python3-pip ruby ruby-sinatra ruby-prometheus-client-mmap ruby-webrick
          php8.2-cli php-slim-psr7 composer unzip
          nodejs npm golang-go
          wrk docker.io debootstrap ca-certificates curl
          openjdk-17-jdk-headless maven
          containerd runc containernetworking-plugins busybox-static iproute2 gcc libc6-dev
          chromium chromium-driver apache2-utils"
missing=""
for p in $PACKAGES; do
    case "$p" in  # toolchains the machine may already have from elsewhere (nodesource node, /usr/local/go)
        nodejs|npm) command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && continue ;;
        golang-go) command -v go >/dev/null 2>&1 && continue ;;
        openjdk-17-jdk-headless) command -v javac >/dev/null 2>&1 && continue ;;  # the java11 runtime; a JRE alone has no javac
        maven) command -v mvn >/dev/null 2>&1 && continue ;;
    esac
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "apt-get install:$missing"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# tox brings what its envs need into their own virtualenvs (lint and type: the `lint` extra: ruff, mypy, stubs).
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore tox -e '.[test]'
sh .ci/docker-setup.sh
# kube-apiserver and etcd for tests/cluster, and kube-controller-manager, kube-scheduler and kubelet for
# its real node (tests/support/k8s_node.py: containerd, runc, the CNI plugins and busybox-static above),
# built once from the Go module proxy, one at a time (cold: ~10-15 min on 2 cores; cached under
# ~/.cache/kubeless-local/k8s, so this returns at once afterwards).
sh scripts/k8s-build.sh --node >/dev/null
# The real Kubeless v1.0.8 controller for tests/cluster/test_controller.py (~80 s cold, cached likewise).
sh scripts/kubeless-controller-build.sh >/dev/null
# Delve for the Go debugging tests (tests/conformance/test_go_debug.py), with the standard library built
# for debugging: ~30 s cold, cached under ~/.cache/kubeless-local/delve and Go's build cache.
python3 -m kubeless_local.emulator.delve >/dev/null
