"""`kubeless-local push` without a server: client dry run, kubeconfig and context errors, the guards."""

import json

import pytest
import yaml
from click.testing import CliRunner
from sockets import refusing_port

from kubeless_local.cluster import apply, kubeconfig, render
from kubeless_local.commands import cluster as cluster_commands
from kubeless_local.commands import root as cli

FUNCTION = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: hello
  annotations: {local.kubeless.io/source: handler.py}
spec: {runtime: python3.11, handler: handler.hello, timeout: 30}
"""


@pytest.fixture
def refused_port():
    """A port that refuses every connection until the test ends (no other program can take it meanwhile)."""
    with refusing_port() as port:
        yield port


def write_kubeconfig(path, contexts, current, server="https://127.0.0.1:1"):
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
                "users": [{"name": "u", "user": {"token": "s3cr3t-token"}}],
                "contexts": [
                    {"name": n, "context": {"cluster": "c", "user": "u", "namespace": ns}} for n, ns in contexts
                ],
                "current-context": current,
            }
        )
    )
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "handler.py").write_text("def hello(event, context):\n    return 'hi'\n")
    (folder / "functions.yaml").write_text(FUNCTION)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none" / "config"))
    return folder


def push(*args, stdin=None):
    return CliRunner().invoke(cli.main, ["push", *args], input=stdin, catch_exceptions=False)


def test_client_dry_run_prints_the_yaml_and_contacts_no_server(project):
    result = push(str(project), "--dry-run")
    assert result.exit_code == 0, result.output
    (obj,) = list(yaml.safe_load_all(result.output))
    assert obj["metadata"]["namespace"] == "default"
    assert obj["metadata"]["labels"] == {render.MANAGED_BY_LABEL: "kubeless-local", render.PROJECT_LABEL: "proj"}
    assert "annotations" not in obj["metadata"]
    assert obj["spec"]["function-content-type"] == "text" and obj["spec"]["timeout"] == "30"
    assert obj["spec"]["function"] == "def hello(event, context):\n    return 'hi'\n"


def test_dry_run_flag_before_the_path_keeps_the_path(project):
    result = push("--dry-run", str(project))
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["kind"] == "Function"
    bad = push("--dry-run=later", str(project))
    assert bad.exit_code == 2 and "'later' is not one of 'none', 'client', 'server'" in bad.output


def test_client_dry_run_json_and_namespace(project):
    result = push(str(project), "--dry-run=client", "-n", "prod", "-o", "json")
    assert result.exit_code == 0, result.output
    listing = json.loads(result.output)
    assert listing["kind"] == "List" and listing["items"][0]["metadata"]["namespace"] == "prod"


def test_namespace_flag_that_contradicts_the_manifest_is_refused(project):
    (project / "functions.yaml").write_text(FUNCTION.replace("  name: hello\n", "  name: hello\n  namespace: a\n"))
    result = push(str(project), "--dry-run", "-n", "b")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: Function hello has metadata.namespace a but --namespace is b; remove one of them"
    )


def test_no_kubeconfig_is_one_line(project, tmp_path):
    result = push(str(project))
    assert result.exit_code == 2
    assert result.output == (
        "error: no kubeconfig: %s not found; set KUBECONFIG or create a cluster (`kubeless-local cluster up`)\n"
        % (tmp_path / "none" / "config")
    )


def test_context_not_found_lists_the_contexts(project, tmp_path, monkeypatch):
    config = write_kubeconfig(tmp_path / "kc", [("kind-a", ""), ("prod", "")], "kind-a")
    monkeypatch.setenv("KUBECONFIG", str(config))
    result = push(str(project), "--context", "nope")
    assert result.exit_code == 2
    assert result.output == "error: context 'nope' not found in kubeconfig %s; available: kind-a, prod\n" % config


def test_remote_context_without_yes_and_no_terminal_is_refused(project, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", [("prod", "")], "prod")))
    result = push(str(project))
    assert result.exit_code == 2
    assert result.output == (
        "error: context prod (https://127.0.0.1:1) is not a local cluster; pass --yes to push there\n"
    )
    assert "s3cr3t" not in result.output


def test_remote_context_asks_first_and_no_means_nothing_is_sent(project, tmp_path, monkeypatch, refused_port):
    server = "https://127.0.0.1:%d" % refused_port  # were anything sent, the push would fail as unreachable
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", [("prod", "")], "prod", server)))
    monkeypatch.setattr(cluster_commands, "interactive", lambda: True)
    result = push(str(project), stdin="n\n")
    assert result.exit_code == 1
    assert result.output == "Context prod (%s) is not a local cluster. Push there? [y/N]: n\nAborted!\n" % server
    yes = push(str(project), stdin="y\n")
    assert yes.exit_code == 2 and "cannot reach the API server of context prod" in yes.output


def test_unreachable_api_server_is_one_line_without_credentials(project, tmp_path, monkeypatch, refused_port):
    server = "https://127.0.0.1:%d" % refused_port  # nothing listens there
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", [("kind-x", "")], "kind-x", server)))
    result = push(str(project))
    assert result.exit_code == 2
    assert result.output == ("error: cannot reach the API server of context kind-x (%s): Connection refused\n" % server)
    assert "s3cr3t" not in result.output


def test_context_namespace_is_the_default(project, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", [("kind-x", "team")], "kind-x")))
    result = push(str(project), "--dry-run")
    assert yaml.safe_load(result.output)["metadata"]["namespace"] == "team"


@pytest.mark.parametrize(
    ("context", "local"),
    [("kind-dev", True), ("minikube", True), ("k3d-x", True), ("docker-desktop", True), ("gke_p_z_c", False)],
)
def test_local_contexts(context, local):
    assert kubeconfig.Target(api=None, context=context, server="", namespace="default").is_local is local  # type: ignore[arg-type]


def test_conflict_message_names_the_field_and_the_manager():
    body = {
        "message": 'Apply failed with 1 conflict: conflict with "kubectl-edit" using kubeless.io/v1beta1: .spec.timeout',
        "details": {
            "causes": [{"message": 'conflict with "kubectl-edit" using kubeless.io/v1beta1', "field": ".spec.timeout"}]
        },
    }
    applier = apply.Applier.__new__(apply.Applier)
    assert applier._conflict(body, "apply Function hello in namespace default") == (
        'apply Function hello in namespace default: .spec.timeout (owned by "kubectl-edit") is managed by another'
        " field manager; pass --force-conflicts to take it over"
    )


def test_shipped_crds_cover_every_pushed_kind():
    crds = list(yaml.safe_load_all((render.Path(render.__file__).parent / "manifests" / "crds.yaml").read_text()))
    kinds = {c["spec"]["names"]["kind"]: c["spec"]["names"]["plural"] for c in crds}
    assert kinds == {k: p for k, p in apply.PLURALS.items() if k != "KinesisTrigger"}
    for crd in crds:
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
        spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        assert spec["x-kubernetes-preserve-unknown-fields"] is True and spec["properties"]


def test_the_sources_a_functions_pod_needs_are_its_volumes_env_and_envfrom_but_optional_ones():
    from kubeless_local.cluster.push import sources_needed

    pod = {
        "volumes": [{"name": "v", "secret": {"secretName": "tls"}}, {"name": "c", "configMap": {"name": "conf"}},
                    {"name": "o", "secret": {"secretName": "maybe", "optional": True}}],
        "containers": [{
            "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k"}}},
                    {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "conf", "key": "k"}}},
                    {"name": "C", "value": "plain"}],
            "envFrom": [{"secretRef": {"name": "db"}}, {"configMapRef": {"name": "flags", "optional": True}}],
        }],
    }  # fmt: skip
    function = {"spec": {"deployment": {"spec": {"template": {"spec": pod}}}}}
    assert sources_needed(function) == [("Secret", "tls"), ("ConfigMap", "conf"), ("Secret", "db")]
    assert sources_needed({"spec": {}}) == []
