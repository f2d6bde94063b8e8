#!/bin/sh
# Starts a real etcd + kube-apiserver on 127.0.0.1 (free ports) for the cluster tests and the push
# benchmark, built by scripts/k8s-build.sh (cached). Everything lives in STATE_DIR: the CA and serving
# certificate (openssl), the service-account keys, a static token file (an admin token, and a limited
# token that only RBAC's defaults allow), the logs, the pids, and a kubeconfig with the contexts
# `kind-test` (admin) and `kind-test-limited`. Stop with scripts/k8s-down.sh STATE_DIR.
#   usage: scripts/k8s-up.sh STATE_DIR        (prints the kubeconfig path once /readyz is ok)
set -eu
[ $# -eq 1 ] || { echo "usage: $0 STATE_DIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
bin=$(sh "$here/k8s-build.sh")
mkdir -p "$1"
state=$(cd "$1" && pwd)
cd "$state"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
etcd_port=$(free_port)
peer_port=$(free_port)
api_port=$(free_port)

# A CA, the API server's certificate for 127.0.0.1 signed by it, and the service-account key pair.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=kubeless-local-test-ca" \
    -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout apiserver.key -out apiserver.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > apiserver.ext
openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile apiserver.ext -out apiserver.crt 2>/dev/null
openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
admin_token=$(openssl rand -hex 16)
limited_token=$(openssl rand -hex 16)
printf '%s,admin,admin,system:masters\n%s,limited,limited\n' "$admin_token" "$limited_token" > tokens.csv
chmod 600 tokens.csv ca.key apiserver.key sa.key

"$bin/etcd" --name test --data-dir "$state/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "test=http://127.0.0.1:$peer_port" --log-level warn > etcd.log 2>&1 &
echo $! > etcd.pid

"$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file apiserver.crt --tls-private-key-file apiserver.key \
    --token-auth-file tokens.csv --authorization-mode RBAC \
    --service-account-key-file sa.pub --service-account-signing-key-file sa.key \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.96.0.0/24 --endpoint-reconciler-type none \
    --cert-dir "$state/certs" > apiserver.log 2>&1 &
echo $! > apiserver.pid

server="https://127.0.0.1:$api_port"
ca=$(base64 < ca.crt | tr -d '\n')
cat > kubeconfig <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: "$server", certificate-authority-data: "$ca"}
users:
- name: admin
  user: {token: "$admin_token"}
- name: limited
  user: {token: "$limited_token"}
contexts:
- name: kind-test
  context: {cluster: test, user: admin}
- name: kind-test-limited
  context: {cluster: test, user: limited}
current-context: kind-test
KUBECONFIG
chmod 600 kubeconfig

# Ready within a bounded time (~4 s warm), or the logs say why not.
i=0
until curl -fsS --cacert ca.crt -H "Authorization: Bearer $admin_token" "$server/readyz" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt 600 ] || ! kill -0 "$(cat apiserver.pid)" 2>/dev/null || ! kill -0 "$(cat etcd.pid)" 2>/dev/null; then
        echo "k8s-up: the API server did not become ready; see $state/apiserver.log and etcd.log" >&2
        tail -5 apiserver.log >&2
        sh "$here/k8s-down.sh" "$state"
        exit 1
    fi
    sleep 0.2
done
echo "$state/kubeconfig"
