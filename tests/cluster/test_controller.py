"""`push` → the real Kubeless v1.0.8 function controller (scripts/kubeless-controller-build.sh) turns the
Function into its ConfigMap, Service and Deployment on a real kube-apiserver (conftest.py).

The controller runs as a host process (kubeless_controller.py: in-cluster config through a private
mount namespace, the API through apiproxy.py). No kubelet runs here, so no pod starts: the test asserts
on the API objects the controller writes (test_node.py runs real pods)."""

import http.client
import json
import ssl
import time
from pathlib import Path

import kubeless_controller
import pytest
import yaml
from apiproxy import Proxy  # tests/cluster is on sys.path (rootdir-relative, no package)
from click.testing import CliRunner
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubeless_local.cluster import apply
from kubeless_local.commands import root as cli

pytestmark = pytest.mark.timeout(900)  # a cold build of the controller takes ~80 s, of the API server minutes

FUNCTION = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: hello
  annotations: {local.kubeless.io/source: hello.py}
spec:
  runtime: python3.11
  handler: hello.hello
  timeout: "30"
  deps: |
    six==1.16.0
  deployment:
    spec:
      template:
        spec:
          containers:
          - resources:
              limits: {memory: 128Mi, cpu: 200m}
              requests: {memory: 64Mi}
"""


def wait_for(what, probe, log: Path, timeout=60.0):
    """probe() until it returns something truthy (ApiException 404 counts as not yet), bounded; the
    failure shows the end of the controller's log."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
            if value:
                return value
        except ApiException as exc:
            if exc.status != 404:
                raise
        if time.monotonic() > deadline:
            pytest.fail("%s: not within %d s; the controller's log:\n%s" % (what, timeout, log.read_text()[-3000:]))
        time.sleep(0.2)


@pytest.fixture
def controller(cluster, tmp_path_factory):
    """The controller for one test: it watches every namespace, so it must not outlive the test."""
    reason = kubeless_controller.missing()
    if reason:
        pytest.skip(reason)
    binary = kubeless_controller.build()
    target = cluster.target()
    kubeless_controller.install_kubeless(target)
    running = kubeless_controller.start(target, cluster.state, tmp_path_factory.mktemp("controller"), binary)
    try:
        yield running.proxy, running.log
    finally:
        running.stop()


def push(*args):
    return CliRunner().invoke(cli.main, ["push", *args], catch_exceptions=False)


def test_push_then_the_controller_deploys_updates_and_deletes(controller, kube_env, namespace, tmp_path):
    proxy, log = controller
    project = tmp_path / "shop"
    project.mkdir()
    (project / "hello.py").write_text("def hello(event, context):\n    return 'hi'\n")
    (project / "hello.yaml").write_text(FUNCTION)
    assert push(str(project), "-n", namespace).exit_code == 0

    target = kube_env.target()
    core, apps = client.CoreV1Api(target.api), client.AppsV1Api(target.api)
    pushed = client.CustomObjectsApi(target.api).get_namespaced_custom_object(
        apply.GROUP, apply.VERSION, namespace, "functions", "hello"
    )
    checksum = pushed["spec"]["checksum"]

    config_map = wait_for("the function's ConfigMap", lambda: core.read_namespaced_config_map("hello", namespace), log)
    assert config_map.data["hello.py"] == "def hello(event, context):\n    return 'hi'\n"
    assert config_map.data["handler"] == "hello.hello"
    assert config_map.data["requirements.txt"] == "six==1.16.0\n"
    assert config_map.metadata.owner_references[0].kind == "Function"

    service = wait_for("the function's Service", lambda: core.read_namespaced_service("hello", namespace), log)
    assert [(p.name, p.port, p.target_port) for p in service.spec.ports] == [("http-function-port", 8080, 8080)]
    assert service.spec.selector["function"] == "hello"

    deployment = wait_for("the function's Deployment", lambda: apps.read_namespaced_deployment("hello", namespace), log)
    pod = deployment.spec.template.spec
    runtime_images = yaml.safe_load(
        core.read_namespaced_config_map("kubeless-config", "kubeless").data["runtime-images"]
    )
    python311 = next(v for r in runtime_images if r["ID"] == "python" for v in r["versions"] if v["version"] == "3.11")
    images = {i["phase"]: i for i in python311["images"]}
    container = pod.containers[0]
    assert container.image == images["runtime"]["image"] == "kubeless-local/python:3.11"
    env = {e.name: e.value for e in container.env}
    assert env["FUNC_HANDLER"] == "hello" and env["MOD_NAME"] == "hello"
    assert env["FUNC_TIMEOUT"] == "30" and env["FUNC_RUNTIME"] == "python3.11"
    assert env["FUNC_MEMORY_LIMIT"] == "128Mi" and env["FUNC_PORT"] == "8080"
    assert env["PYTHONPATH"] == images["runtime"]["env"]["PYTHONPATH"]
    assert container.resources.limits == {"memory": "128Mi", "cpu": "200m"}
    assert [c.name for c in pod.init_containers] == ["prepare", "install"]
    prepare, install = pod.init_containers
    assert "sha256sum -c" in prepare.args[0] and checksum.split(":")[1] in prepare.args[0]
    assert install.image == images["installation"]["image"]
    assert install.args[0].endswith(images["installation"]["command"])

    # Re-push with changed code: the controller updates the ConfigMap (and the checksum the pod checks).
    (project / "hello.py").write_text("def hello(event, context):\n    return 'v2'\n")
    assert push(str(project), "-n", namespace).output == "function.kubeless.io/hello configured\n"
    wait_for(
        "the ConfigMap with the new code",
        lambda: core.read_namespaced_config_map("hello", namespace).data["hello.py"].endswith("'v2'\n"),
        log,
    )

    # Deleting the Function: the controller (its finalizer) deletes the Deployment, Service and ConfigMap.
    client.CustomObjectsApi(target.api).delete_namespaced_custom_object(
        apply.GROUP, apply.VERSION, namespace, "functions", "hello"
    )

    def gone(read):
        try:
            read("hello", namespace)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    wait_for("the Deployment deleted", lambda: gone(apps.read_namespaced_deployment), log)
    wait_for("the Service deleted", lambda: gone(core.read_namespaced_service), log)
    wait_for("the ConfigMap deleted", lambda: gone(core.read_namespaced_config_map), log)
    functions = client.CustomObjectsApi(target.api)

    def read_function(name, ns):
        return functions.get_namespaced_custom_object(apply.GROUP, apply.VERSION, ns, "functions", name)

    wait_for("the Function gone (the controller removed its finalizer)", lambda: gone(read_function), log)
    # Both removed API paths were served by the proxy: the CRD at start-up, the Deployment delete now.
    served = [path.split("?")[0] for _, path in proxy.rewritten]
    assert "/apis/apiextensions.k8s.io/v1beta1/customresourcedefinitions/functions.kubeless.io" in served
    assert "/apis/extensions/v1beta1/namespaces/%s/deployments/hello" % namespace in served


def test_proxy_serves_the_removed_paths_and_passes_the_rest(kubeless, namespace):
    """The proxy alone, with the admin token (no controller): what the 1.34 API server no longer serves."""
    target = kubeless.target()
    state = kubeless.state
    proxy = Proxy(target.server, str(state / "ca.crt"), str(state / "apiserver.crt"), str(state / "apiserver.key"))
    proxy.start()
    try:
        token = (state / "tokens.csv").read_text().split(",")[0]  # the admin's (scripts/k8s-up.sh)
        tls = ssl.create_default_context(cafile=str(state / "ca.crt"))

        def call(port, method, path, body=None):
            """(status, JSON answer) of one request to 127.0.0.1:port."""
            connection = http.client.HTTPSConnection("127.0.0.1", port, context=tls, timeout=30)
            try:
                headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
                connection.request(method, path, body=json.dumps(body) if body else None, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
                return answer.status, json.loads(data) if data.startswith(b"{") else data
            finally:
                connection.close()

        api_port = int(target.server.rsplit(":", 1)[1])
        crd = "/apis/apiextensions.k8s.io/%s/customresourcedefinitions/functions.kubeless.io"
        assert call(api_port, "GET", crd % "v1beta1")[0] == 404  # what the controller gets without the proxy
        status, served = call(proxy.port, "GET", crd % "v1beta1")
        assert status == 200
        assert served["apiVersion"] == "apiextensions.k8s.io/v1beta1" and served["kind"] == "CustomResourceDefinition"
        assert served["metadata"]["name"] == "functions.kubeless.io"

        apps = client.AppsV1Api(target.api)
        labels = {"app": "x"}
        apps.create_namespaced_deployment(
            namespace,
            {
                "metadata": {"name": "x"},
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "x", "image": "x"}]}},
                },
            },
        )
        path = "/apis/extensions/v1beta1/namespaces/%s/deployments/x" % namespace
        assert call(api_port, "DELETE", path)[0] == 404  # the Deployment stays without the proxy
        status, deleted = call(proxy.port, "DELETE", path, {"propagationPolicy": "Background"})
        assert (status, deleted["kind"], deleted["status"]) == (200, "Status", "Success")
        with pytest.raises(ApiException) as gone:
            apps.read_namespaced_deployment("x", namespace)
        assert gone.value.status == 404
        status, passed = call(proxy.port, "GET", "/api/v1/namespaces/%s" % namespace)  # passed through
        assert (status, passed["metadata"]["name"]) == (200, namespace)
        assert [m for m, _ in proxy.rewritten] == ["GET", "DELETE"]
    finally:
        proxy.stop()


def test_a_re_push_takes_back_the_fields_the_controllers_update_took(kubeless, namespace, tmp_path):
    """The controller adds its finalizer by an Update of the whole Function through its own structs, which
    writes `name: ""` into each container: the containers list becomes its field (seen with the real one
    above). Done here by hand, as the controller's field manager, so it runs without root too."""
    project = tmp_path / "shop"
    project.mkdir()
    (project / "hello.py").write_text("def hello(event, context):\n    return 'hi'\n")
    (project / "hello.yaml").write_text(FUNCTION)
    assert push(str(project), "-n", namespace).exit_code == 0
    api = client.CustomObjectsApi(kubeless.target().api)
    stored = api.get_namespaced_custom_object(apply.GROUP, apply.VERSION, namespace, "functions", "hello")
    stored["metadata"]["finalizers"] = ["kubeless.io/function"]
    stored["spec"]["deployment"]["spec"]["template"]["spec"]["containers"][0]["name"] = ""
    api.replace_namespaced_custom_object(
        apply.GROUP, apply.VERSION, namespace, "functions", "hello", stored, field_manager="function-controller"
    )

    (project / "hello.py").write_text("def hello(event, context):\n    return 'v2'\n")
    result = push(str(project), "-n", namespace)
    assert result.output == "function.kubeless.io/hello configured\n"
    after = api.get_namespaced_custom_object(apply.GROUP, apply.VERSION, namespace, "functions", "hello")
    assert after["spec"]["function"].endswith("'v2'\n")
    assert after["metadata"]["finalizers"] == ["kubeless.io/function"]  # the controller's own field stays
    after["metadata"]["finalizers"] = []  # no controller runs here to remove it: the Function must not outlive us
    api.replace_namespaced_custom_object(apply.GROUP, apply.VERSION, namespace, "functions", "hello", after)
    api.delete_namespaced_custom_object(apply.GROUP, apply.VERSION, namespace, "functions", "hello")
    with pytest.raises(ApiException) as deleted:
        api.get_namespaced_custom_object(apply.GROUP, apply.VERSION, namespace, "functions", "hello")
    assert deleted.value.status == 404
