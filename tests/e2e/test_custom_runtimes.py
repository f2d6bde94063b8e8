"""Custom runtimes as Kubeless documents them (issue L, item 6), on the docker backend: a prebuilt image
deployed with `function deploy --runtime-image` alone; the code of a runtime Kubeless does not know laid
out under its file name without extension; a runtime ID declared only in `runtime-images`; and `ls`, which
must not call a function whose image routes every path to it (no /metrics of its own)."""

import json
from pathlib import Path

import pytest
import requests
from built_images import python_server_image
from conftest import cli

from kubeless_local.emulator import images

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

# Routes every path to "the function" (which counts its calls) but /healthz, which a custom image serves
# (contract §5); GET /kubeless lists the code folder. Port and address as the backend gives them
# (FUNC_PORT, KUBELESS_LOCAL_BIND), else a pod's: 8080 on every address.
COUNTING_SERVER = """\
import http.server, json, os, threading

lock, calls = threading.Lock(), [0]

class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self):
        if self.path == "/healthz":
            body = b"OK"
        elif self.path == "/kubeless":
            body = json.dumps(sorted(os.listdir("/kubeless")) if os.path.isdir("/kubeless") else None).encode()
        else:
            with lock:
                calls[0] += 1
                body = ("calls: %d" % calls[0]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = answer

    def log_message(self, *args):
        pass

address = (os.environ.get("KUBELESS_LOCAL_BIND") or "0.0.0.0", int(os.environ.get("FUNC_PORT") or 8080))
http.server.ThreadingHTTPServer(address, Handler).serve_forever()
"""


@pytest.fixture(scope="module")
def client():
    return images.docker_client()  # fails (not skips) without an engine: CI runs .ci/docker-setup.sh


@pytest.fixture(scope="module")
def counting_image(client):
    return python_server_image(client, "counting", COUNTING_SERVER)


def rows_of(folder):
    return {r["name"]: r for r in json.loads(cli("ls", "-o", "json", cwd=folder, check=True).stdout)}


def test_function_deploy_with_only_a_runtime_image_runs(tmp_path, counting_image, monkeypatch):
    """The runtimes doc's `kubeless function deploy --runtime-image bitnami/tomcat:9.0 webserver`."""
    monkeypatch.setenv("KUBELESS_LOCAL_BACKEND", "docker")  # the session the deploy starts
    try:
        deployed = cli("function", "deploy", "--runtime-image", counting_image, "webserver", cwd=tmp_path, timeout=240)
        assert deployed.returncode == 0, deployed.stderr + deployed.stdout
        row = rows_of(tmp_path)["webserver"]
        assert row["state"] == "Ready" and row["runtime"] == "" and row["handler"] == ""
        listed = [line.strip() for line in cli("function", "ls", cwd=tmp_path, check=True).stdout.splitlines()]
        header, line = listed[0].split(), next(x for x in listed if x.startswith("webserver")).split()
        assert header[:4] == ["NAME", "NAMESPACE", "HANDLER", "RUNTIME"] and line[:3] == ["webserver", "default", "1/1"]
        assert requests.get(row["url"] + "/", timeout=5).text == "calls: 1"
    finally:
        cli("down", cwd=tmp_path)


def test_code_of_a_runtime_kubeless_does_not_know_is_laid_out_by_its_file_name(tmp_path, start_dev, counting_image):
    (tmp_path / "fn.txt").write_text("code")
    dev = start_dev(
        "run",
        "fn.txt",
        "--runtime",
        "custom1",
        "--handler",
        "handler.main",
        "--runtime-image",
        counting_image,
        "--backend",
        "docker",
        cwd=tmp_path,
    )
    dev.wait_for_output("Watching", timeout=120)
    row = rows_of(tmp_path)["handler"]  # named after the handler's module
    assert row["state"] == "Ready", dev.output()
    assert requests.get(row["url"] + "/kubeless", timeout=5).json() == ["fn"]  # /kubeless/<file name>, no extension


def test_a_runtime_declared_only_in_runtime_images_runs(tmp_path, start_dev, client, monkeypatch):
    """The runtimes doc's "Use a custom runtime": a new ID (nodejsWithLodash) in kubeless-config's
    runtime-images, its runtime image a Node image of Kubeless' layout."""
    image = "kubeless-local-test/upstream-nodejs:20"
    client.images.build(path=str(FIXTURES / "upstream-nodejs"), tag=image, network_mode="none", rm=True)
    entry = {
        "ID": "nodejsWithLodash",
        "depName": "package.json",
        "fileNameSuffix": ".js",
        "versions": [
            {
                "name": "node20",
                "version": "20",
                "images": [
                    {
                        "phase": "runtime",
                        "image": image,
                        "env": {"NODE_PATH": "$(KUBELESS_INSTALL_VOLUME)/node_modules"},
                    }
                ],
            }
        ],
    }
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kubeless-config"}}
    config["data"] = {"runtime-images": json.dumps([entry])}
    (tmp_path / "kubeless-config.json").write_text(json.dumps(config))
    monkeypatch.setenv("KUBELESS_LOCAL_RUNTIME_IMAGES", str(tmp_path / "kubeless-config.json"))
    (tmp_path / "helloget.js").write_text("module.exports = { foo: (event, context) => 'hello from ' + __filename };\n")
    dev = start_dev(
        "run",
        "helloget.js",
        "--runtime",
        "nodejsWithLodash20",
        "--handler",
        "helloget.foo",
        "--backend",
        "docker",
        cwd=tmp_path,
    )
    dev.wait_for_output("Watching", timeout=120)
    row = rows_of(tmp_path)["helloget"]
    assert row["state"] == "Ready" and row["runtime"] == "nodejsWithLodash20", dev.output()
    assert requests.get(row["url"] + "/", timeout=5).text == "hello from /kubeless/helloget.js"


def test_ls_does_not_call_a_function_whose_image_routes_every_path_to_it(tmp_path, start_dev, counting_image):
    (tmp_path / "function.yaml").write_text(
        "apiVersion: kubeless.io/v1beta1\nkind: Function\nmetadata: {name: counter}\nspec:\n"
        "  deployment: {spec: {template: {spec: {containers: [{image: '%s'}]}}}}\n" % counting_image
    )
    dev = start_dev("dev", "--backend", "docker", cwd=tmp_path)
    dev.wait_for_output("Watching", timeout=120)
    for _ in range(3):
        row = rows_of(tmp_path)["counter"]
    cli("ls", cwd=tmp_path, check=True)
    cli("function", "ls", cwd=tmp_path, check=True)
    cli("function", "top", cwd=tmp_path, check=True)
    assert row["state"] == "Ready" and row["calls"] is None  # not counted: the image serves no /metrics
    assert requests.get(row["url"] + "/", timeout=5).text == "calls: 1"  # this call is its first
