"""The docker backend end to end with the real command and a real engine (run .ci/docker-setup.sh first)."""

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import uuid
from pathlib import Path

import pytest
import requests
from built_images import python_server_image
from conftest import cli, wait_for_answer
from sockets import free_port

from kubeless_local.emulator import images
from kubeless_local.paths import cache_dir

LABEL_FUNCTION = "kubeless-local.function"
LABEL_PROJECT = "kubeless-local.project"


@pytest.fixture(scope="module")
def client():
    return images.docker_client()  # fails (not skips) without an engine: CI runs .ci/docker-setup.sh


def containers_of(client, project_state):
    return client.containers.list(all=True, filters={"label": "%s=%s" % (LABEL_PROJECT, project_state)})


def test_run_in_a_container_reload_and_cleanup(tmp_path, start_dev, client):
    """On the host's network (`docker.network: host`, the opt-in); the default modes: test_front_door.py."""
    (tmp_path / ".kubeless-local.yaml").write_text("docker: {network: host}\n")
    (tmp_path / "handler.py").write_text(
        "import os\n\ndef hello(event, context):\n    return '%s %s %s %s' % (os.environ['GREETING'], os.getuid(), "
        "context['memory-limit'], quota())\n\n"
        "def quota():  # the CPU the kernel gives the container a period: cgroup v2, else v1\n"
        "    for path in ('/sys/fs/cgroup/cpu.max', '/sys/fs/cgroup/cpu/cpu.cfs_quota_us'):\n"
        "        if os.path.exists(path):\n"
        "            return open(path).read().split()[0]\n"
    )
    port = free_port()
    dev = start_dev(
        "run",
        "handler.py",
        "--runtime",
        "python3.11",
        "--handler",
        "handler.hello",
        "--env",
        "GREETING=hi",
        "--memory",
        "96Mi",
        "--cpu",
        "250m",
        "--port",
        str(port),
        "--backend",
        "docker",
        cwd=tmp_path,
    )
    dev.wait_for_output("Watching", timeout=90)
    url = "http://127.0.0.1:%d/" % port
    # UID 1000, FUNC_MEMORY_LIMIT, a quarter of the default 100 ms period (cgroup v1 and v2 alike)
    assert requests.get(url, timeout=5).text == "hi 1000 96Mi 25000"
    state = str((tmp_path / ".kubeless-local" / "run-handler").resolve())  # each run: its own state folder
    [container] = containers_of(client, state)
    attrs = container.attrs
    assert container.labels[LABEL_FUNCTION] == "handler"  # run names it after the module
    assert attrs["HostConfig"]["NetworkMode"] == "host"
    assert attrs["HostConfig"]["Memory"] == 96 * 2**20 and attrs["HostConfig"]["NanoCpus"] == 250_000_000
    # deps and CA are read-only; the code's folder is not: /kubeless is a pod's emptyDir, the function may write there
    assert {m["Destination"] for m in attrs["Mounts"] if m["RW"]} == {"/kubeless-local/function"}
    # save → the same container answers with the new code (SIGHUP reload, no new container)
    (tmp_path / "handler.py").write_text("def hello(event, context):\n    return 'edited'\n")
    wait_for_answer(url, "edited")
    assert [c.id for c in containers_of(client, state)] == [container.id]
    dev.stop()
    assert containers_of(client, state) == []  # removed on exit


def test_leftover_containers_of_a_crashed_run_are_removed(tmp_path, start_dev, client):
    (tmp_path / ".kubeless-local.yaml").write_text("docker: {network: host}\n")  # one container per function
    (tmp_path / "handler.py").write_text("def hello(event, context):\n    return 'ok'\n")
    state = str((tmp_path / ".kubeless-local" / "run-handler").resolve())  # each run: its own state folder
    leftover = client.containers.create(
        "kubeless-local/python:3.11",
        ["sleep", "600"],
        network_mode="none",
        labels={LABEL_PROJECT: state, LABEL_FUNCTION: "ghost"},
    )
    leftover.start()
    port = free_port()
    dev = start_dev(
        "run",
        "handler.py",
        "--runtime",
        "python3.11",
        "--handler",
        "handler.hello",
        "--port",
        str(port),
        "--backend",
        "docker",
        cwd=tmp_path,
    )
    dev.wait_for_output("Watching", timeout=90)
    ids = [c.id for c in containers_of(client, state)]
    assert leftover.id not in ids and len(ids) == 1
    assert requests.get("http://127.0.0.1:%d/" % port, timeout=5).text == "ok"


RUN = ["run", "handler.py", "--runtime", "python3.11", "--handler", "handler.hello", "--backend", "docker"]


def run_args(port):
    return [*RUN, "--port", str(port)]


def test_a_second_run_starts_in_the_relay_its_first_step_sent(tmp_path, start_dev, client):
    """The relay mode of this engine: the first `run` leaves a hint, the next one's first step sends its relay to the
    engine (relaystart.py) and the function's container joins that one."""
    (tmp_path / "handler.py").write_text("def hello(event, context):\n    return 'ok'\n")
    state = str((tmp_path / ".kubeless-local" / "run-handler").resolve())
    for n in range(2):
        port = free_port()
        dev = start_dev(*run_args(port), cwd=tmp_path)
        dev.wait_for_output("Watching", timeout=90)
        assert requests.get("http://127.0.0.1:%d/" % port, timeout=5).text == "ok"
        names = {c.name: c for c in containers_of(client, state)}
        [relay] = [c for name, c in names.items() if "-relay" in name]
        [function] = [c for name, c in names.items() if "-relay" not in name]
        assert function.attrs["HostConfig"]["NetworkMode"] == "container:" + relay.id
        early = re.fullmatch(r"kubeless-local-handler-[0-9a-f]{8}-relay-[0-9a-f]{8}", relay.name)
        assert bool(early) == (n == 1), relay.name  # the first run's is named after its generation
        dev.stop()
        assert containers_of(client, state) == []
        assert list((Path(state) / "doors").iterdir()) == []  # its socket folder too


def test_a_run_killed_as_it_starts_leaves_no_relay_behind(tmp_path, start_dev, client):
    """kill -9 of a `run` whose first step sent its relay: the guardian or the next `run` of the function removes it
    (and that run starts in a relay of its own)."""
    (tmp_path / "handler.py").write_text("def hello(event, context):\n    return 'ok'\n")
    state = str((tmp_path / ".kubeless-local" / "run-handler").resolve())
    first = start_dev(*run_args(free_port()), cwd=tmp_path)  # leaves the hint
    first.wait_for_output("Watching", timeout=90)
    first.stop()
    killed = start_dev(*run_args(free_port()), cwd=tmp_path)
    killed.wait_until(lambda: any("-relay-" in c.name for c in containers_of(client, state)), "its relay sent", 30)
    killed.proc.kill()
    killed.proc.wait(timeout=10)
    port = free_port()
    dev = start_dev(*run_args(port), cwd=tmp_path)
    dev.wait_for_output("Watching", timeout=90)
    assert requests.get("http://127.0.0.1:%d/" % port, timeout=5).text == "ok"
    assert len(containers_of(client, state)) == 2  # its function's and its relay: the killed run's is gone
    dev.stop()
    assert containers_of(client, state) == []


def test_auto_says_which_backend(tmp_path, start_dev, client):
    (tmp_path / "handler.py").write_text("def hello(event, context):\n    return 'auto'\n")
    port = free_port()
    dev = start_dev(
        "run",
        "handler.py",
        "--runtime",
        "python3.11",
        "--handler",
        "handler.hello",
        "--port",
        str(port),
        "--backend",
        "auto",
        cwd=tmp_path,
    )
    dev.wait_for_output("Watching", timeout=90)
    assert "backend: docker" in dev.output()
    assert requests.get("http://127.0.0.1:%d/" % port, timeout=5).text == "auto"


def test_missing_image_is_one_line_with_the_fix(tmp_path, monkeypatch):
    (tmp_path / "handler.py").write_text("def hello(event, context):\n    return 'x'\n")
    monkeypatch.setenv("PYTHON3.11_RUNTIME", "kubeless-local/not-built:0")
    result = cli(
        "run",
        "handler.py",
        "--runtime",
        "python3.11",
        "--handler",
        "handler.hello",
        "--backend",
        "docker",
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "kubeless-local/not-built:0" in result.stdout + result.stderr
    assert "--backend process" in result.stdout + result.stderr
    fix = "image kubeless-local/not-built:0 is not present and cannot be pulled here; `docker build`/`docker pull` it"
    assert "%s or use --backend process\n" % fix in result.stderr


def test_dependencies_install_in_the_image_through_the_host_ca(tmp_path, start_dev, client, monkeypatch):
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "requirements.txt").write_text("six==1.16.0\n")
    (tmp_path / "handler.py").write_text("import six\n\ndef hello(event, context):\n    return six.__version__\n")
    port = free_port()
    dev = start_dev(
        "run",
        "handler.py",
        "--runtime",
        "python3.11",
        "--handler",
        "handler.hello",
        "-d",
        "requirements.txt",
        "--port",
        str(port),
        "--backend",
        "docker",
        cwd=tmp_path,
    )
    dev.wait_for_output("Watching", timeout=180)
    assert requests.get("http://127.0.0.1:%d/" % port, timeout=5).text == "1.16.0"
    assert list((tmp_path / "cache" / "docker-deps" / "python3.11").iterdir())


def custom_image(client):
    """A runtime image that knows nothing of kubeless-local: serves /healthz and the mounted file."""
    server = (
        "import http.server, os\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = b'OK' if self.path == '/healthz' else open('/kubeless/' + os.environ['MOD_NAME'], 'rb').read()\n"
        "        self.send_response(200); self.end_headers(); self.wfile.write(body)\n"
        "http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['FUNC_PORT'])), H).serve_forever()\n"
    )
    return python_server_image(client, "custom", server)


def test_custom_runtime_image_with_an_unknown_runtime(tmp_path, start_dev, client):
    image = custom_image(client)
    (tmp_path / "fn.cob").write_text("DISPLAY 'HELLO'.")
    port = free_port()
    dev = start_dev(
        "run",
        "fn.cob",
        "--runtime",
        "cobol85",
        "--handler",
        "fn.main",
        "--runtime-image",
        image,
        "--port",
        str(port),
        "--backend",
        "docker",
        cwd=tmp_path,
    )
    dev.wait_for_output("Watching", timeout=90)
    url = "http://127.0.0.1:%d/" % port
    assert requests.get(url, timeout=5).text == "DISPLAY 'HELLO'."  # mounted as /kubeless/fn, no extension
    (tmp_path / "fn.cob").write_text("DISPLAY 'AGAIN'.")

    def answers_again():
        try:
            return requests.get(url, timeout=5).text == "DISPLAY 'AGAIN'."
        except requests.RequestException:
            return False

    dev.wait_until(answers_again, "the edited file served")


def test_runtime_ls_and_get_server_config(tmp_path):
    rows = {r["runtime"]: r for r in json.loads(cli("runtime", "ls", "-o", "json", cwd=tmp_path, check=True).stdout)}
    assert rows["python3.11"]["present"] and rows["python3.11"]["image"] == "kubeless-local/python:3.11"
    config = {
        r["runtime"]: r for r in json.loads(cli("get-server-config", "-o", "json", cwd=tmp_path, check=True).stdout)
    }
    assert config["python3.11"]["docker"] is True
    text = cli("get-server-config", cwd=tmp_path, check=True).stdout
    assert "docker backend:" in text and "python3.11" in text.split("docker backend:")[1].splitlines()[0]


def test_a_secret_folder_is_mounted_read_only_at_the_secret_path(tmp_path, start_dev, client):
    (tmp_path / "secrets" / "db").mkdir(parents=True)
    (tmp_path / "secrets" / "db" / "password").write_text("s3cret")
    (tmp_path / "secrets" / "db" / "password").chmod(0o600)  # as a careful user keeps a secret: the pod's user reads it
    (tmp_path / "handler.py").write_text(
        "import os\n\ndef hello(event, context):\n"
        "    path = os.environ['KUBELESS_LOCAL_SECRET_DB'] + '/password'\n"
        "    return open(path).read() + ' ' + path\n"
    )
    port = free_port()
    dev = start_dev(
        *["run", "handler.py", "--runtime", "python3.11", "--handler", "handler.hello", "--secrets", "db"],
        *["--port", str(port), "--backend", "docker"],
        cwd=tmp_path,
    )
    dev.wait_for_output("Watching", timeout=90)
    assert requests.get("http://127.0.0.1:%d/" % port, timeout=5).text == "s3cret /db/password"
    assert "secret db: %s mounted read-only at /db" % (tmp_path / "secrets" / "db") in dev.output()


def crashing_image(client):
    """An image whose server prints one line and exits at once: a crash loop."""
    server = 'print("boot line", flush=True)\nraise SystemExit(3)\n'
    return python_server_image(client, "crash", server)


def test_a_crash_loop_prints_each_line_once(tmp_path, start_dev, client):
    """Each restart prints what that container printed, and its exit; never the lines of earlier runs
    again (they were re-printed as the crash's "last lines" on every restart, 178 lines for 10)."""
    (tmp_path / "fn.txt").write_text("x")
    dev = start_dev(
        "run",
        "fn.txt",
        "--runtime",
        "custom1",
        "--handler",
        "fn.main",
        "--runtime-image",
        crashing_image(client),
        "--backend",
        "docker",
        cwd=tmp_path,
    )
    dev.wait_until(lambda: dev.output().count("restarting in") >= 4, "four restarts", timeout=90)
    output = dev.output()
    starts = output.count("restarting in") + 1  # the first start, then one per restart printed (at most)
    assert 4 <= output.count("boot line") <= starts, output


def silent_image(client):
    """An image whose server starts and never answers /healthz: a function stuck in Starting."""
    server = 'import time\nprint("starting", flush=True)\ntime.sleep(600)\n'
    return python_server_image(client, "silent", server)


def test_ctrl_c_while_a_function_is_starting_stops_at_once(tmp_path, start_dev, client):
    """The start waits for readiness (60 s at most) holding the function's lock; Ctrl-C must not wait
    for it (it did: ~60 s). The bound here is far below that wait, far above the 2 s it takes."""
    (tmp_path / "fn.txt").write_text("x")
    dev = start_dev(
        "run",
        "fn.txt",
        "--runtime",
        "custom1",
        "--handler",
        "fn.main",
        "--runtime-image",
        silent_image(client),
        "--backend",
        "docker",
        cwd=tmp_path,
    )
    dev.wait_for_output("starting", timeout=60)
    dev.proc.send_signal(signal.SIGINT)
    try:
        dev.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("dev still running 30 s after Ctrl-C:\n" + dev.output())
    assert containers_of(client, str((tmp_path / ".kubeless-local" / "run-fn").resolve())) == []


def webserver_image(client):
    """A prebuilt image that is the whole function (the seed's `--runtime-image bitnami/tomcat` example)."""
    server = (
        "import http.server, os\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers(); self.wfile.write(b'webserver up')\n"
        "http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['FUNC_PORT'])), H).serve_forever()\n"
    )
    return python_server_image(client, "webserver", server)


def test_a_function_manifest_with_only_an_image_runs(tmp_path, start_dev, client):
    image = webserver_image(client)
    (tmp_path / "function.yaml").write_text(
        "apiVersion: kubeless.io/v1beta1\nkind: Function\nmetadata: {name: webserver}\nspec:\n"
        "  deployment: {spec: {template: {spec: {containers: [{image: '%s'}]}}}}\n" % image
    )
    dev = start_dev("dev", "--backend", "docker", cwd=tmp_path)
    dev.wait_for_output("Watching", timeout=90)
    rows = {r["name"]: r for r in json.loads(cli("ls", "-o", "json", cwd=tmp_path, check=True).stdout)}
    assert rows["webserver"]["state"] == "Ready", dev.output()
    assert rows["webserver"]["runtime"] == "" and rows["webserver"]["handler"] == ""  # as the seed's `ls` shows it
    assert requests.get(rows["webserver"]["url"], timeout=5).text == "webserver up"


def writing_image(client):
    """An image whose server writes into /kubeless at start (as the runtimes repo's custom example does)."""
    server = (
        "import http.server, os\n"
        "open('/kubeless/written.txt', 'w').write('written in /kubeless')\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers()\n"
        "        self.wfile.write(open('/kubeless/written.txt', 'rb').read())\n"
        "http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['FUNC_PORT'])), H).serve_forever()\n"
    )
    return python_server_image(client, "writer", server)


def test_kubeless_is_writable_by_a_function_of_another_image(tmp_path, start_dev, client):
    (tmp_path / "fn.txt").write_text("code")
    dev = start_dev(
        "run",
        "fn.txt",
        "--runtime",
        "custom1",
        "--handler",
        "fn.main",
        "--runtime-image",
        writing_image(client),
        "--backend",
        "docker",
        cwd=tmp_path,
    )
    dev.wait_for_output("Watching", timeout=90)
    rows = {r["name"]: r for r in json.loads(cli("ls", "-o", "json", cwd=tmp_path, check=True).stdout)}
    assert rows["fn"]["state"] == "Ready", dev.output()
    assert requests.get(rows["fn"]["url"], timeout=5).text == "written in /kubeless"
    assert not (tmp_path / "written.txt").exists() and (tmp_path / "fn.txt").read_text() == "code"  # a copy's


def test_a_function_of_private_files_under_a_private_umask_runs_in_its_container(tmp_path, start_dev):
    """The container runs as the pod's user (1000), not as whoever wrote the files: a handler of mode 0600 (or
    everything, under `umask 077`) made the function `No module named 'handler'`, and its deps folder could not be
    entered. In the pod its volume gives the runtime its code; here what a container reads is made readable by
    all (the state folder, 0700, keeps it from the machine's other users)."""
    (tmp_path / "handler.py").write_text(
        "import six\n\ndef hello(event, context):\n    return open('data.txt').read() + ' ' + six.__name__\n"
    )
    (tmp_path / "data.txt").write_text("private")
    deps = "six\n# %s\n" % uuid.uuid4()  # installed now, under that umask
    (tmp_path / "requirements.txt").write_text(deps)
    for path in tmp_path.iterdir():
        path.chmod(0o600)
    (tmp_path / "function.yaml").write_text(
        "apiVersion: kubeless.io/v1beta1\nkind: Function\n"
        "metadata: {name: hello, annotations: {local.kubeless.io/source: .}}\n"
        "spec: {runtime: python3.11, handler: handler.hello}\n"
    )
    umask = os.umask(0o077)  # dev inherits it
    try:
        dev = start_dev("dev", "--backend", "docker", cwd=tmp_path)
    finally:
        os.umask(umask)
    try:
        dev.wait_for_output("Watching", timeout=180)
        assert cli("call", "hello", cwd=tmp_path, check=True).stdout.strip() == "private six", dev.output()
        assert "Successfully installed six" in dev.output()
    finally:  # the cached install of a deps file no other test has
        dev.stop()
        for installed in (cache_dir() / "docker-deps" / "python3.11").glob("*/requirements.txt"):
            if installed.read_text() == deps:
                shutil.rmtree(installed.parent)
                installed.parent.with_name(installed.parent.name + ".lock").unlink(missing_ok=True)
    assert stat.S_IMODE((tmp_path / "handler.py").stat().st_mode) == 0o600  # the user's files stay as they are
    assert stat.S_IMODE((tmp_path / ".kubeless-local").stat().st_mode) == 0o700


def owned_by_others(folder):
    return [p for p in Path(folder).rglob("*") if p.lstat().st_uid != os.getuid()]


def test_the_folders_a_function_made_in_its_working_folder_go_with_its_container(tmp_path, start_dev):
    """/kubeless is writable, as the pod's emptyDir (conformance `writes`): what the function made there is its
    container user's (1000), which a host user other than root could not remove, nor the project folder."""
    scenario = Path(__file__).parents[1] / "conformance" / "scenarios" / "writes"
    (tmp_path / "code").mkdir()
    for name in ("handler.py", "data.txt"):
        shutil.copy(scenario / name, tmp_path / "code" / name)
    (tmp_path / "function.yaml").write_text(
        "apiVersion: kubeless.io/v1beta1\nkind: Function\nmetadata:\n  name: writes\n"
        "  annotations: {local.kubeless.io/source: code}\nspec: {runtime: python3.11, handler: handler.handler}\n"
    )
    dev = start_dev("dev", "--backend", "docker", cwd=tmp_path)
    dev.wait_for_output("Watching", timeout=120)
    answer = cli("call", "writes", "--data", "a", cwd=tmp_path, check=True).stdout
    assert answer.strip() == "v0a|a"
    state = tmp_path / ".kubeless-local"
    assert [p.name for p in owned_by_others(state / "functions")] == ["notes", "log.txt"]  # made by uid 1000
    dev.proc.send_signal(signal.SIGINT)
    assert dev.proc.wait(timeout=60) == 130
    assert owned_by_others(state / "functions") == []
    assert "could not remove them" not in dev.output()
