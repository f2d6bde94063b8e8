#!/bin/sh
# Starts a real single-node Kubernetes v1.34.4 (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, a kubelet on its own containerd) in one private network/mount/pid namespace, as root,
# for the cluster tests and benchmarks: tests/support/k8s_node.py does the work (its docstring lists what
# it guarantees). The binaries come from scripts/k8s-build.sh --node (cached). The IMAGEs named are
# copied from the local Docker engine into the node. Prints the kubeconfig (contexts kind-test and
# kind-test-limited; the API server on 127.0.0.1) once the node is Ready; it runs until
# scripts/cluster-local-down.sh STATE_DIR.
#   usage: scripts/cluster-local-up.sh STATE_DIR [IMAGE...]
set -eu
[ $# -ge 1 ] || { echo "usage: $0 STATE_DIR [IMAGE...]" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
exec python3 "$here/../tests/support/k8s_node.py" up "$@"
