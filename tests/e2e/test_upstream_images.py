"""The docker backend with images laid out like the official Kubeless ones (stand-ins built from
tests/fixtures/upstream-*: no registry to pull the real ones from), as a user's runtime-images names
them: the backend honours the Kubeless contract for any image, not only ours (issue L)."""

import json
from pathlib import Path

import pytest
import requests
from conftest import cli
from sockets import free_port

from kubeless_local.emulator import images

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def client():
    return images.docker_client()  # fails (not skips) without an engine: CI runs .ci/docker-setup.sh


def build_fixture(client, folder, tag):
    """Build tests/fixtures/<folder> as `tag` (FROM an image already here; no network)."""
    client.images.build(path=str(FIXTURES / folder), tag=tag, network_mode="none", rm=True)
    return tag


def answers(url):
    try:
        return requests.get(url, timeout=5).text
    except requests.RequestException as exc:
        return str(exc)


@pytest.fixture(scope="module")
def upstream_nodejs(client):
    return build_fixture(client, "upstream-nodejs", "kubeless-local-test/upstream-nodejs:20")


def test_node_deps_install_by_the_installation_phase_of_the_entry_in_force(
    tmp_path, start_dev, upstream_nodejs, monkeypatch
):
    """The upstream Node image has no /runtime/npm-install.sh: the install step is the entry's
    installation phase (its image and command), and NODE_PATH is the runtime phase's env."""
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KUBELESS_LOCAL_RUNTIME_IMAGES", str(FIXTURES / "upstream-nodejs" / "runtime-images.json"))
    (tmp_path / "package.json").write_text(
        json.dumps({"name": "fn", "version": "1.0.0", "dependencies": {"left-pad": "1.3.0"}})
    )
    (tmp_path / "handler.js").write_text(
        "const leftPad = require('left-pad');\nmodule.exports = { hello: (event, context) => leftPad('7', 3, '0') };\n"
    )
    port = free_port()
    dev = start_dev(
        "run",
        "handler.js",
        "--runtime",
        "nodejs20",
        "--handler",
        "handler.hello",
        "-d",
        "package.json",
        "--port",
        str(port),
        "--backend",
        "docker",
        cwd=tmp_path,
    )
    dev.wait_for_output("Watching", timeout=180)
    dev.wait_until(lambda: answers("http://127.0.0.1:%d/" % port) == "007", "the dependency answers", timeout=180)
    assert "nodejs20 runs in %s" % upstream_nodejs in dev.output()
    wide = cli("ls", "-o", "wide", cwd=tmp_path, check=True).stdout
    assert "%s (%s)" % (upstream_nodejs, FIXTURES / "upstream-nodejs" / "runtime-images.json") in wide
