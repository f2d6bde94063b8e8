"""The real Kubeless v1.0.8 function controller (scripts/kubeless-controller-build.sh) run as a host
process against a test cluster, as it would run in its pod.

It reads only in-cluster config: it runs in a private mount namespace (`unshare -m`, root) where a
temp folder with a real ServiceAccount token (TokenRequest API, RBAC of the shipped Kubeless manifest)
is bind-mounted at /var/run/secrets/kubernetes.io/serviceaccount. It talks to the API server through
apiproxy.py, which serves the two API paths Kubernetes 1.22 removed. It dies with the process that
started it (PR_SET_PDEATHSIG), so a killed test run leaves no controller behind."""

import ctypes
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from apiproxy import Proxy
from kubernetes import client, utils

from kubeless_local.cluster import apply, kind

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# In the private mount namespace: a tmpfs on /var/run (/run where it links there), so nothing is created
# on the host; the token folder bind-mounted at its in-cluster path; then the controller.
IN_NAMESPACE = (
    'mount -t tmpfs -o size=1m tmpfs "$(readlink -f /var/run)" && mkdir -p "$3" && mount --bind "$1" "$3" && exec "$2"'
)


def missing() -> Optional[str]:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return "the Kubeless controller runs in a private mount namespace: needs root and unshare"
    return None


def build() -> Path:
    done = subprocess.run(
        ["sh", str(SCRIPTS / "kubeless-controller-build.sh")], capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        raise RuntimeError("scripts/kubeless-controller-build.sh failed:\n%s" % done.stderr[-3000:])
    return Path(done.stdout.strip().splitlines()[-1]) / "function-controller"


def install_kubeless(target, config: Optional[dict] = None) -> None:
    """The shipped manifest minus the controller's Deployment (the controller runs here, not in a pod);
    `config` replaces keys of kubeless-config (the controller reads it once, at start)."""
    apply.install_crds(target)
    for obj in kind.kubeless_objects():
        if obj["kind"] == "Deployment":
            continue
        if config and obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == "kubeless-config":
            obj["data"].update(config)
        try:
            utils.create_from_dict(target.api, obj)
        except utils.FailToCreateError as exc:
            if any(e.status != 409 for e in exc.api_exceptions):  # 409: there from an earlier module
                raise


@dataclass
class Controller:
    process: subprocess.Popen
    proxy: Proxy
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.proxy.stop()


def start(target, state: Path, folder: Path, binary: Path, timeout: float = 60) -> Controller:
    """The controller on `target`, whose API server's CA and serving key pair are in `state` (the proxy
    serves that certificate); its token folder and log in `folder`. Returns once it has synced."""
    core = client.CoreV1Api(target.api)
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
    status = core.create_namespaced_service_account_token("controller-acct", "kubeless", request).status
    assert status is not None, "the TokenRequest API answered no token"
    token = status.token
    secrets = folder / "serviceaccount"
    secrets.mkdir(parents=True, exist_ok=True)
    (secrets / "token").write_text(str(token))
    shutil.copy(state / "ca.crt", secrets / "ca.crt")
    (secrets / "namespace").write_text("kubeless")
    proxy = Proxy(target.server, str(state / "ca.crt"), str(state / "apiserver.crt"), str(state / "apiserver.key"))
    proxy.start()
    log_path = folder / "controller.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(proxy.port),
        "KUBELESS_NAMESPACE": "kubeless",
        "KUBELESS_CONFIG": "kubeless-config",
    }
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", IN_NAMESPACE, "sh", str(secrets), str(binary)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*argv, SA_DIR], env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
    controller = Controller(process, proxy, log_path)
    deadline = time.monotonic() + timeout
    while "Function controller synced and ready" not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            controller.stop()
            raise RuntimeError("the Kubeless controller did not start:\n%s" % log_path.read_text()[-3000:])
        time.sleep(0.1)
    return controller


def _die_with_parent() -> None:  # in the child, before exec: PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
