"""`dev`'s life cycle with the real command: its runtime servers die with it however it ends, one
`dev` per project, and `ls` works while functions are still installing."""

import json
import os
import signal

import pytest
import requests
from conftest import cli
from processes import alive
from waiting import wait_for, wait_until

HANDLER = "import greetpkg\n\ndef hello(event, context):\n    return 'hello ' + greetpkg.VERSION\n"
MANIFEST = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: hello
  annotations: {local.kubeless.io/source: handler.py, local.kubeless.io/deps: requirements.txt}
spec: {runtime: python3.11, handler: handler.hello}
"""


def read_ls(cwd):
    return {row["name"]: row for row in json.loads(cli("ls", "-o", "json", cwd=cwd, check=True).stdout)}


def live_members(pgid):
    """Live (not zombie) processes of process group `pgid`."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry))
    return members


def templates_of(project):
    """Pids of the runtime template processes (runtimes/python/template.py) of `project`'s session."""
    marker = b"KUBELESS_LOCAL_PROJECT=" + str(project / ".kubeless-local").encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as cmdline, open("/proc/%s/environ" % entry, "rb") as env:
                    if b"template.py" in cmdline.read() and marker in env.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
    return [pid for pid in found if pid in live_members(pid)]  # it leads its own group; a zombie has ended


def group_gone(pgid, timeout=30.0):
    """The group's processes all ended, within a generous bound (the guardian kills them; under load the
    kill takes more than the 2 s this waited before)."""
    return wait_for(lambda: not live_members(pgid), timeout)


def one_line_error(result):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def hello_project(tmp_path):
    cli("init", "hello", "--runtime", "python3.11", cwd=tmp_path, check=True)
    return tmp_path / "hello"


def test_kill_9_of_dev_leaves_no_runtime_server_and_the_next_dev_keeps_the_port(tmp_path, start_dev):
    project = hello_project(tmp_path)
    dev = start_dev("dev", cwd=project)
    dev.wait_for_output("Watching")
    row = read_ls(project)["hello"]
    assert live_members(row["pid"])  # the runtime server (and its workers) run in the group it leads
    assert templates_of(project)  # the process its server was forked from
    dev.proc.send_signal(signal.SIGKILL)
    dev.proc.wait(timeout=10)
    assert group_gone(row["pid"]), "runtime server processes %s outlived `dev`" % live_members(row["pid"])
    assert wait_for(lambda: not templates_of(project), 30), "the runtime template outlived `dev`"

    again = start_dev("dev", cwd=project)
    again.wait_for_output("Watching")
    row_again = read_ls(project)["hello"]
    assert row_again["port"] == row["port"]
    assert requests.get(row_again["url"], timeout=5).text == "hello world"
    again.proc.send_signal(signal.SIGINT)
    assert again.proc.wait(timeout=15) == 130
    assert group_gone(row_again["pid"])
    assert not templates_of(project)  # closed before `dev` exits
    assert "Traceback" not in again.output()


def guardian_of(project):
    """The pid of the guardian process watching `project`'s `dev`."""
    wanted = b"kubeless_local.emulator.guardian\0" + str(project / ".kubeless-local").encode() + b"\0"
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as cmdline:
                    if cmdline.read().endswith(wanted):
                        return int(entry)
            except OSError:
                continue
    raise AssertionError("no guardian runs for %s" % project)


def test_the_next_dev_stops_what_a_dead_session_left_and_keeps_its_port(tmp_path, start_dev):
    project = hello_project(tmp_path)
    dev = start_dev("dev", cwd=project)
    dev.wait_for_output("Watching")
    row = read_ls(project)["hello"]
    os.kill(guardian_of(project), signal.SIGKILL)  # the guardian too: nothing cleans up
    dev.proc.send_signal(signal.SIGKILL)
    dev.proc.wait(timeout=10)
    try:
        assert live_members(row["pid"])  # left running, as before the guardian existed
        again = start_dev("dev", cwd=project)
        again.wait_for_output("Watching")
        assert group_gone(row["pid"])
        assert "stopped what an earlier kubeless-local (pid %d) left running" % dev.proc.pid in again.output()
        assert read_ls(project)["hello"]["port"] == row["port"]
    finally:
        if live_members(row["pid"]):
            os.killpg(row["pid"], signal.SIGKILL)


def test_a_closed_terminal_stops_dev_cleanly(tmp_path, start_dev):
    project = hello_project(tmp_path)
    dev = start_dev("dev", cwd=project)
    dev.wait_for_output("Watching")
    pid = read_ls(project)["hello"]["pid"]
    dev.proc.send_signal(signal.SIGHUP)
    assert dev.proc.wait(timeout=15) == 128 + signal.SIGHUP
    assert group_gone(pid)
    assert not (project / ".kubeless-local" / "admin.json").exists()
    assert "stopping" in dev.output() and "Traceback" not in dev.output()


def slow_local_package(root, release):
    """A local package whose build waits until `release` exists: the test decides when installing ends."""
    pkg = root / "greetpkg"
    (pkg / "greetpkg").mkdir(parents=True)
    (pkg / "greetpkg" / "__init__.py").write_text("VERSION = 'slow'\n")
    (pkg / "setup.py").write_text(
        "import os, time\nfrom setuptools import setup\n"
        "for _ in range(1200):  # at most 60 s\n"
        "    if os.path.exists(%r):\n        break\n    time.sleep(0.05)\n"
        "setup(name='greetpkg', version='1.0', packages=['greetpkg'])\n" % str(release)
    )
    return pkg


def test_ls_works_while_installing_and_a_second_or_nested_dev_is_refused(tmp_path, start_dev):
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    release = tmp_path / "release"
    (project / "requirements.txt").write_text("%s\n" % slow_local_package(tmp_path, release))
    (project / "handler.py").write_text(HANDLER)
    (project / "function.yaml").write_text(MANIFEST)
    dev = start_dev("dev", cwd=project)
    try:

        def installing():
            assert dev.proc.poll() is None, dev.output()
            admin = project / ".kubeless-local" / "admin.json"
            return admin.exists() and read_ls(project).get("hello", {}).get("state") == "Installing"

        dev.wait_until(installing, "hello Installing")
        info = (project / ".kubeless-local" / "admin.json").read_text()

        assert "is already running for %s" % project in one_line_error(cli("dev", cwd=project))
        assert "is inside %s" % project in one_line_error(cli("dev", cwd=project / "sub"))
        assert not (project / "sub" / ".kubeless-local").exists()
        assert (project / ".kubeless-local" / "admin.json").read_text() == info
    finally:
        release.touch()
    dev.wait_for_output("Watching", timeout=120)
    assert cli("call", "hello", cwd=project, check=True).stdout.strip() == "hello slow"
    assert read_ls(project)["hello"]["state"] == "Ready"


@pytest.mark.skipif(
    "docker" not in os.environ.get("KUBELESS_LOCAL_TEST_BACKENDS", "process").split(","),
    reason="docker backend not selected (KUBELESS_LOCAL_TEST_BACKENDS)",
)
def test_kill_9_of_dev_removes_its_containers(tmp_path, start_dev):
    from kubeless_local.emulator import images

    client = images.docker_client()
    project = hello_project(tmp_path)
    dev = start_dev("dev", "--backend", "docker", cwd=project)
    dev.wait_for_output("Watching", timeout=120)
    label = {"label": "kubeless-local.project=%s" % (project / ".kubeless-local").resolve()}
    assert client.containers.list(all=True, sparse=True, filters=label)  # sparse: step containers come and go
    dev.proc.send_signal(signal.SIGKILL)
    dev.proc.wait(timeout=10)
    wait_until(lambda: not client.containers.list(all=True, sparse=True, filters=label), "no container left", 60)


def settled(dev, timeout=120):
    """True once `dev` serves ("Watching"), False once it exited."""
    wait_until(lambda: dev.proc.poll() is not None or "Watching" in dev.output(), "dev settled", timeout=timeout)
    return dev.proc.poll() is None


def test_a_dev_above_a_running_dev_is_refused_and_of_two_started_at_once_one_runs(tmp_path, start_dev):
    project = hello_project(tmp_path)
    inner = start_dev("dev", cwd=project)
    assert settled(inner), inner.output()
    line = one_line_error(cli("dev", cwd=tmp_path))
    assert "%s holds %s, which kubeless-local already runs" % (tmp_path, project) in line
    assert not (tmp_path / ".kubeless-local" / "admin.json").exists()
    inner.stop()

    for _ in range(3):
        outer, inner = start_dev("dev", cwd=tmp_path), start_dev("dev", cwd=project)
        running = [dev for dev in (outer, inner) if settled(dev)]
        assert len(running) == 1, outer.output() + inner.output()
        (refused,) = {outer, inner} - set(running)
        assert refused.proc.returncode == 2 and "which kubeless-local already runs" in refused.output()
        assert "Traceback" not in refused.output()
        running[0].stop()


ENV_FROM_A_SECRET = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata: {name: hello, annotations: {local.kubeless.io/source: handler.py}}
spec:
  runtime: %s
  handler: handler.hello
  deployment:
    spec:
      template:
        spec:
          containers:
          - env:
            - {name: PASSWORD, valueFrom: {secretKeyRef: {name: db, key: password}}}
"""


@pytest.mark.parametrize("backend", ["process", "docker"])
def test_an_env_read_from_a_secret_file_made_while_dev_runs_is_the_functions_after_a_restart(
    tmp_path, start_dev, backend
):
    """The kubelet sets a `secretKeyRef` variable from the secret's key: here from secrets/<name>/<key>. The
    folder does not exist when `dev` starts (it started a watch there: `dev` failed whole), and saving the file
    starts the function again with the value (a reload in place would keep the old env)."""
    (tmp_path / "handler.py").write_text(
        "import os\n\ndef hello(event, context):\n    return os.environ.get('PASSWORD', '<unset>')\n"
    )
    (tmp_path / "function.yaml").write_text(ENV_FROM_A_SECRET % "python3.11")
    dev = start_dev("dev", "--backend", backend, cwd=tmp_path)
    dev.wait_for_output("Watching", timeout=120)
    assert "env PASSWORD: from key password of Secret db: no file" in dev.output()
    assert cli("call", "hello", cwd=tmp_path, check=True).stdout.strip() == "<unset>"  # unset, not empty
    (tmp_path / "secrets" / "db").mkdir(parents=True)
    for value in ("s3cret", "changed"):
        (tmp_path / "secrets" / "db" / "password").write_text(value)
        assert wait_for(lambda v=value: cli("call", "hello", cwd=tmp_path).stdout.strip() == v, 30), dev.output()


CONFIGMAP_VOLUME = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata: {name: hello, annotations: {local.kubeless.io/source: handler.py}}
spec:
  runtime: python3.11
  handler: handler.hello
  deployment:
    spec:
      template:
        spec:
          containers:
          - volumeMounts: [{name: settings-vol, mountPath: /etc/settings}]
          volumes: [{name: settings-vol, configMap: {name: settings}}]
"""


@pytest.mark.parametrize("backend", ["process", "docker"])
def test_a_configmap_volume_is_the_projects_configmap_folder(tmp_path, start_dev, backend):
    """A ConfigMap the pod mounts (a config file for the function) was dropped without a word: the docker
    backend now mounts configmaps/<name>/ read-only where the pod does, the process backend names the folder in
    KUBELESS_LOCAL_CONFIGMAP_<NAME>, as for secrets."""
    (tmp_path / "configmaps" / "settings").mkdir(parents=True)
    (tmp_path / "configmaps" / "settings" / "level").write_text("debug")
    (tmp_path / "handler.py").write_text(
        "import os\n\ndef hello(event, context):\n"
        "    path = os.environ['KUBELESS_LOCAL_CONFIGMAP_SETTINGS'] + '/level'\n"
        "    return open(path).read() + ' ' + path\n"
    )
    (tmp_path / "function.yaml").write_text(CONFIGMAP_VOLUME)
    dev = start_dev("dev", "--backend", backend, cwd=tmp_path)
    dev.wait_for_output("Watching", timeout=120)
    answer = cli("call", "hello", cwd=tmp_path, check=True).stdout.strip()
    folder = tmp_path / "configmaps" / "settings"
    if backend == "docker":
        assert answer == "debug /etc/settings/level"
        assert "ConfigMap settings: %s mounted read-only at /etc/settings" % folder in dev.output()
    else:
        assert answer == "debug %s/level" % folder
        said = "ConfigMap settings (mounted at /etc/settings in the pod): a local process reads it from %s" % folder
        assert said in dev.output()
    (folder / "level").write_text("info")  # a mounted ConfigMap changes in place, as the kubelet updates it
    assert wait_for(lambda: cli("call", "hello", cwd=tmp_path).stdout.startswith("info "), 30), dev.output()


# A function that starts a process in a session of its own, as puppeteer starts its browser (`detached: true`) or
# a daemon does: the process is outside the server's process group, where a pod's end takes it all the same.
DETACHED = {
    "python3.11": (
        "handler.py",
        "import subprocess\n\ndef hello(event, context):\n"
        "    return str(subprocess.Popen(['sleep', '600'], start_new_session=True).pid)\n",
    ),
    "nodejs20": (
        "handler.js",
        "const { spawn } = require('child_process');\n"
        "module.exports = { hello: () => {\n"
        "  const child = spawn('sleep', ['600'], { detached: true, stdio: 'ignore' });\n"
        "  child.unref();\n  return String(child.pid);\n} };\n",
    ),
}


def detached_project(root, runtime):
    source, code = DETACHED[runtime]
    (root / source).write_text(code)
    (root / "function.yaml").write_text(
        "apiVersion: kubeless.io/v1beta1\nkind: Function\nmetadata:\n  name: spawner\n"
        "  annotations: {local.kubeless.io/source: %s}\nspec: {runtime: %s, handler: handler.hello}\n"
        % (source, runtime)
    )
    return root


def started_detached(project):
    pid = int(cli("call", "spawner", cwd=project, check=True).stdout)
    assert alive(pid) and pid not in live_members(read_ls(project)["spawner"]["pid"])
    return pid


@pytest.mark.parametrize(("runtime", "ending"), [("python3.11", signal.SIGKILL), ("nodejs20", signal.SIGINT)])
def test_a_process_a_function_started_in_a_session_of_its_own_ends_with_dev(tmp_path, start_dev, runtime, ending):
    """It outlived `dev`, Ctrl-C and kill -9 alike: only the server's process group was killed."""
    project = detached_project(tmp_path, runtime)
    dev = start_dev("dev", cwd=project)
    dev.wait_for_output("Watching", timeout=120)
    pid = started_detached(project)
    try:
        dev.proc.send_signal(ending)
        dev.proc.wait(timeout=15)
        assert wait_for(lambda: not alive(pid), 30), "the function's detached process outlived `dev`"
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("runtime", ["python3.11", "nodejs20"])
def test_a_process_a_function_started_in_a_session_of_its_own_ends_with_the_function(tmp_path, start_dev, runtime):
    """Its function removed from the project (as its pod is deleted): what it started goes too, `dev` runs on."""
    project = detached_project(tmp_path, runtime)
    dev = start_dev("dev", cwd=project)
    dev.wait_for_output("Watching", timeout=120)
    pid = started_detached(project)
    try:
        (project / "function.yaml").unlink()
        assert wait_for(lambda: not alive(pid), 30), "the detached process outlived its function"
        assert dev.proc.poll() is None
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_the_next_dev_stops_a_detached_process_a_dead_session_left(tmp_path, start_dev):
    project = detached_project(tmp_path, "python3.11")
    dev = start_dev("dev", cwd=project)
    dev.wait_for_output("Watching", timeout=120)
    pid = started_detached(project)
    try:
        os.kill(guardian_of(project), signal.SIGKILL)  # nothing cleans up
        dev.proc.send_signal(signal.SIGKILL)
        dev.proc.wait(timeout=10)
        assert alive(pid)
        again = start_dev("dev", cwd=project)
        again.wait_for_output("Watching", timeout=120)
        assert not alive(pid)
        assert "stopped what an earlier kubeless-local (pid %d) left running" % dev.proc.pid in again.output()
        assert alive(started_detached(project))  # the new session's own are kept
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("runtime", ["python3.11", "nodejs20"])
def test_a_detached_process_of_replaced_code_ends_once_the_new_code_serves(tmp_path, start_dev, runtime):
    """A save is a new pod in the cluster: what the old code started goes once the new code serves. A save that
    does not load leaves the old code serving, with what it started (a warm browser in a module global)."""
    project = detached_project(tmp_path, runtime)
    source = project / DETACHED[runtime][0]
    dev = start_dev("dev", cwd=project)
    dev.wait_for_output("Watching", timeout=120)
    first = started_detached(project)
    try:
        code = source.read_text()
        source.write_text(code + "\n)(\n")  # does not load
        wait_until(lambda: read_ls(project)["spawner"]["state"] == "CompileError", "the broken save seen", 60)
        assert alive(first)
        source.write_text(code + "\n// saved\n" if runtime == "nodejs20" else code + "\n# saved\n")
        wait_until(lambda: read_ls(project)["spawner"]["state"] == "Ready", "the good save serves", 60)
        assert wait_for(lambda: not alive(first), 30), "the replaced code's detached process outlived it"
        second = started_detached(project)
        assert alive(second)
    finally:
        if alive(first):
            os.kill(first, signal.SIGKILL)


@pytest.mark.parametrize("backend", ["process", "docker"])
def test_a_save_that_changes_the_runtime_serves_and_shows_the_new_one(tmp_path, start_dev, backend):
    """python3.11 → nodejs20 in the manifest while `dev` runs: `ls` kept saying python3.11, and on the docker
    backend the new code's check ran `node` in the Python container (`exec: "node": executable file not found`)."""
    (tmp_path / "handler.py").write_text("def hello(event, context):\n    return 'py'\n")
    (tmp_path / "handler.js").write_text("module.exports = { hello: () => 'js' };\n")
    manifest = (
        "apiVersion: kubeless.io/v1beta1\nkind: Function\nmetadata:\n  name: switch\n"
        "  annotations: {local.kubeless.io/source: %s}\nspec: {runtime: %s, handler: handler.hello}\n"
    )
    (tmp_path / "function.yaml").write_text(manifest % ("handler.py", "python3.11"))
    dev = start_dev("dev", "--backend", backend, cwd=tmp_path)
    dev.wait_for_output("Watching", timeout=120)

    def answers(expected):
        return lambda: cli("call", "switch", cwd=tmp_path).stdout.strip() == expected

    for source, runtime, answer in (("handler.js", "nodejs20", "js"), ("handler.py", "python3.11", "py")):
        (tmp_path / "function.yaml").write_text(manifest % (source, runtime))
        assert wait_for(answers(answer), 120), dev.output()
        row = read_ls(tmp_path)["switch"]
        assert (row["runtime"], row["state"]) == (runtime, "Ready"), dev.output()


@pytest.mark.parametrize("runtime", ["python3.11", "nodejs20"])
def test_in_a_container_a_detached_process_of_replaced_code_ends_once_the_new_code_serves(tmp_path, start_dev, runtime):
    """The docker backend's in-place reload (SIGHUP in the same container) kept what the replaced code started in a
    session of its own until the container went: a browser more with every save, against the memory limit."""
    from kubeless_local.emulator import images

    project = detached_project(tmp_path, runtime)
    source = project / DETACHED[runtime][0]
    dev = start_dev("dev", "--backend", "docker", cwd=project)
    dev.wait_for_output("Watching", timeout=120)
    labels = ["kubeless-local.function=spawner", "kubeless-local.project=%s" % (project / ".kubeless-local").resolve()]
    [container] = [
        c for c in images.docker_client().containers.list(filters={"label": labels}) if "relay" not in c.name
    ]

    def sleepers():
        return [row for row in container.top()["Processes"] if "sleep 600" in row[-1]]

    cli("call", "spawner", cwd=project, check=True)
    assert len(sleepers()) == 1
    code = source.read_text()
    source.write_text(code + "\n)(\n")  # does not load: the old code serves on, with what it started
    wait_until(lambda: read_ls(project)["spawner"]["state"] == "CompileError", "the broken save seen", 60)
    assert len(sleepers()) == 1
    source.write_text(code + ("\n// saved\n" if runtime == "nodejs20" else "\n# saved\n"))
    wait_until(lambda: read_ls(project)["spawner"]["state"] == "Ready", "the good save serves", 60)
    assert wait_for(lambda: not sleepers(), 30), "the replaced code's detached process outlived it"
    cli("call", "spawner", cwd=project, check=True)
    assert len(sleepers()) == 1  # the new code's own
