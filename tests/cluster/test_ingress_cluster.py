"""push's Ingress of each HTTPTrigger (networking.k8s.io/v1) accepted by a real kube-apiserver: every golden
case of tests/unit/test_ingress.py with a server-side dry run, and one applied for real."""

import json
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from kubernetes import client

from kubeless_local.commands import root as cli

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
import test_ingress  # the golden cases, shared

pytestmark = pytest.mark.timeout(1800)  # the first test may wait for a cold build of kube-apiserver


def push(*args):
    return CliRunner().invoke(cli.main, ["push", *args], catch_exceptions=False)


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "hello.py").write_text("def hello(event, context):\n    return 'hi'\n")
    (folder / "hello.yaml").write_text(
        "apiVersion: kubeless.io/v1beta1\nkind: Function\nmetadata:\n  name: hello\n"
        "  annotations: {local.kubeless.io/source: hello.py}\nspec: {runtime: python3.11, handler: hello.hello}\n"
    )
    return folder


def test_every_golden_ingress_passes_a_server_side_dry_run(kubeless, namespace, project):
    documents = []
    for index, case in enumerate(sorted(test_ingress.CASES)):
        document = test_ingress.trigger_document(case)
        document["metadata"]["name"] = case
        document["spec"]["host-name"] = "h%d.example.com" % index  # one route each
        documents.append(document)
    (project / "triggers.yaml").write_text(yaml.safe_dump_all(documents))
    result = push(str(project), "-n", namespace, "--dry-run=server", "-o", "json")
    assert result.exit_code == 0, result.output
    stored = [o for o in json.loads(result.output)["items"] if o["kind"] == "Ingress"]
    assert sorted(o["metadata"]["name"] for o in stored) == sorted(test_ingress.CASES)
    for ingress in stored:
        assert ingress["metadata"]["uid"]  # what the server would store, validated
        assert ingress["spec"]["ingressClassName"] in ("nginx", "traefik", "kong")


def test_push_applies_the_ingress_and_says_so(kubeless, namespace, project):
    (project / "web.yaml").write_text(yaml.safe_dump(test_ingress.trigger_document("nginx-cors-auth-tls")))
    result = push(str(project), "-n", namespace)
    assert result.output.splitlines() == [
        "function.kubeless.io/hello created",
        "httptrigger.kubeless.io/web created",
        "ingress.networking.k8s.io/web created (HTTPTrigger web as a networking.k8s.io/v1 Ingress)",
    ], result.output
    ingress = client.NetworkingV1Api(kubeless.target().api).read_namespaced_ingress("web", namespace)
    assert ingress.spec.ingress_class_name == "nginx"
    assert ingress.spec.rules[0].http.paths[0].path == "/api"
    assert ingress.metadata.annotations["nginx.ingress.kubernetes.io/auth-secret"] == "users"
    again = push(str(project), "-n", namespace)
    assert "ingress.networking.k8s.io/web unchanged (HTTPTrigger web as a networking.k8s.io/v1 Ingress)" in again.output
    (project / "web.yaml").unlink()
    pruned = push(str(project), "-n", namespace, "--prune")
    assert "ingress.networking.k8s.io/web pruned (HTTPTrigger web as a networking.k8s.io/v1 Ingress)" in pruned.output
