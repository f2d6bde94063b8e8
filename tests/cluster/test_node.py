"""`push` against a real node (conftest.py `node`: kubelet, containerd, the real Kubeless controller):
a pushed Function answers from its pod."""

import subprocess

import k8s_node  # tests/support
import pytest
from click.testing import CliRunner
from kubernetes import client
from waiting import wait_until

from kubeless_local.commands import root as cli

# The first test may wait for cold builds (k8s-build.sh --node, the controller) and the image imports.
pytestmark = pytest.mark.timeout(1800)
PYTHON_IMAGE = "kubeless-local/python:3.11"

FUNCTION = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: {name}
  annotations: {{local.kubeless.io/source: {source}}}
spec: {{runtime: {runtime}, handler: {handler}, timeout: "30"}}
"""


def stored(node, namespace, plural, name) -> dict:
    """A kubeless.io object as the API server stores it."""
    api = client.CustomObjectsApi(node.target().api)
    return dict(api.get_namespaced_custom_object("kubeless.io", "v1beta1", namespace, plural, name))  # type: ignore[call-overload]


def push(*args):
    return CliRunner().invoke(cli.main, ["push", *args], catch_exceptions=False)


def python_project(folder, answer="hi"):
    folder.mkdir(exist_ok=True)
    (folder / "hello.py").write_text("def hello(event, context):\n    return %r\n" % answer)
    (folder / "hello.yaml").write_text(
        FUNCTION.format(name="hello", source="hello.py", runtime="python3.11", handler="hello.hello")
    )
    return folder


def folder_function(manifest, name, deps, runtime, handler):
    """A Function whose code is the folder app/ (pushed as base64+zip) with its deps file."""
    manifest.write_text(
        "apiVersion: kubeless.io/v1beta1\nkind: Function\nmetadata:\n  name: %s\n  annotations:\n"
        "    local.kubeless.io/source: app\n    local.kubeless.io/deps: %s\n"
        "spec: {runtime: %s, handler: %s}\n" % (name, deps, runtime, handler)
    )


def test_push_wait_answers_from_the_pod(node_env, node_namespace, tmp_path):
    node_env.images(PYTHON_IMAGE)
    project = python_project(tmp_path / "shop")
    result = push(str(project), "-n", node_namespace, "--wait")
    assert result.output == "function.kubeless.io/hello created\nhello: hi\n", result.output
    assert result.exit_code == 0


def test_a_re_push_with_wait_answers_from_the_new_pod_never_the_old(node_env, node_namespace, tmp_path):
    """The old ReplicaSet's pod is available all along: --wait must wait for the pushed code's rollout."""
    node_env.images(PYTHON_IMAGE)
    project = python_project(tmp_path / "shop", "v1")
    assert push(str(project), "-n", node_namespace, "--wait").output.endswith("hello: v1\n")
    python_project(project, "v2")
    result = push(str(project), "-n", node_namespace, "--wait")
    assert result.output == "function.kubeless.io/hello configured\nhello: v2\n", result.output


def test_wait_reports_a_function_the_controller_does_not_deploy(node_env, node_namespace, tmp_path, monkeypatch):
    """A runtime the node's kubeless-config lacks, pushed where push cannot read that config (the check
    before applying is skipped): the controller takes the Function and gives up; --wait says so at once
    instead of waiting out its 5 minutes."""
    from kubeless_local.cluster import push as pusher
    from kubeless_local.errors import UserError

    project = python_project(tmp_path / "shop")
    (project / "hello.yaml").write_text((project / "hello.yaml").read_text().replace("python3.11", "python3.8"))
    monkeypatch.setattr(pusher, "cluster_runtimes", lambda target: None)
    target = node_env.target()
    (result,) = pusher.push(target, project, node_namespace)

    def taken():
        metadata = stored(node_env, node_namespace, "functions", "hello")["metadata"]
        return pusher.FINALIZER in (metadata.get("finalizers") or [])

    wait_until(taken, "the controller took the Function (its finalizer)", timeout=60)  # however loaded the machine
    with pytest.raises(UserError) as failed:
        list(pusher.wait_and_call(target, [result], poll=0.2, controller_timeout=10))
    assert str(failed.value) == (
        "Function hello: the Kubeless controller took it but created no Deployment for it within 10 s; its log"
        " says why: `kubectl -n kubeless logs deployment/kubeless-controller-manager`"
    )
    assert "python3.8 is not valid" in node_env.controller.log.read_text()


def init_project(monkeypatch, parent, name, runtime):
    """`kubeless-local init NAME --runtime RUNTIME` in `parent`: the template a user starts from."""
    monkeypatch.chdir(parent)
    result = CliRunner().invoke(cli.main, ["init", name, "--runtime", runtime], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return parent / name


def test_go_compiles_in_its_init_container_and_answers(node_env, node_namespace, tmp_path, monkeypatch):
    """runtime-images' compilation phase for Go: the controller's `compile` init container builds the
    function with the server; the runtime container runs the binary from the install volume."""
    node_env.images("kubeless-local/go:1.26")
    project = init_project(monkeypatch, tmp_path, "gohello", "go1.26")
    result = push(str(project), "-n", node_namespace, "--wait")
    assert result.output == "function.kubeless.io/gohello created\ngohello: hello world\n", result.output


def test_java_compiles_in_its_init_container_and_answers(node_env, node_namespace, tmp_path, monkeypatch):
    """runtime-images for Java: the installation phase (the template's pom names only Kubeless' own
    params: no Maven run) and the compilation phase, which leaves the classes in the install volume,
    where the runtime container runs them."""
    node_env.images("kubeless-local/java:11")
    project = init_project(monkeypatch, tmp_path, "javahello", "java11")
    result = push(str(project), "-n", node_namespace, "--wait")
    assert result.output == "function.kubeless.io/javahello created\njavahello: Hello world!\n", result.output


def test_a_go_compile_error_is_reported_with_the_compilers_words(node_env, node_namespace, tmp_path, monkeypatch):
    node_env.images("kubeless-local/go:1.26")
    project = init_project(monkeypatch, tmp_path, "gobroken", "go1.26")
    handler = project / "handler.go"
    handler.write_text(handler.read_text().replace('return "hello world", nil', "return undefinedName, nil"))
    result = push(str(project), "-n", node_namespace, "--wait")
    assert result.exit_code == 2
    assert result.output.startswith("function.kubeless.io/gobroken created\nerror: Function gobroken: pod gobroken-")
    assert ", init container compile: exited 1: " in result.output
    assert "handler.go:" in result.output and "undefined: undefinedName" in result.output


@pytest.mark.parametrize(
    "runtime, image",
    [
        ("nodejs20", "kubeless-local/nodejs:20"),
        ("ruby3.1", "kubeless-local/ruby:3.1"),
        ("php8.2", "kubeless-local/php:8.2"),
    ],
)
def test_each_runtimes_template_answers_from_its_pod(node_env, node_namespace, tmp_path, monkeypatch, runtime, image):
    """`init` then `push --wait`: the template's deps file goes through the runtime's installation phase."""
    node_env.images(image)
    name = "t-" + runtime.replace(".", "")
    project = init_project(monkeypatch, tmp_path, name, runtime)
    result = push(str(project), "-n", node_namespace, "--wait")
    assert result.output == "function.kubeless.io/%s created\n%s: hello world\n" % (name, name), result.output


def wheel(path, name, code):
    """A pure-Python wheel of one module, written by hand: a local package, no index needed."""
    import zipfile

    info = "%s-1.0.dist-info" % name
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr("%s/__init__.py" % name, code)
        whl.writestr(info + "/METADATA", "Metadata-Version: 2.1\nName: %s\nVersion: 1.0\n" % name)
        whl.writestr(info + "/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(
            info + "/RECORD", "%s/__init__.py,,\n%s/METADATA,,\n%s/WHEEL,,\n%s/RECORD,,\n" % (name, info, info, info)
        )


def test_a_folder_with_local_deps_answers_from_its_pod(node_env, node_namespace, tmp_path):
    """A folder (base64+zip) whose handler imports a sibling module and a package installed by the
    installation phase from a wheel inside the folder (no network leaves the node)."""
    node_env.images(PYTHON_IMAGE)
    project = tmp_path / "shop"
    app = project / "app"
    app.mkdir(parents=True)
    (app / "hello.py").write_text(
        "import helper\nimport greet\n\n\ndef hello(event, context):\n    return helper.shout(greet.word())\n"
    )
    (app / "helper.py").write_text("def shout(text):\n    return text.upper()\n")
    wheel(app / "greet-1.0-py3-none-any.whl", "greet", "def word():\n    return 'from a folder'\n")
    (app / "requirements.txt").write_text("./greet-1.0-py3-none-any.whl\n")
    folder_function(project / "hello.yaml", "folder", "app/requirements.txt", "python3.11", "hello.hello")
    result = push(str(project), "-n", node_namespace, "--wait")
    assert result.output == "function.kubeless.io/folder created\nfolder: FROM A FOLDER\n", result.output
    function = stored(node_env, node_namespace, "functions", "folder")
    assert function["spec"]["function-content-type"] == "base64+zip"  # the folder went as a zip


def test_prune_removes_the_function_its_pod_and_leaves_the_rest(node_env, node_namespace, tmp_path):
    """--prune deletes the Function gone locally; the controller (its finalizer) deletes its Deployment,
    Service and ConfigMap, so its pod goes; the other function keeps answering."""
    node_env.images(PYTHON_IMAGE)
    project = python_project(tmp_path / "shop", "kept")
    (project / "bye.py").write_text("def bye(event, context):\n    return 'bye'\n")
    (project / "bye.yaml").write_text(
        FUNCTION.format(name="bye", source="bye.py", runtime="python3.11", handler="bye.bye")
    )
    result = push(str(project), "-n", node_namespace, "--wait")
    assert sorted(result.output.splitlines()) == sorted(
        ["function.kubeless.io/hello created", "function.kubeless.io/bye created", "hello: kept", "bye: bye"]
    )
    (project / "bye.yaml").unlink()
    result = push(str(project), "-n", node_namespace, "--prune", "--wait")
    assert result.output == "function.kubeless.io/hello unchanged\nfunction.kubeless.io/bye pruned\nhello: kept\n"
    target = node_env.target()
    apps, core = client.AppsV1Api(target.api), client.CoreV1Api(target.api)

    def gone():
        names = [d.metadata.name for d in apps.list_namespaced_deployment(node_namespace).items if d.metadata]
        pods = core.list_namespaced_pod(node_namespace, label_selector="function=bye").items
        return names == ["hello"] and not pods

    wait_until(gone, "bye's Deployment and pod deleted", timeout=120)


def test_kafka_and_cronjob_triggers_are_accepted(node_env, node_namespace, tmp_path):
    node_env.images(PYTHON_IMAGE)
    project = python_project(tmp_path / "shop")
    (project / "triggers.yaml").write_text(
        "apiVersion: kubeless.io/v1beta1\nkind: KafkaTrigger\nmetadata: {name: orders}\n"
        "spec: {topic: orders, functionSelector: {matchLabels: {function: hello}}}\n---\n"
        "apiVersion: kubeless.io/v1beta1\nkind: CronJobTrigger\nmetadata: {name: tick}\n"
        "spec: {function-name: hello, schedule: '*/5 * * * *'}\n"
    )
    result = push(str(project), "-n", node_namespace, "--wait")
    assert result.output.splitlines() == [
        "function.kubeless.io/hello created",
        "cronjobtrigger.kubeless.io/tick created",  # push applies in kind order: Functions, then each trigger kind
        "kafkatrigger.kubeless.io/orders created",
        "hello: hi",
    ]
    kafka = stored(node_env, node_namespace, "kafkatriggers", "orders")
    cron = stored(node_env, node_namespace, "cronjobtriggers", "tick")
    assert kafka["spec"]["topic"] == "orders" and cron["spec"]["schedule"] == "*/5 * * * *"


FAKE_KIND = """\
#!/bin/sh
# kind, faked: the cluster is the test's node; `load docker-image` copies into its containerd.
case "$1 $2" in
    "get clusters") echo test ;;
    "load docker-image") docker save "$3" | ctr --address "%s" -n k8s.io images import - >/dev/null ;;
    *) echo "fake kind: $*" >&2; exit 1 ;;
esac
"""


def test_cluster_up_steps_after_kind_create_run_against_the_node(node_env, tmp_path, monkeypatch):
    """`cluster up` with only kind faked: it installs the CRDs and Kubeless with the real kubectl, loads
    every runtime image into the node, points runtime-images at them and restarts the controller's
    Deployment (whose image, from a public registry, never runs here: the real controller runs on the
    host)."""
    import os

    import yaml

    from kubeless_local.cluster import kind

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kind").write_text(FAKE_KIND % (node_env.state / "containerd.sock"))
    (bin_dir / "kind").chmod(0o755)
    (bin_dir / "kubectl").symlink_to(k8s_node.build() / "kubectl")
    monkeypatch.setenv("PATH", "%s:%s" % (bin_dir, os.environ["PATH"]))
    target = node_env.target()
    core, apps = client.CoreV1Api(target.api), client.AppsV1Api(target.api)
    provision = (core.read_namespaced_config_map("kubeless-config", "kubeless").data or {})["provision-image"]
    try:
        result = CliRunner().invoke(cli.main, ["cluster", "up", "--name", "test"], catch_exceptions=False)
        images = sorted({i["image"] for r in kind.runtime_images() for v in r["versions"] for i in v["images"]})
        assert result.output.splitlines() == [
            "kind cluster test exists",
            "Kubeless installed in kind-test (%d runtime images loaded); push with `kubeless-local push --context"
            " kind-test`" % len(images),
        ], result.output
        config = core.read_namespaced_config_map("kubeless-config", "kubeless").data or {}
        assert yaml.safe_load(config["runtime-images"]) == kind.runtime_images()
        listed = subprocess.run(
            ["ctr", "--address", str(node_env.state / "containerd.sock"), "-n", "k8s.io", "images", "ls", "-q"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert all(k8s_node.cri_name(image) in listed for image in images), listed
        restarted = apps.read_namespaced_deployment("kubeless-controller-manager", "kubeless")
        template = restarted.spec.template if restarted.spec else None
        annotations = template.metadata.annotations if template and template.metadata else None
        assert "kubectl.kubernetes.io/restartedAt" in (annotations or {})
    finally:  # the session's controller runs on the host with the node's provision image
        if any(
            d.metadata and d.metadata.name == "kubeless-controller-manager"
            for d in apps.list_namespaced_deployment("kubeless").items
        ):
            apps.delete_namespaced_deployment("kubeless-controller-manager", "kubeless")
        core.patch_namespaced_config_map("kubeless-config", "kubeless", {"data": {"provision-image": provision}})


def test_a_nodejs_folder_with_a_local_package_answers_from_its_pod(node_env, node_namespace, tmp_path):
    """npm installs a `file:` dependency inside the folder (no registry: no network leaves the node)."""
    node_env.images("kubeless-local/nodejs:20")
    project = tmp_path / "shop"
    greet = project / "app" / "greet"
    greet.mkdir(parents=True)
    (greet / "package.json").write_text('{"name": "greet", "version": "1.0.0", "main": "index.js"}\n')
    (greet / "index.js").write_text("module.exports = () => 'greetings from a local package';\n")
    (project / "app" / "handler.js").write_text(
        "const greet = require('greet');\nmodule.exports = { hello: (event, context) => greet() };\n"
    )
    (project / "app" / "package.json").write_text(
        '{"name": "app", "version": "1.0.0", "dependencies": {"greet": "file:./greet"}}\n'
    )
    folder_function(project / "app.yaml", "nodefolder", "app/package.json", "nodejs20", "handler.hello")
    result = push(str(project), "-n", node_namespace, "--wait")
    expected = "function.kubeless.io/nodefolder created\nnodefolder: greetings from a local package\n"
    assert result.output == expected, result.output


def test_a_ruby_folder_with_a_local_gem_answers_from_its_pod(node_env, node_namespace, tmp_path):
    """bundler installs a `path:` gem inside the folder (no gem source: no network leaves the node)."""
    node_env.images("kubeless-local/ruby:3.1")
    project = tmp_path / "shop"
    gem = project / "app" / "greet"
    (gem / "lib").mkdir(parents=True)
    (gem / "greet.gemspec").write_text(
        "Gem::Specification.new do |s|\n  s.name = 'greet'\n  s.version = '1.0.0'\n  s.summary = 'greet'\n"
        "  s.authors = ['test']\n  s.files = ['lib/greet.rb']\nend\n"
    )
    (gem / "lib" / "greet.rb").write_text("module Greet\n  def self.word\n    'a local gem'\n  end\nend\n")
    (project / "app" / "handler.rb").write_text("require 'greet'\n\ndef hello(event, context)\n  Greet.word\nend\n")
    (project / "app" / "Gemfile").write_text("gem 'greet', path: './greet'\n")
    folder_function(project / "app.yaml", "rubyfolder", "app/Gemfile", "ruby3.1", "handler.hello")
    result = push(str(project), "-n", node_namespace, "--wait")
    assert result.output == "function.kubeless.io/rubyfolder created\nrubyfolder: a local gem\n", result.output


def test_a_php_folder_with_a_local_package_answers_from_its_pod(node_env, node_namespace, tmp_path):
    """composer installs a `path` repository's package inside the folder (packagist off: no network)."""
    node_env.images("kubeless-local/php:8.2")
    project = tmp_path / "shop"
    package = project / "app" / "greet"
    (package / "src").mkdir(parents=True)
    (package / "composer.json").write_text(
        '{"name": "local/greet", "version": "1.0.0", "autoload": {"files": ["src/greet.php"]}}\n'
    )
    (package / "src" / "greet.php").write_text("<?php\nfunction greet_word() { return 'a local package'; }\n")
    (project / "app" / "handler.php").write_text(
        "<?php\nfunction hello($event, $context) {\n    return greet_word();\n}\n"
    )
    (project / "app" / "composer.json").write_text(
        '{"repositories": [{"type": "path", "url": "./greet"}, {"packagist.org": false}],'
        ' "require": {"local/greet": "1.0.0"}}\n'
    )
    folder_function(project / "app.yaml", "phpfolder", "app/composer.json", "php8.2", "handler.hello")
    result = push(str(project), "-n", node_namespace, "--wait")
    assert result.output == "function.kubeless.io/phpfolder created\nphpfolder: a local package\n", result.output
