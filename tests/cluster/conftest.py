"""Two clusters for the session, each with a kubeconfig whose context `kind-test` holds the admin token
and `kind-test-limited` a token that RBAC's defaults allow nothing of kubeless.io:
- `cluster`: a real etcd + kube-apiserver (scripts/k8s-up.sh, built once by scripts/k8s-build.sh), no
  controller and no kubelet: the API objects alone (~4 s to start);
- `node` (per module): a whole node (tests/support/k8s_node.py: pods run) with Kubeless and its real
  controller (kubeless_controller.py), for what only a running function shows (~5 s, plus the images
  it imports). It does not replace `cluster`: those tests need an API server where no controller acts."""

import itertools
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import k8s_node  # tests/support
import kubeless_controller  # tests/cluster
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from processes import undone_at_exit  # tests/support

from kubeless_local.cluster import apply, kubeconfig

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
COUNTER = itertools.count()


@dataclass
class Cluster:
    state: Path
    kubeconfig: Path

    def target(self, context="kind-test"):
        return kubeconfig.connect(context, str(self.kubeconfig))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("k8s")
    # etcd and the API server are stopped even when pytest is killed (SIGTERM, kill -9) before its teardown
    with undone_at_exit(["sh", str(SCRIPTS / "k8s-down.sh"), str(state)]):
        # a cold build of the binaries takes 5-13 min; cached, the start takes ~4 s
        up = subprocess.run(
            ["sh", str(SCRIPTS / "k8s-up.sh"), str(state)], capture_output=True, text=True, timeout=1800
        )
        if up.returncode != 0:
            pytest.fail("scripts/k8s-up.sh failed:\n%s" % up.stderr[-3000:])
        yield Cluster(state, Path(up.stdout.strip().splitlines()[-1]))


@pytest.fixture
def kube_env(cluster, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    return cluster


@pytest.fixture
def kubeless(kube_env):
    """The shipped Kubeless CRDs are installed (a no-op when they are)."""
    apply.install_crds(kube_env.target())
    return kube_env


@pytest.fixture
def no_kubeless(kube_env):
    """No Kubeless CRD in the cluster: deleted, and the kubeless.io group no longer served."""
    target = kube_env.target()
    extensions = client.ApiextensionsV1Api(target.api)
    for plural in (p for k, p in apply.PLURALS.items() if k != "KinesisTrigger"):
        try:
            extensions.delete_custom_resource_definition("%s.kubeless.io" % plural)
        except ApiException as exc:
            if exc.status != 404:  # 404: not installed, nothing to delete
                raise
    api = client.CustomObjectsApi(target.api)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            api.get_api_resources(apply.GROUP, apply.VERSION)
        except ApiException as exc:
            if exc.status == 404:
                return kube_env
        time.sleep(0.2)
    pytest.fail("the kubeless.io group is still served 60 s after its CRDs were deleted")


@pytest.fixture
def namespace(kubeless):
    """A fresh namespace per test, so tests never see each other's objects."""
    name = "t%d-%d" % (int(time.time()) % 100000, next(COUNTER))
    client.CoreV1Api(kubeless.target().api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
    )
    return name


# ----------------------------------------------------------------------------- a real node (pods run)
@dataclass
class Node:
    """A node Ready, Kubeless installed with the project's runtime images (kubeless-config's provision
    image: the node's busybox one) and the real controller running on the host."""

    node: "k8s_node.Node"
    controller: "kubeless_controller.Controller"
    imported: set

    @property
    def state(self) -> Path:
        return self.node.state

    @property
    def kubeconfig(self) -> Path:
        return self.node.kubeconfig

    def target(self, context="kind-test"):
        return kubeconfig.connect(context, str(self.kubeconfig))

    def images(self, *images):
        """Copy runtime images from Docker into the node, once each (`docker save | ctr import`)."""
        wanted = [i for i in images if i not in self.imported]
        self.node.import_docker_images(wanted)
        self.imported.update(wanted)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """Per module (only test_node.py uses it): the node, its pods and the controller stop when that
    module ends, not after the rest of the suite."""
    reason = k8s_node.missing() or kubeless_controller.missing()
    if reason:
        pytest.skip(reason)
    binary = kubeless_controller.build()
    started = k8s_node.Node(tmp_path_factory.mktemp("node"))
    running = None
    try:
        started.start()
        started.wait_ready()
        target = kubeconfig.connect("kind-test", str(started.kubeconfig))
        kubeless_controller.install_kubeless(target, {"provision-image": k8s_node.PROVISION_IMAGE})
        running = kubeless_controller.start(target, started.state, tmp_path_factory.mktemp("node-controller"), binary)
        yield Node(started, running, set())
    except RuntimeError as exc:
        pytest.fail(str(exc))
    finally:
        if running is not None:
            running.stop()
        started.stop()


@pytest.fixture
def node_env(node, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(node.kubeconfig))
    return node


@pytest.fixture
def node_namespace(node_env):
    """A fresh namespace on the node per test."""
    name = "n%d-%d" % (int(time.time()) % 100000, next(COUNTER))
    namespace = client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
    client.CoreV1Api(node_env.target().api).create_namespace(namespace)
    return name
