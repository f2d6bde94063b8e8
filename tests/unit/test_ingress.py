"""push's networking.k8s.io/v1 Ingress of each HTTPTrigger (http_routes.ingress_of) against golden files, one per
gateway with and without CORS, basic auth and TLS. The same files are applied to a real API server with a
server-side dry run in tests/cluster/test_push_cluster.py."""

from pathlib import Path

import pytest
import yaml

from kubeless_local import http_routes as hr
from kubeless_local import spec as specs
from kubeless_local.cluster import render

GOLDEN = Path(__file__).parent / "golden" / "ingress"

# case → (the HTTPTrigger's spec, its annotations)
CASES = {
    "nginx": ({"path": "echo"}, {}),
    "nginx-no-path": ({}, {}),
    "nginx-cors-auth-tls": (
        {"path": "api", "cors-enable": True, "basic-auth-secret": "users", "tls": True},
        {hr.NGINX + "cors-allow-origin": "https://app.test", "team": "a"},
    ),
    "nginx-strip-prefix-tls-secret": (
        {"path": "api", "tls-secret": "api-cert"},
        {hr.REWRITE_ANNOTATION: "strip-prefix"},
    ),
    "traefik": ({"path": "echo", "gateway": "traefik"}, {}),
    "traefik-cors-auth-tls": (
        {"path": "echo", "gateway": "traefik", "cors-enable": True, "basic-auth-secret": "users", "tls": True},
        {},
    ),
    "kong": ({"path": "echo", "gateway": "kong"}, {}),
    "kong-cors-tls-secret": ({"path": "echo", "gateway": "kong", "cors-enable": True, "tls-secret": "cert"}, {}),
}


def trigger_document(case):
    spec, annotations = CASES[case]
    metadata = {"name": "web", **({"annotations": annotations} if annotations else {})}
    document = {"apiVersion": specs.API_VERSION, "kind": "HTTPTrigger", "metadata": metadata}
    return {**document, "spec": {"function-name": "hello", "host-name": "web.example.com", **spec}}


def rendered(case):
    trigger = specs.parse_http_trigger(trigger_document(case), Path("web.yaml"))
    fn = specs.FunctionSpec(name="hello", runtime="python3.11", handler="h.f", origin="f.yaml", function="x")
    manifests = specs.Manifests(functions=[fn], http_triggers=[trigger])
    (ingress,) = hr.ingresses(manifests)
    return render.to_yaml([render._labelled(ingress, "default", "shop")])


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_ingress_equals_its_golden_file(case):
    assert rendered(case) == (GOLDEN / ("%s.yaml" % case)).read_text()


def test_every_golden_file_is_a_case():
    assert sorted(p.stem for p in GOLDEN.glob("*.yaml")) == sorted(CASES)


def test_the_ingress_carries_what_the_local_route_does():
    ingress = yaml.safe_load(rendered("nginx-strip-prefix-tls-secret"))
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/api(/|$)(.*)", "ImplementationSpecific")
    assert ingress["metadata"]["annotations"][hr.NGINX + "rewrite-target"] == "/$2"
    assert "local.kubeless.io/rewrite" not in ingress["metadata"]["annotations"]


def test_push_dry_run_shows_the_ingress(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from kubeless_local.commands.root import main

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))  # no cluster: the client dry run contacts nothing
    (tmp_path / "f.yaml").write_text(
        "apiVersion: kubeless.io/v1beta1\nkind: Function\nmetadata: {name: hello}\n"
        "spec: {runtime: python3.11, handler: h.f, function: 'def f(e, c): return 1'}\n"
    )
    (tmp_path / "web.yaml").write_text(yaml.safe_dump(trigger_document("traefik")))
    result = CliRunner().invoke(main, ["push", "--dry-run", "-n", "shop", str(tmp_path)])
    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(result.output))
    assert [d["kind"] for d in documents] == ["Function", "HTTPTrigger", "Ingress"]
    assert documents[2]["metadata"]["namespace"] == "shop" and documents[2]["spec"]["ingressClassName"] == "traefik"
