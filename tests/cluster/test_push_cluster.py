"""`kubeless-local push` against a real kube-apiserver + etcd (tests/cluster/conftest.py)."""

import pytest
import yaml
from click.testing import CliRunner
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubeless_local.cluster import apply
from kubeless_local.commands import root as cli

# The first test may wait for a cold build of kube-apiserver and etcd (5-13 min; then cached).
pytestmark = pytest.mark.timeout(1800)

FUNCTION = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: %s
  labels: {team: a}
  annotations: {local.kubeless.io/source: %s.py}
spec: {runtime: python3.11, handler: %s.hello, timeout: "30"}
"""


def add_function(folder, name, code="def hello(event, context):\n    return 'hi'\n"):
    (folder / ("%s.py" % name)).write_text(code)
    (folder / ("%s.yaml" % name)).write_text(FUNCTION % (name, name, name))


def push(*args):
    return CliRunner().invoke(cli.main, ["push", *args], catch_exceptions=False)


def get(cluster, namespace, name, kind="Function"):
    api = client.CustomObjectsApi(cluster.target().api)
    return api.get_namespaced_custom_object(apply.GROUP, apply.VERSION, namespace, apply.PLURALS[kind], name)


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "shop"
    folder.mkdir()
    add_function(folder, "hello")
    return folder


def test_create_update_and_no_op(kubeless, namespace, project):
    result = push(str(project), "-n", namespace)
    assert result.output == "function.kubeless.io/hello created\n", result.output
    stored = get(kubeless, namespace, "hello")
    assert stored["spec"]["function"] == "def hello(event, context):\n    return 'hi'\n"
    assert stored["spec"]["function-content-type"] == "text"
    assert stored["metadata"]["labels"]["kubeless-local.io/project"] == "shop"
    assert [m["manager"] for m in stored["metadata"]["managedFields"]] == ["kubeless-local"]

    again = push(str(project), "-n", namespace)
    assert again.output == "function.kubeless.io/hello unchanged\n"
    unchanged = get(kubeless, namespace, "hello")
    assert unchanged["metadata"]["generation"] == stored["metadata"]["generation"]
    assert unchanged["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]

    (project / "hello.py").write_text("def hello(event, context):\n    return 'v2'\n")
    assert push(str(project), "-n", namespace).output == "function.kubeless.io/hello configured\n"
    updated = get(kubeless, namespace, "hello")
    assert updated["metadata"]["generation"] == stored["metadata"]["generation"] + 1
    assert updated["spec"]["checksum"] != stored["spec"]["checksum"]


def test_server_dry_run_stores_nothing(kubeless, namespace, project):
    result = push(str(project), "-n", namespace, "--dry-run=server", "-o", "yaml")
    assert result.exit_code == 0, result.output
    assert "name: hello" in result.output and "uid:" in result.output  # what the server would store
    with pytest.raises(ApiException) as missing:
        get(kubeless, namespace, "hello")
    assert missing.value.status == 404


def test_prune_deletes_only_this_projects_objects_gone_locally(kubeless, namespace, project, tmp_path):
    add_function(project, "bye")
    other = tmp_path / "other"
    other.mkdir()
    add_function(other, "elsewhere")
    assert push(str(project), "-n", namespace).exit_code == 0
    assert push(str(other), "-n", namespace).exit_code == 0
    (project / "bye.yaml").unlink()
    result = push(str(project), "-n", namespace, "--prune")
    assert result.output == "function.kubeless.io/hello unchanged\nfunction.kubeless.io/bye pruned\n"
    with pytest.raises(ApiException) as gone:
        get(kubeless, namespace, "bye")
    assert gone.value.status == 404
    assert get(kubeless, namespace, "elsewhere")["metadata"]["name"] == "elsewhere"  # another project's


def test_field_owned_by_another_manager_is_a_conflict_until_forced(kubeless, namespace, project):
    assert push(str(project), "-n", namespace).exit_code == 0
    api = client.CustomObjectsApi(kubeless.target().api)
    edit = {"apiVersion": "kubeless.io/v1beta1", "kind": "Function", "metadata": {"name": "hello"}}
    edit["spec"] = {"timeout": "99"}
    api.patch_namespaced_custom_object(
        "kubeless.io",
        "v1beta1",
        namespace,
        "functions",
        "hello",
        edit,
        field_manager="someone-else",
        force=True,
        _content_type=apply.APPLY_PATCH,
    )
    result = push(str(project), "-n", namespace)
    assert result.exit_code == 2
    assert result.output == (
        'error: apply Function hello in namespace %s: .spec.timeout (owned by "someone-else") is managed by'
        " another field manager; pass --force-conflicts to take it over\n" % namespace
    )
    forced = push(str(project), "-n", namespace, "--force-conflicts")
    assert forced.output == "function.kubeless.io/hello configured\n"
    assert get(kubeless, namespace, "hello")["spec"]["timeout"] == "30"


def test_rbac_denied_is_one_line(kubeless, namespace, project):
    result = push(str(project), "-n", namespace, "--context", "kind-test-limited")
    assert result.exit_code == 2
    assert result.output.startswith("error: context kind-test-limited (https://127.0.0.1:")
    assert (
        'RBAC denied list functions in namespace %s: functions.kubeless.io is forbidden: User "limited"' % namespace
        in (result.output)
    )
    assert result.output.count("\n") == 1


def test_kubeless_not_installed(no_kubeless, project):
    result = push(str(project))
    assert result.exit_code == 2
    assert result.output == (
        "error: Kubeless is not installed in this cluster: run `kubeless-local cluster up` or install Kubeless\n"
    )


def test_trigger_without_its_crd_names_the_kind(kubeless, namespace, project):
    (project / "k.yaml").write_text(
        "apiVersion: kubeless.io/v1beta1\nkind: KinesisTrigger\nmetadata: {name: k}\nspec: {function-name: hello}\n"
    )
    result = push(str(project), "-n", namespace)
    assert result.exit_code == 2
    assert "the KinesisTrigger CRD is not installed in this cluster" in result.output


def test_triggers_are_applied_as_written(kubeless, namespace, project):
    (project / "t.yaml").write_text(
        "apiVersion: kubeless.io/v1beta1\nkind: HTTPTrigger\nmetadata: {name: web}\n"
        "spec: {function-name: hello, path: greet, cors-enable: true}\n---\n"
        "apiVersion: kubeless.io/v1beta1\nkind: CronJobTrigger\nmetadata: {name: tick}\n"
        "spec: {function-name: hello, schedule: '*/5 * * * *', payload: {a: [1, 2]}}\n"
    )
    result = push(str(project), "-n", namespace)
    assert result.output.splitlines() == [
        "function.kubeless.io/hello created",
        "httptrigger.kubeless.io/web created",
        "cronjobtrigger.kubeless.io/tick created",
        "ingress.networking.k8s.io/web created (HTTPTrigger web as a networking.k8s.io/v1 Ingress)",
    ]
    assert get(kubeless, namespace, "web", "HTTPTrigger")["spec"] == {
        "function-name": "hello",
        "path": "greet",
        "cors-enable": True,
    }
    assert get(kubeless, namespace, "tick", "CronJobTrigger")["spec"]["payload"] == {"a": [1, 2]}


def test_wait_gives_up_on_a_deployment_that_never_comes(kubeless, namespace, project):
    from kubeless_local.cluster import push as pusher
    from kubeless_local.errors import UserError

    (result,) = pusher.push(kubeless.target(), project, namespace)
    with pytest.raises(UserError) as failed:
        list(pusher.wait_and_call(kubeless.target(), [result], timeout=0.5, poll=0.1))
    assert str(failed.value) == (
        "Function hello: its Deployment is not available after 0 s; see `kubectl -n %s describe deployment hello`"
        " and the Kubeless controller's logs" % namespace
    )


def test_wait_then_calls_through_the_service_proxy(kubeless, namespace, project):
    """No kubelet runs: the Deployment (carrying the pushed checksum, as the controller writes it) and its
    rolled-out status are written by hand; the Service has no endpoint (no pod), so the API server's
    proxy cannot route the call, which is what the call reports (test_node.py calls real pods)."""
    from kubeless_local.cluster import push as pusher
    from kubeless_local.errors import UserError

    target = kubeless.target()
    (result,) = pusher.push(target, project, namespace)
    labels = {"function": "hello"}
    checksum = result.object["spec"]["checksum"].split(":")[1]  # the controller puts it in the prepare step
    prepare = {"name": "prepare", "image": "unzip", "args": ["echo '%s  /src/hello.py' > /tmp/func.sha256" % checksum]}
    containers = {"initContainers": [prepare], "containers": [{"name": "hello", "image": "runtime"}]}
    pod = {"metadata": {"labels": labels}, "spec": containers}
    deployment = {"metadata": {"name": "hello"}, "spec": {"selector": {"matchLabels": labels}, "template": pod}}
    apps, core = client.AppsV1Api(target.api), client.CoreV1Api(target.api)
    apps.create_namespaced_deployment(namespace, deployment)
    rolled_out = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}
    apps.patch_namespaced_deployment_status("hello", namespace, {"status": {**rolled_out, "availableReplicas": 1}})
    port = {"name": "http-function-port", "port": 8080, "targetPort": 8080}
    core.create_namespaced_service(
        namespace, {"metadata": {"name": "hello"}, "spec": {"ports": [port], "selector": labels}}
    )
    with pytest.raises(UserError) as failed:
        list(pusher.wait_and_call(target, [result], timeout=30, poll=0.1))
    assert str(failed.value) == 'Function hello: the call answered 404 Not Found: services "hello" not found'


def test_server_dry_run_reports_the_servers_validation_error(kubeless, namespace, project):
    (project / "t.yaml").write_text(
        "apiVersion: kubeless.io/v1beta1\nkind: HTTPTrigger\nmetadata: {name: web}\n"
        "spec: {function-name: hello, cors-enable: 'yes'}\n"
    )
    result = push(str(project), "-n", namespace, "--dry-run=server")
    assert result.exit_code == 2
    assert result.output.startswith("error: context kind-test (https://127.0.0.1:")
    # Server-side apply checks the CRD's schema types while it merges (the API server answers 500 for it).
    assert "apply HTTPTrigger web in namespace %s failed (" % namespace in result.output
    assert result.output.rstrip().endswith(".spec.cors-enable: expected boolean, got &{yes}")
    with pytest.raises(ApiException):  # nothing stored, not even the valid Function
        get(kubeless, namespace, "hello")


def test_rejected_credentials_are_one_line_without_the_token(kubeless, project, tmp_path, monkeypatch):
    config = yaml.safe_load(kubeless.kubeconfig.read_text())
    config["users"][0]["user"]["token"] = "not-the-token"
    (tmp_path / "kc").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kc"))
    result = push(str(project))
    assert result.exit_code == 2
    assert result.output.startswith("error: context kind-test (https://127.0.0.1:")
    assert result.output.endswith("): the API server did not accept the credentials (401 Unauthorized)\n")
    assert "not-the-token" not in result.output


# kubeless-config's runtime-images as the stock Kubeless v1.0.8 manifest has them (a part: the IDs and versions)
STOCK_RUNTIMES = [
    {"ID": "python", "versions": [{"version": v} for v in ("2.7", "3.6", "3.7", "3.8")]},
    {"ID": "nodejs", "versions": [{"version": v} for v in ("10", "12", "14")]},
    {"ID": "go", "versions": [{"version": v} for v in ("1.13", "1.14")]},
]


@pytest.fixture
def stock_kubeless_config(kubeless):
    """A kubeless-config that cannot run python3.11 (the stock one); the one there before (the controller
    test installs the project's) is put back afterwards."""
    core = client.CoreV1Api(kubeless.target().api)
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="kubeless")))
    except ApiException as exc:
        if exc.status != 409:  # there already
            raise
    stock = {"runtime-images": yaml.safe_dump(STOCK_RUNTIMES)}
    try:
        before = core.read_namespaced_config_map("kubeless-config", "kubeless")
    except ApiException as exc:
        if exc.status != 404:
            raise
        before = None
    if before is None:
        meta = client.V1ObjectMeta(name="kubeless-config")
        core.create_namespaced_config_map("kubeless", client.V1ConfigMap(metadata=meta, data=stock))
    else:
        core.patch_namespaced_config_map("kubeless-config", "kubeless", {"data": stock})
    try:
        yield kubeless
    finally:
        if before is None:
            core.delete_namespaced_config_map("kubeless-config", "kubeless")
        else:
            old = {"runtime-images": (before.data or {}).get("runtime-images")}
            core.patch_namespaced_config_map("kubeless-config", "kubeless", {"data": old})


def test_a_runtime_the_cluster_cannot_run_is_refused_before_applying(stock_kubeless_config, namespace, project):
    result = push(str(project), "-n", namespace, "--wait")
    assert result.exit_code == 2
    assert result.output == (
        "error: Function hello: runtime python3.11 is not one this cluster's Kubeless runs (kubeless-config"
        " runtime-images: python2.7, python3.6, python3.7, python3.8, nodejs10, nodejs12, nodejs14, go1.13, go1.14);"
        " `kubeless-local cluster up` adds the project's runtime images (any cluster: see docs/push.md), or use"
        " runtime python3.8 (dev runs it as python3.11)\n"
    )
    with pytest.raises(ApiException) as missing:
        get(stock_kubeless_config, namespace, "hello")
    assert missing.value.status == 404  # nothing applied


def kubeless_namespace(target):
    """The `kubeless` namespace, made where no test made it yet."""
    core = client.CoreV1Api(target.api)
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="kubeless")))
    except ApiException as exc:
        if exc.status != 409:
            raise


def silent_controller_message(target, result):
    from kubeless_local.cluster import push as pusher
    from kubeless_local.errors import UserError

    with pytest.raises(UserError) as failed:
        list(pusher.wait_and_call(target, [result], timeout=60, poll=0.1, controller_timeout=0.5))
    return str(failed.value)


def test_wait_says_when_no_kubeless_controller_is_installed(kubeless, namespace, project):
    from kubeless_local.cluster import push as pusher

    target = kubeless.target()
    (result,) = pusher.push(target, project, namespace)
    assert silent_controller_message(target, result) == (
        "Function hello: the Kubeless controller has not taken it within 0 s: there is no Deployment"
        " kubeless-controller-manager in namespace kubeless (Kubeless is not installed there; `kubeless-local"
        " cluster up` installs it, or see docs/push.md)"
    )


def test_wait_says_when_the_kubeless_controller_is_not_ready(kubeless, namespace, project):
    """As on Kubernetes 1.22 and later, where the v1.0.8 controller exits at start."""
    from kubeless_local.cluster import push as pusher

    target = kubeless.target()
    kubeless_namespace(target)
    apps = client.AppsV1Api(target.api)
    labels = {"kubeless": "controller"}
    pod = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "controller"}]}}
    spec = {"replicas": 1, "selector": {"matchLabels": labels}, "template": pod}
    apps.create_namespaced_deployment("kubeless", {"metadata": {"name": "kubeless-controller-manager"}, "spec": spec})
    try:
        (result,) = pusher.push(target, project, namespace)
        assert silent_controller_message(target, result) == (
            "Function hello: the Kubeless controller has not taken it within 0 s: Deployment"
            " kubeless/kubeless-controller-manager has 0 of 1 replicas ready (the Kubeless v1.0.8 controller exits"
            " at start on Kubernetes 1.22 and later: docs/push.md); its log: `kubectl -n kubeless logs"
            " deployment/kubeless-controller-manager`"
        )
    finally:
        apps.delete_namespaced_deployment("kubeless-controller-manager", "kubeless")


def test_wait_says_when_the_controller_takes_a_function_but_never_deploys_the_pushed_code(kubeless, namespace, project):
    """A controller that takes the Function (its finalizer) and keeps a Deployment of other code, as a
    controller that does not write the pushed checksum into its prepare step would."""
    from kubeless_local.cluster import push as pusher

    target = kubeless.target()
    (result,) = pusher.push(target, project, namespace)
    custom = client.CustomObjectsApi(target.api)
    custom.patch_namespaced_custom_object(
        apply.GROUP, apply.VERSION, namespace, "functions", "hello", {"metadata": {"finalizers": [pusher.FINALIZER]}}
    )
    labels = {"function": "hello"}
    pod = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "hello", "image": "runtime"}]}}
    deployment = {"metadata": {"name": "hello"}, "spec": {"selector": {"matchLabels": labels}, "template": pod}}
    client.AppsV1Api(target.api).create_namespaced_deployment(namespace, deployment)
    try:
        assert silent_controller_message(target, result) == (
            "Function hello: the Kubeless controller took it but did not update its Deployment to the pushed code"
            " within 0 s; its log says why: `kubectl -n kubeless logs deployment/kubeless-controller-manager`"
        )
    finally:
        custom.patch_namespaced_custom_object(
            apply.GROUP, apply.VERSION, namespace, "functions", "hello", {"metadata": {"finalizers": []}}
        )


def test_an_error_part_way_says_what_was_applied_before_it(kubeless, namespace, project):
    add_function(project, "later")
    assert push(str(project), "-n", namespace).exit_code == 0
    edit = {"apiVersion": "kubeless.io/v1beta1", "kind": "Function", "metadata": {"name": "later"}}
    edit["spec"] = {"timeout": "99"}
    client.CustomObjectsApi(kubeless.target().api).patch_namespaced_custom_object(
        "kubeless.io",
        "v1beta1",
        namespace,
        "functions",
        "later",
        edit,
        field_manager="someone-else",
        force=True,
        _content_type=apply.APPLY_PATCH,
    )
    (project / "hello.py").write_text("def hello(event, context):\n    return 'v2'\n")
    (project / "zz.yaml").write_text(FUNCTION % ("zz", "hello", "hello"))
    result = push(str(project), "-n", namespace)
    assert result.exit_code == 2
    assert result.output == (
        'error: apply Function later in namespace %s: .spec.timeout (owned by "someone-else") is managed by'
        " another field manager; pass --force-conflicts to take it over (applied before it: Function hello;"
        " not applied: Function zz)\n" % namespace
    )


NEEDS_SOURCES = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: %s
  annotations: {local.kubeless.io/source: %s.py}
spec:
  runtime: python3.11
  handler: %s.hello
  deployment:
    spec:
      template:
        spec:
          containers:
          - env:
            - {name: PASSWORD, valueFrom: {secretKeyRef: {name: db, key: password}}}
            - {name: MAYBE, valueFrom: {secretKeyRef: {name: absent, key: x, optional: true}}}
            envFrom:
            - configMapRef: {name: flags}
"""


def test_a_secret_or_configmap_the_namespace_lacks_is_said_with_the_command_that_makes_it(kubeless, namespace, project):
    """Its pod would not start (CreateContainerConfigError); `dev` reads secrets/ and configmaps/ in the project,
    which push does not send: the line says how to make each from its folder. An optional one is not said."""
    (project / "hello.yaml").write_text(NEEDS_SOURCES % ("hello", "hello", "hello"))
    (project / "secrets" / "db").mkdir(parents=True)
    (project / "secrets" / "db" / "password").write_text("s3cret")
    result = push(str(project), "-n", namespace)
    assert result.exit_code == 0, result.output
    secret_dir = project / "secrets" / "db"
    assert (
        "warning: Function hello needs Secret db, which namespace %s does not have: its pod will not start; create it "
        "from %s: `kubectl -n %s create secret generic db --from-file=%s`"
        % (namespace, secret_dir, namespace, secret_dir)
    ) in result.output
    assert (
        "warning: Function hello needs ConfigMap flags, which namespace %s does not have: its pod will not start; "
        "create it in the cluster" % namespace
    ) in result.output
    assert "absent" not in result.output
    core = client.CoreV1Api(kubeless.target().api)
    core.create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="db"), string_data={"password": "s3cret"})
    )
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="flags"), data={})
    )
    again = push(str(project), "-n", namespace)
    assert again.exit_code == 0 and "warning" not in again.output, again.output
