"""A real single-node Kubernetes v1.34.4 for the cluster tests: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and a kubelet on its own containerd, all in one private
`unshare --net --mount --pid --fork --kill-child` namespace.

Guarantees:
- Every process of the node is in that namespace, whose first process (`init` below, pid 1 there)
  dies with the process that started the node (PR_SET_PDEATHSIG on `unshare`, `--kill-child` on its
  child): a kill -9 of the test process leaves none running. Its mounts and links die with it.
- Nothing is addressed outside 127.0.0.0/8 from the host's network namespace: pods get 10.244.0.0/24
  on a bridge inside the namespace, the node's address is one end of a veth pair there, and the host
  reaches the API server only on 127.0.0.1:<port>, a socket the host opens and the namespace's init
  relays to the API server (the socket keeps the host's namespace; the connections it makes are the
  namespace's own). No other network leaves the namespace.
- The host is not changed: containerd is its own instance (own config, root, state and socket, never
  Docker's), the kubelet's kernel tunables are masked inside the namespace, and the kubelet's cgroup
  root (created in every hierarchy) is removed depth-first by `stop()` (and, if a run was killed, by
  the next start).
Images are all local: a static `pause` (scripts/k8s-build.sh --node builds it from the Kubernetes
source), a provision image of Debian's busybox-static (Kubeless' `prepare` step), and runtime images
copied from Docker with `docker save | ctr import`.

    python3 tests/support/k8s_node.py up STATE [IMAGE...]   (prints the kubeconfig path once Ready)
    python3 tests/support/k8s_node.py down STATE
"""

import ctypes
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
CNI_BIN = "/usr/lib/cni"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
PROVISION_IMAGE = "kubeless-local/provision:busybox"
NODE_NAME = "kl-node"
NODE_IP = "10.250.0.2"
POD_SUBNET = "10.244.0.0/24"
API_PORT = 6443  # inside the namespace
CGROUP_PREFIX = "kubeless-local-node-"
# What the kubelet would write to the host's kernel (pkg/kubelet/cm setupKernelTunables): read-only
# copies with the values it wants are bind-mounted over them inside the namespace.
KERNEL_TUNABLES = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
PREREQUISITES = {
    "unshare": "util-linux",
    "containerd": "containerd",
    "runc": "runc",
    "ctr": "containerd",
    "ip": "iproute2",
    "busybox": "busybox-static",
    "gcc": "gcc",
    "openssl": "openssl",
    "docker": "docker.io",
}


def cri_name(image: str) -> str:
    """A short image name as the CRI names it: in the default domain (the Docker SDK's, never pulled from)."""
    import docker.auth

    return "%s/%s" % (docker.auth.INDEX_NAME, image)


def missing() -> Optional[str]:
    """One line naming the first missing prerequisite of a node, or None."""
    if os.geteuid() != 0:
        return "a Kubernetes node needs root (namespaces, mounts, cgroups)"
    for tool, package in PREREQUISITES.items():
        if not shutil.which(tool):
            return "a Kubernetes node needs %s (Debian package %s)" % (tool, package)
    if not Path(CNI_BIN, "bridge").exists():
        return "a Kubernetes node needs the CNI plugins in %s (Debian package containernetworking-plugins)" % CNI_BIN
    return None


def build() -> Path:
    """The binaries (scripts/k8s-build.sh --node: cached, built once)."""
    done = subprocess.run(["sh", str(SCRIPTS / "k8s-build.sh"), "--node"], capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError("scripts/k8s-build.sh --node failed:\n%s" % done.stderr[-3000:])
    return Path(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ images
def oci_archive(name: str, files: dict, config: dict) -> bytes:
    """An OCI image layout tar of one layer: files maps a path to bytes (mode 0755), to ("link", target)
    for a symlink or to None for a directory (mode 1777)."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for path, content in files.items():
            info = tarfile.TarInfo(path)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o1777
                tar.addfile(info)
            elif isinstance(content, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, content[1]
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o755
                tar.addfile(info, io.BytesIO(content))
    layer_bytes = layer.getvalue()
    blobs = {}

    def blob(data: bytes, media_type: str) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    layer_desc = blob(layer_bytes, "application/vnd.oci.image.layer.v1.tar")
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
    }
    config_desc = blob(json.dumps(image_config).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "config": config_desc, "layers": [layer_desc]}
    manifest_desc = blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    full = name if "." in name.split("/")[0] else cri_name(name)
    manifest_desc["annotations"] = {"io.containerd.image.name": full, "org.opencontainers.image.ref.name": full}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        entries = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}'}
        entries["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [manifest_desc]}).encode()
        for digest, data in blobs.items():
            entries["blobs/sha256/" + digest.split(":")[1]] = data
        for path, data in entries.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def pause_archive(bin_dir: Path) -> bytes:
    return oci_archive(PAUSE_IMAGE, {"pause": (bin_dir / "pause").read_bytes()}, {"Entrypoint": ["/pause"]})


def provision_archive() -> bytes:
    """busybox-static with a link per applet: what Kubeless' prepare step runs (sh, base64, sha256sum,
    unzip, cp, tar) under `sh -c`."""
    busybox = Path(shutil.which("busybox") or "/bin/busybox")
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    files: dict = {"bin/busybox": busybox.read_bytes(), "tmp": None}
    files.update({"bin/%s" % a: ("link", "busybox") for a in applets if a != "busybox"})
    return oci_archive(PROVISION_IMAGE, files, {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]})


# -------------------------------------------------------------------------------------- the node
class Node:
    """One node in `state`; `start()` returns once the API server answers (see `wait_ready`)."""

    def __init__(self, state: Path):
        self.state = Path(state)
        self.process: Optional[subprocess.Popen] = None
        self.port = 0
        self.kubeconfig = self.state / "kubeconfig"
        self.cgroup = "%s%d-%d" % (CGROUP_PREFIX, os.getpid(), int(time.time() * 1000) % 10**9)

    # ---- start
    def start(self, tied: bool = True) -> "Node":
        """tied: the node dies with this process (tests); untied, it outlives it (scripts)."""
        bin_dir = build()
        remove_stale_cgroups()
        self.state.mkdir(parents=True, exist_ok=True)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._write_files(bin_dir)
        create_cgroup(self.cgroup)
        argv = ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"]
        argv += [sys.executable, __file__, "init", str(self.state), str(listener.fileno()), str(bin_dir)]
        with open(self.state / "init.log", "wb") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(listener.fileno(),),
                preexec_fn=_die_with_parent if tied else None,
                start_new_session=not tied,
            )
        listener.close()  # the namespace's init holds it now
        (self.state / "node.pid").write_text("%d\n%s\n" % (self.process.pid, self.cgroup))
        self._import(pause_archive(bin_dir), "pause")
        self._import(provision_archive(), "provision")
        return self

    def _write_files(self, bin_dir: Path) -> None:
        s = self.state
        for folder in ("log/pods", "cni", "cni-ipam", "kubelet", "containerd", "sysctl"):
            (s / folder).mkdir(parents=True, exist_ok=True)
        _certificates(s)
        admin, limited = _tokens(s)
        ca = _b64(s / "ca.crt")
        (s / "kubeconfig").write_text(_kubeconfig("https://127.0.0.1:%d" % self.port, ca, admin, limited))
        (s / "internal.kubeconfig").write_text(_kubeconfig("https://127.0.0.1:%d" % API_PORT, ca, admin, limited))
        os.chmod(s / "kubeconfig", 0o600)
        (s / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        for name, value in KERNEL_TUNABLES.items():
            (s / "sysctl" / name.replace("/", ".")).write_text(value + "\n")
        (s / "containerd.toml").write_text(CONTAINERD_CONFIG.format(state=s, cni_bin=CNI_BIN, pause=PAUSE_IMAGE))
        cni = {
            "cniVersion": "0.4.0",
            "name": "kubeless-local",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(s / "cni-ipam"),
                    },
                }
            ],
        }
        (s / "cni" / "10-kubeless-local.conflist").write_text(json.dumps(cni))
        (s / "kubelet.yaml").write_text(KUBELET_CONFIG.format(state=s, cgroup=self.cgroup))

    def _import(self, archive: bytes, what: str) -> None:
        sock = self.state / "containerd.sock"
        deadline = time.monotonic() + 60
        while not sock.exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("containerd did not start: %s" % self.log_tail("containerd"))
            time.sleep(0.05)
        done = subprocess.run(
            ["ctr", "--address", str(sock), "-n", "k8s.io", "images", "import", "-"],
            input=archive,
            capture_output=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError("ctr import of the %s image failed: %s" % (what, done.stderr.decode()[-2000:]))

    def import_docker_images(self, images: list[str]) -> None:
        """Copy images from the local Docker engine into the node's containerd (`docker save | ctr import`)."""
        sock = str(self.state / "containerd.sock")
        for image in images:
            save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
            done = subprocess.run(
                ["ctr", "--address", sock, "-n", "k8s.io", "images", "import", "--all-platforms", "-"],
                stdin=save.stdout,
                capture_output=True,
                timeout=600,
            )
            if save.stdout:
                save.stdout.close()
            if save.wait(60) != 0 or done.returncode != 0:
                raise RuntimeError("importing %s failed: %s" % (image, done.stderr.decode()[-2000:]))

    # ---- readiness
    def wait_ready(self, timeout: float = 180) -> None:
        """The API server answers /readyz and the node reports Ready (bounded; the logs say why not)."""
        import ssl
        import urllib.request

        token = (self.state / "tokens.csv").read_text().split(",")[0]
        tls = ssl.create_default_context(cafile=str(self.state / "ca.crt"))
        base = "https://127.0.0.1:%d" % self.port
        deadline = time.monotonic() + timeout

        def get(path: str) -> Optional[bytes]:
            request = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + token})
            try:
                with urllib.request.urlopen(request, context=tls, timeout=5) as answer:
                    return answer.read()
            except (OSError, ValueError):
                return None

        while get("/readyz") is None:
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("the API server did not become ready: %s" % self.log_tail("kube-apiserver"))
            time.sleep(0.1)
        while True:
            node = get("/api/v1/nodes/%s" % NODE_NAME)
            conditions = json.loads(node).get("status", {}).get("conditions", []) if node else []
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                return
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("the node did not become Ready: %s" % self.log_tail("kubelet"))
            time.sleep(0.1)

    def _check_alive(self) -> None:
        """RuntimeError when the namespace ended or one of the node's processes exited (init says which)."""
        said = (self.state / "init.log").read_text(errors="replace")
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError("the node's namespace ended: %s" % said[-2000:])
        exited = [line.split()[1] for line in said.splitlines() if line.endswith(")") and " exited " in line]
        if exited:
            raise RuntimeError("%s exited: %s" % (exited[0], self.log_tail(exited[0])))

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.state / "log" / ("%s.log" % name)
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return "%s:\n%s" % (path, "\n".join(text.splitlines()[-lines:]))

    # ---- stop
    def stop(self) -> None:
        """Kill the namespace (every process in it dies with its init), then remove the cgroups."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        remove_cgroup(self.cgroup)
        shutil.rmtree(self.state / "containerd", ignore_errors=True)  # unpacked images: hundreds of MB


def stop_recorded(state: Path) -> None:
    """Stop the node a `up` command left in `state` (by the pid it recorded)."""
    record = state / "node.pid"
    if not record.exists():
        return
    pid_text, cgroup = record.read_text().split()[:2]
    pid = int(pid_text)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 30
    while Path("/proc/%d" % pid).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    remove_cgroup(cgroup)
    shutil.rmtree(state / "containerd", ignore_errors=True)
    record.unlink()


# ------------------------------------------------------------------------------------------ cgroups
def hierarchies() -> list[Path]:
    return [p for p in Path("/sys/fs/cgroup").iterdir() if p.is_dir() and (p / "cgroup.procs").exists()]


def create_cgroup(name: str) -> None:
    """The kubelet's cgroup root, in every hierarchy (cpuset: with its parent's cpus and mems)."""
    for hierarchy in hierarchies():
        path = hierarchy / name
        path.mkdir(exist_ok=True)
        for key in ("cpuset.cpus", "cpuset.mems"):
            if (path / key).exists():
                (path / key).write_text((hierarchy / key).read_text())


def remove_cgroup(name: str, timeout: float = 30) -> None:
    """Remove the tree depth-first in every hierarchy (`unified` included); the dying namespace's processes
    may still be leaving their cgroups, so each rmdir is retried within the bound."""
    deadline = time.monotonic() + timeout
    for hierarchy in hierarchies():
        root = hierarchy / name
        if not root.exists():
            continue
        folders = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for folder in [*folders, root]:
            while True:
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)


def remove_stale_cgroups() -> None:
    """Cgroup roots left by a node whose starter was killed (its pid is gone)."""
    for hierarchy in hierarchies():
        for root in hierarchy.glob(CGROUP_PREFIX + "*"):
            pid = root.name[len(CGROUP_PREFIX) :].split("-")[0]
            if pid.isdigit() and not Path("/proc", pid).exists():
                remove_cgroup(root.name, timeout=5)


# ------------------------------------------------------------------------------ certificates, configs
def _certificates(s: Path) -> None:
    """A CA, the API server's certificate (for 127.0.0.1, the node and the `kubernetes` Service) and the
    service-account key pair."""
    names = "IP:127.0.0.1,IP:10.96.0.1,IP:%s,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default" % NODE_IP
    (s / "apiserver.ext").write_text("subjectAltName=%s,DNS:kubernetes.default.svc\n" % names)
    for line in (
        "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=kubeless-local-node-ca -keyout ca.key -out ca.crt",
        "req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout apiserver.key -out apiserver.csr",
        "x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile apiserver.ext"
        " -out apiserver.crt",
        "genrsa -out sa.key 2048",
        "rsa -in sa.key -pubout -out sa.pub",
    ):
        subprocess.run(["openssl", *line.split()], cwd=s, check=True, capture_output=True, timeout=60)


def _tokens(s: Path):
    admin, limited = os.urandom(16).hex(), os.urandom(16).hex()
    (s / "tokens.csv").write_text("%s,admin,admin,system:masters\n%s,limited,limited\n" % (admin, limited))
    os.chmod(s / "tokens.csv", 0o600)
    return admin, limited


def _b64(path: Path) -> str:
    import base64

    return base64.b64encode(path.read_bytes()).decode()


def _kubeconfig(server: str, ca: str, admin: str, limited: str) -> str:
    """Contexts `kind-test` (admin) and `kind-test-limited` (what RBAC's defaults allow), as scripts/k8s-up.sh."""
    return KUBECONFIG.format(server=server, ca=ca, admin=admin, limited=limited)


KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {{server: "{server}", certificate-authority-data: "{ca}"}}
users:
- name: admin
  user: {{token: "{admin}"}}
- name: limited
  user: {{token: "{limited}"}}
contexts:
- name: kind-test
  context: {{cluster: test, user: admin}}
- name: kind-test-limited
  context: {{cluster: test, user: limited}}
current-context: kind-test
"""

# containerd 1.6 as its own instance: state on the namespace's /run (a tmpfs there), the rest in the
# node's folder. restrict_oom_score_adj: no CAP_SYS_RESOURCE here, or every sandbox fails ("can't get
# final child's PID from pipe").
CONTAINERD_CONFIG = """\
version = 2
root = "{state}/containerd/root"
state = "/run/kubeless-local-containerd"
[grpc]
  address = "{state}/containerd.sock"
[ttrpc]
  address = "/run/kubeless-local-containerd/ttrpc.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{state}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{state}/cni"
"""

KUBELET_CONFIG = """\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup}
containerRuntimeEndpoint: unix://{state}/containerd.sock
failSwapOn: false
resolvConf: ""
readOnlyPort: 0
authentication:
  anonymous: {{enabled: true}}
  webhook: {{enabled: false}}
authorization: {{mode: AlwaysAllow}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
serializeImagePulls: false
nodeStatusUpdateFrequency: 2s
syncFrequency: 5s
"""


# The node's processes, in the namespace (paths hold no blank: the node's folder is a temp folder).
COMMANDS = {
    "containerd": "containerd --config {state}/containerd.toml",
    "etcd": "{bin}/etcd --data-dir {state}/etcd --unsafe-no-fsync --log-level warn"
    " --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379"
    " --listen-peer-urls http://127.0.0.1:2380",
    "kube-apiserver": "{bin}/kube-apiserver --etcd-servers http://127.0.0.1:2379"
    " --bind-address 0.0.0.0 --secure-port {port} --advertise-address {ip}"
    " --tls-cert-file {state}/apiserver.crt --tls-private-key-file {state}/apiserver.key"
    " --client-ca-file {state}/ca.crt --token-auth-file {state}/tokens.csv --authorization-mode RBAC"
    " --service-account-key-file {state}/sa.pub --service-account-signing-key-file {state}/sa.key"
    " --service-account-issuer https://kubernetes.default.svc.cluster.local"
    " --service-cluster-ip-range 10.96.0.0/24 --endpoint-reconciler-type none"
    " --kubelet-preferred-address-types InternalIP --cert-dir {state}/apiserver-certs",
    "kube-controller-manager": "{bin}/kube-controller-manager --kubeconfig {state}/internal.kubeconfig"
    " --authentication-kubeconfig {state}/internal.kubeconfig --authorization-kubeconfig {state}/internal.kubeconfig"
    " --service-account-private-key-file {state}/sa.key --root-ca-file {state}/ca.crt --leader-elect=false"
    " --cert-dir {state}/kcm-certs",
    "kube-scheduler": "{bin}/kube-scheduler --kubeconfig {state}/internal.kubeconfig --leader-elect=false"
    " --authentication-kubeconfig {state}/internal.kubeconfig --authorization-kubeconfig {state}/internal.kubeconfig",
    "kubelet": "{bin}/kubelet --config {state}/kubelet.yaml --kubeconfig {state}/internal.kubeconfig"
    " --root-dir {state}/kubelet --cert-dir {state}/kubelet-pki --hostname-override {node} --node-ip {ip}",
}


def _die_with_parent() -> None:  # in the child, before exec: PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


# ------------------------------------------------------------------ inside the namespace: pid 1
def init(state: Path, fd: int, bin_dir: Path) -> None:
    """The namespace's first process: mounts, links, the node's processes, the API relay; then reaps."""
    listener = socket.socket(fileno=fd)
    sh = lambda *argv: subprocess.run(argv, check=True)  # noqa: E731
    sh("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", "/run")  # containerd's state, runc's, netns
    sh("mount", "--bind", str(state / "log"), "/var/log")  # the kubelet writes pod logs to /var/log/pods
    sh("mount", "--bind", "-o", "ro", str(state / "resolv.conf"), "/etc/resolv.conf")  # no name leaves here
    for name in KERNEL_TUNABLES:
        sh("mount", "--bind", "-o", "ro", str(state / "sysctl" / name.replace("/", ".")), "/proc/sys/" + name)
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", "kl0", "type", "veth", "peer", "name", "kl1")
    sh("ip", "addr", "add", NODE_IP + "/24", "dev", "kl0")
    sh("ip", "link", "set", "kl0", "up")
    sh("ip", "link", "set", "kl1", "up")
    sh("ip", "route", "add", "default", "via", "10.250.0.1", "dev", "kl0", "onlink")
    values = {"bin": bin_dir, "state": state, "port": API_PORT, "node": NODE_NAME, "ip": NODE_IP}
    commands = {name: line.format(**values).split() for name, line in COMMANDS.items()}
    names = {}
    for name, argv in commands.items():
        with open(state / "log" / ("%s.log" % name), "wb") as log:
            names[subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT).pid] = name
        if name == "containerd":  # the kubelet exits at once where its runtime does not answer
            deadline = time.monotonic() + 60
            while not (state / "containerd.sock").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
    threading.Thread(target=relay, args=(listener, API_PORT), daemon=True).start()
    print("init: started %s" % ", ".join(commands), flush=True)
    while True:  # pid 1 reaps every orphan (containerd's shims among them)
        try:
            pid, status = os.wait()
        except ChildProcessError:
            time.sleep(1)
            continue
        if pid in names:
            print("init: %s exited (status %d)" % (names[pid], status), flush=True)


def relay(listener: socket.socket, port: int) -> None:
    """Each connection accepted on the host's 127.0.0.1 socket is spliced to 127.0.0.1:port here."""
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_splice, args=(client, port), daemon=True).start()


def _splice(client: socket.socket, port: int) -> None:
    try:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)

    def pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    back.start()
    pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def main(argv: list[str]) -> int:
    if argv[:1] == ["init"]:
        init(Path(argv[1]), int(argv[2]), Path(argv[3]))
        return 0
    if len(argv) >= 2 and argv[0] == "up":
        reason = missing()
        if reason:
            print("k8s_node: %s" % reason, file=sys.stderr)
            return 2
        node = Node(Path(argv[1]).resolve())
        try:
            node.start(tied=False)
            node.import_docker_images(argv[2:])
            node.wait_ready()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            print("k8s_node: %s" % exc, file=sys.stderr)
            node.stop()
            return 1
        print(node.kubeconfig)
        return 0
    if len(argv) == 2 and argv[0] == "down":
        stop_recorded(Path(argv[1]))
        return 0
    print("usage:\n" + "\n".join(__doc__.strip().splitlines()[-2:]), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
