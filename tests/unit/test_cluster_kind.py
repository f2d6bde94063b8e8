"""`kubeless-local cluster up|down|status` with fake `kind`, `kubectl` and `docker` on PATH that record
their arguments; and the shipped Kubeless manifest's runtime-images, derived from the runtime catalog."""

import json

import pytest
import yaml
from click.testing import CliRunner

from kubeless_local import runtimes
from kubeless_local.cluster import kind
from kubeless_local.commands import root as cli
from kubeless_local.paths import RUNTIMES_DIR

# Shell builtins only: PATH holds nothing but these fakes. Each call is one line in $FAKE_LOG.
FAKE = """#!/bin/sh
printf '%s\n' "${0##*/} $*" >> "$FAKE_LOG"
case "${0##*/} $1 $2" in
  "kind get clusters") [ -n "$FAKE_CLUSTERS" ] && echo "$FAKE_CLUSTERS"; exit 0 ;;
  "kind create cluster") [ -z "$FAKE_CREATE_FAILS" ] || { echo "ERROR: failed to create cluster: no docker" >&2; exit 1; } ;;
  "docker image inspect") case " $FAKE_IMAGES " in *" $3 "*) exit 0 ;; *) exit 1 ;; esac ;;
esac
case "$*" in
  *"get crd"*) [ -n "$FAKE_KUBELESS" ] || exit 1 ;;
  *"get deployment"*) printf 1 ;;
esac
exit 0
"""


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("kind", "kubectl", "docker"):
        (folder / name).write_text(FAKE)
        (folder / name).chmod(0o755)
    log = tmp_path / "calls.log"
    log.write_text("")
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("FAKE_IMAGES", "kubeless-local/python:3.11 kubeless-local/nodejs:20")
    for var in ("FAKE_CLUSTERS", "FAKE_CREATE_FAILS", "FAKE_KUBELESS"):
        monkeypatch.delenv(var, raising=False)

    def calls():
        return log.read_text().splitlines()

    calls.folder = folder
    return calls


def cluster(*args):
    return CliRunner().invoke(cli.main, ["cluster", *args], catch_exceptions=False)


def test_shipped_manifest_runtime_images_are_the_catalogs():
    config = next(o for o in kind.kubeless_objects() if o["kind"] == "ConfigMap")
    assert yaml.safe_load(config["data"]["runtime-images"]) == kind.runtime_images()


def test_runtime_images_in_the_controllers_format():
    python = next(r for r in kind.runtime_images() if r["ID"] == "python")
    assert (python["depName"], python["fileNameSuffix"]) == ("requirements.txt", ".py")
    version = next(v for v in python["versions"] if v["version"] == "3.11")
    assert version["name"] == "python311"
    install, runtime = version["images"]  # the controller reads `images` (ghodss/yaml: the Go field name)
    assert (install["phase"], runtime["phase"]) == ("installation", "runtime")
    assert install["image"] == runtime["image"] == "kubeless-local/python:3.11"
    assert install["command"] == (
        "python3 -m pip install --disable-pip-version-check --no-warn-script-location"
        " --ignore-installed --prefix=/kubeless -r /kubeless/requirements.txt"
    )
    assert runtime["env"]["PYTHONPATH"].startswith("/kubeless/lib/python3.11/site-packages:")
    go = next(r for r in kind.runtime_images() if r["ID"] == "go")
    compile, runtime = go["versions"][0]["images"]  # no docker install step; a compile step
    assert (compile["phase"], runtime["phase"]) == ("compilation", "runtime")
    assert "/runtime/compile-function.sh" in compile["command"] and compile["command"].endswith(" /kubeless/server")


def test_java_installs_with_its_maven_repository_and_runs_what_its_compile_built():
    java = next(r for r in kind.runtime_images() if r["ID"] == "java")
    assert (java["depName"], java["fileNameSuffix"]) == ("pom.xml", ".java")
    install, compile, runtime = java["versions"][0]["images"]
    assert [p["phase"] for p in (install, compile, runtime)] == ["installation", "compilation", "runtime"]
    # the install needs the runtime's libraries (the Maven repository holding the Kubeless parent POM)
    setup = "cp -R /opt/runtime-lib/. %s/" % kind.CLUSTER_RUNTIME_LIB
    assert setup in install["command"] and install["command"].endswith(
        "/runtime/install.sh mvn /runtime %s" % kind.CLUSTER_RUNTIME_LIB
    )
    # the classes (and the server's) go into the install volume, where the runtime container runs them
    assert compile["command"].endswith("&& cp -R %s/. /kubeless/" % kind.CLUSTER_BUILD)
    entry = runtimes.load(RUNTIMES_DIR / "catalog.yaml")["java"]
    assert kind.cluster_command(entry) == ["/bin/sh", "/runtime/run.sh", "/usr/bin/javac", "/kubeless", "/kubeless"]


def test_up_creates_installs_loads_the_local_images_and_patches_runtime_images(fakes):
    result = cluster("up", "--name", "dev")
    assert result.exit_code == 0, result.output
    manifests = kind.MANIFESTS
    calls = fakes()
    assert calls[:5] == [
        "kind get clusters",
        "kind create cluster --name dev --image kindest/node:v1.21.14 --wait 120s",
        "kubectl --context kind-dev apply -f %s" % (manifests / "crds.yaml"),
        "kubectl --context kind-dev wait --for condition=established --timeout 60s crd/functions.kubeless.io",
        "kubectl --context kind-dev apply -f %s" % kind.KUBELESS_MANIFEST,
    ]
    loads = [c for c in calls if c.startswith("kind load")]
    assert loads == [
        "kind load docker-image kubeless-local/nodejs:20 --name dev",
        "kind load docker-image kubeless-local/python:3.11 --name dev",
    ]
    assert "kubeless-local/ruby:3.1 is not built here" in result.output
    patch = next(c for c in calls if " patch configmap kubeless-config " in c)
    assert patch.startswith("kubectl --context kind-dev -n kubeless patch configmap kubeless-config --type merge -p ")
    body = json.loads(patch.split(" -p ", 1)[1])
    assert yaml.safe_load(body["data"]["runtime-images"]) == kind.runtime_images()
    assert calls[-1] == "kubectl --context kind-dev -n kubeless rollout restart deployment kubeless-controller-manager"
    assert "warning" not in result.output


def test_up_keeps_an_existing_cluster_and_warns_about_a_newer_kubernetes(fakes, monkeypatch):
    monkeypatch.setenv("FAKE_CLUSTERS", "dev")
    result = cluster("up", "--name", "dev", "--image", "kindest/node:v1.30.0")
    assert result.exit_code == 0, result.output
    assert not [c for c in fakes() if c.startswith("kind create")]
    assert "kind cluster dev exists" in result.output
    assert result.output.startswith("warning: Kubernetes 1.30: the Kubeless v1.0.8 controller exits at start")


def test_missing_kind_is_one_line_with_the_install_hint(fakes):
    (fakes.folder / "kind").unlink()
    result = CliRunner().invoke(cli.main, ["cluster", "up"])
    assert result.exit_code == 2
    assert result.output == "error: %s\n" % kind.INSTALL_HINTS["kind"]


def test_a_failing_kind_is_one_line_naming_the_step(fakes, monkeypatch):
    monkeypatch.setenv("FAKE_CREATE_FAILS", "1")
    result = CliRunner().invoke(cli.main, ["cluster", "up"])
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (
        "error: create the kind cluster: `kind create cluster` failed: ERROR: failed to create cluster: no docker"
    )


def test_down_deletes_only_an_existing_cluster(fakes, monkeypatch):
    assert cluster("down", "--name", "dev").output == "no kind cluster dev\n"
    assert fakes() == ["kind get clusters"]
    monkeypatch.setenv("FAKE_CLUSTERS", "dev")
    assert cluster("down", "--name", "dev").output == "kind cluster dev deleted\n"
    assert fakes()[-1] == "kind delete cluster --name dev"


def test_status(fakes, monkeypatch):
    assert json.loads(cluster("status", "-o", "json").output) == {
        "cluster": "kubeless",
        "exists": False,
        "kubeless": False,
        "controller_ready": False,
    }
    monkeypatch.setenv("FAKE_CLUSTERS", "kubeless")
    monkeypatch.setenv("FAKE_KUBELESS", "1")
    assert cluster("status").output == (
        "cluster kubeless: exists (context kind-kubeless)\nkubeless: installed\ncontroller: available\n"
    )
