"""The user's day from the README, end to end, with the real command."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from conftest import cli, wait_for_answer
from processes import alive
from sockets import free_port, taken_port
from waiting import wait_until

EXAMPLES = Path(__file__).parent.parent / "fixtures" / "kubeless-examples"
HELLO_V2 = 'def hello(event, context):\n    return "v2:" + event["data"].decode()\n'
BROKEN = "def hello(event, context):\n    return (\n"


def read_ls(cwd):
    return {row["name"]: row for row in json.loads(cli("ls", "-o", "json", cwd=cwd, check=True).stdout)}


def test_init_dev_call_ls_logs_reload(tmp_path, start_dev):
    cli("init", "hello", "--runtime", "python3.11", cwd=tmp_path, check=True)
    project = tmp_path / "hello"
    assert sorted(p.name for p in project.iterdir()) == ["function.yaml", "handler.py", "requirements.txt"]
    dev = start_dev("dev", cwd=project)
    dev.wait_for_output("Watching")
    assert "hello" in dev.output() and "Ready" in dev.output()

    result = cli("call", "hello", "--data", '{"a": 1}', cwd=project, check=True)
    assert json.loads(result.stdout) == {"hello": "world", "data": {"a": 1}}
    assert cli("call", "hello", cwd=project, check=True).stdout.strip() == "hello world"

    row = read_ls(project)["hello"]
    assert (row["state"], row["runtime"], row["calls"], row["errors"]) == ("Ready", "python3.11", 2, 0)
    url = row["url"]

    # Save new code: it answers without restarting dev.
    (project / "handler.py").write_text(HELLO_V2)
    wait_for_answer(url, "v2:x", data="x")
    # A syntax error keeps the last good version serving and is shown with file:line.
    (project / "handler.py").write_text(BROKEN)
    dev.wait_until(lambda: read_ls(project)["hello"]["state"] == "CompileError", "hello in CompileError")
    assert requests.post(url, data="y", timeout=5).text == "v2:y"
    dev.wait_for_output("%s:2: '(' was never closed" % (project / "handler.py"), timeout=10)
    # Fixing it reloads.
    (project / "handler.py").write_text(HELLO_V2.replace("v2", "v3"))
    wait_for_answer(url, "v3:z", data="z")
    row = read_ls(project)["hello"]
    assert row["state"] == "Ready" and row["reloads"] == 2

    logs = cli("logs", "hello", cwd=project, check=True).stdout
    assert "called with {'a': 1}" in logs and '"POST / HTTP/1.1" 200' in logs
    assert cli("logs", "hello", "--tail", "1", cwd=project, check=True).stdout.count("\n") == 1

    # logs -f prints new lines as they come, until interrupted.
    follower = subprocess.Popen(
        [sys.executable, "-m", "kubeless_local", "logs", "hello", "-f", "--tail", "1"],
        cwd=project,
        stdout=subprocess.PIPE,
        text=True,
    )
    printed = read_lines_in_background(follower.stdout)
    try:
        # The admin API subscribes the follower before it sends the tail: once the last existing line is
        # printed, every later line reaches it (a fixed wait missed the line under load, and hung).
        wait_until(lambda: printed, "the follower printing the last existing line", timeout=60)
        requests.post(url + "?followed", timeout=5)  # the access log line names it
        wait_until(lambda: any("/?followed HTTP" in line for line in printed[1:]), "the new line followed", timeout=30)
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=30)


def read_lines_in_background(stream):
    """The lines `stream` prints, appended as they come by a thread (ends with the stream)."""
    lines: list = []

    def pump():
        for line in stream:
            lines.append(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_fifo_named_yaml_neither_hangs_dev_nor_its_reloads(tmp_path, start_dev, stop):
    """A FIFO (`mkfifo fifo.yaml`) in the project: `dev` starts, says it skips it, serves, reloads, and stops
    on Ctrl-C or SIGTERM (issue J.7: it hung start-up, and Ctrl-C could not stop it)."""
    cli("init", "hello", "--runtime", "python3.11", cwd=tmp_path, check=True)
    project = tmp_path / "hello"
    os.mkfifo(project / "fifo.yaml")
    dev = start_dev("dev", cwd=project)
    dev.wait_for_output("Watching")
    assert "%s: a FIFO, not a regular file or folder, skipped" % (project / "fifo.yaml") in dev.output()
    url = read_ls(project)["hello"]["url"]
    assert requests.post(url, data="x", timeout=5).ok
    (project / "handler.py").write_text(HELLO_V2)  # a reload walks the manifests again
    wait_for_answer(url, "v2:x", data="x")
    dev.proc.send_signal(stop)
    assert dev.proc.wait(timeout=30) == 128 + stop


def test_run_without_a_manifest_with_kubeless_flags(tmp_path, start_dev):
    (tmp_path / "handler.py").write_text(
        "import os\n\ndef hello(event, context):\n    return os.environ['GREETING'] + ' ' + context['timeout'].__str__()\n"
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
        "--label",
        "app=x",
        "--timeout",
        "5",
        "--port",
        str(port),
        cwd=tmp_path,
    )
    dev.wait_for_output("Watching")
    assert requests.get("http://127.0.0.1:%d/" % port, timeout=5).text == "hi 5.0"
    (tmp_path / "handler.py").write_text("def hello(event, context):\n    return 'edited'\n")
    wait_for_answer("http://127.0.0.1:%d/" % port, "edited")


def test_ctrl_c_leaves_no_processes(tmp_path, start_dev):
    cli("init", "hello", "--runtime", "python3.11", cwd=tmp_path, check=True)
    dev = start_dev("dev", cwd=tmp_path / "hello")
    dev.wait_for_output("Watching")
    pid = read_ls(tmp_path / "hello")["hello"]["pid"]
    assert "is already running" in one_line_error(cli("dev", cwd=tmp_path / "hello"))
    dev.proc.send_signal(signal.SIGINT)
    assert dev.proc.wait(timeout=15) == 130  # 128 + SIGINT, as shells report Ctrl-C
    wait_until(lambda: not alive(pid), "the runtime server %d gone" % pid, timeout=30)
    assert not (tmp_path / "hello" / ".kubeless-local" / "admin.json").exists()


def one_line_error(result):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_bad_input_is_one_line_and_exit_code_2(tmp_path):
    (tmp_path / "handler.py").write_text("def hello(event, context):\n    return 'x'\n")
    manifest = tmp_path / "function.yaml"
    cases = {
        "kind: Function\nmetadata: [oops\n": "malformed YAML",
        "apiVersion: kubeless.io/v1beta1\nkind: Funktion\nmetadata: {name: a}\n": "unknown kind",
        "apiVersion: kubeless.io/v1beta1\nkind: Function\nmetadata: {name: a, annotations: {local.kubeless.io/source: handler.py}}\nspec: {runtime: python3.11, handler: hello}\n": "spec.handler",
        "apiVersion: kubeless.io/v1beta1\nkind: Function\nmetadata: {name: a, annotations: {local.kubeless.io/source: gone.py}}\nspec: {runtime: python3.11, handler: handler.hello}\n": "gone.py does not exist",
    }
    for text, expected in cases.items():
        manifest.write_text(text)
        assert expected in one_line_error(cli("dev", cwd=tmp_path))
    unknown = one_line_error(
        cli("run", "handler.py", "--runtime", "fortran77", "--handler", "handler.hello", cwd=tmp_path)
    )
    assert "unknown runtime 'fortran77'" in unknown and unknown.endswith("(see `kubeless-local get-server-config`)")
    manifest.unlink()
    assert one_line_error(cli("dev", cwd=tmp_path)) == (
        "error: %s: no Kubeless Function found in *.yaml here; create one with `kubeless-local init`" % tmp_path
    )
    assert "no running `kubeless-local dev`" in one_line_error(cli("call", "hello", cwd=tmp_path))


def test_bad_function_does_not_stop_the_others(tmp_path, start_dev):
    (tmp_path / "good.py").write_text("def hello(event, context):\n    return 'good'\n")
    (tmp_path / "bad.py").write_text("import no_such_module\n\ndef hello(event, context):\n    return 'bad'\n")
    (tmp_path / "functions.yaml").write_text("""\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata: {name: good, annotations: {local.kubeless.io/source: good.py}}
spec: {runtime: python3.11, handler: good.hello}
---
apiVersion: kubeless.io/v1beta1
kind: Function
metadata: {name: bad, annotations: {local.kubeless.io/source: bad.py}}
spec: {runtime: python3.11, handler: bad.hello}
---
apiVersion: kubeless.io/v1beta1
kind: Function
metadata: {name: wrongrt, annotations: {local.kubeless.io/source: good.py}}
spec: {runtime: cobol85, handler: good.hello}
""")
    dev = start_dev("dev", cwd=tmp_path)
    dev.wait_for_output("Watching")
    rows = read_ls(tmp_path)
    assert rows["good"]["state"] == "Ready"
    assert rows["bad"]["state"] == "CompileError" and "No module named 'no_such_module'" in rows["bad"]["error"]
    assert rows["wrongrt"]["state"] == "ConfigError" and "unknown runtime 'cobol85'" in rows["wrongrt"]["error"]
    assert rows["wrongrt"]["error"].endswith("(see `kubeless-local get-server-config`)")  # the CLI's words, in ls too
    assert cli("call", "good", cwd=tmp_path, check=True).stdout.strip() == "good"
    # Fixing the manifest while dev runs starts the function that could not run.
    manifest = tmp_path / "functions.yaml"
    manifest.write_text(manifest.read_text().replace("runtime: cobol85", "runtime: python3.11"))
    dev.wait_until(lambda: read_ls(tmp_path)["wrongrt"]["state"] == "Ready", "wrongrt Ready")
    assert read_ls(tmp_path)["wrongrt"]["port"] > 0
    assert cli("call", "wrongrt", cwd=tmp_path, check=True).stdout.strip() == "good"


def test_port_in_use_is_reported(tmp_path):
    (tmp_path / "handler.py").write_text("def hello(event, context):\n    return 'x'\n")
    with taken_port() as port:
        line = one_line_error(
            cli(
                "run",
                "handler.py",
                "--runtime",
                "python3.11",
                "--handler",
                "handler.hello",
                "--port",
                str(port),
                cwd=tmp_path,
            )
        )
    assert "port %d" % port in line and "in use" in line


def make_local_package(root, version):
    """A tiny pip-installable package in a folder (no index needed)."""
    pkg = root / ("greetpkg-%s" % version)
    (pkg / "greetpkg").mkdir(parents=True)
    (pkg / "greetpkg" / "__init__.py").write_text("VERSION = %r\n" % version)
    (pkg / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "greetpkg"\nversion = "%s"\n' % version
    )
    return pkg


def test_dependencies_install_once_per_content_and_reinstall_on_change(tmp_path, start_dev, monkeypatch):
    project = tmp_path / "p"
    project.mkdir()
    v1, v2 = make_local_package(tmp_path, "1.0"), make_local_package(tmp_path, "2.0")
    (project / "requirements.txt").write_text("%s\n" % v1)
    (project / "handler.py").write_text("import greetpkg\n\ndef hello(event, context):\n    return greetpkg.VERSION\n")
    port = free_port()
    dev = start_dev(
        "run",
        "handler.py",
        "--runtime",
        "python3.11",
        "--handler",
        "handler.hello",
        "--dependencies",
        "requirements.txt",
        "--port",
        str(port),
        cwd=project,
    )
    dev.wait_for_output("Watching", timeout=120)
    url = "http://127.0.0.1:%d/" % port
    assert requests.get(url, timeout=5).text == "1.0"
    assert dev.output().count("installing requirements.txt") == 1
    # Code edits with the same requirements never reinstall.
    (project / "handler.py").write_text(
        "import greetpkg\n\ndef hello(event, context):\n    return 'v' + greetpkg.VERSION\n"
    )
    wait_for_answer(url, "v1.0")
    assert dev.output().count("installing requirements.txt") == 1
    # A changed requirements file installs the new dependencies and restarts with them.
    (project / "requirements.txt").write_text("%s\n" % v2)
    wait_for_answer(url, "v2.0", timeout=120)
    dev.wait_for_output(
        "installing requirements.txt (sha256 %s" % hashlib.sha256(("%s\n" % v2).encode()).hexdigest()[:12]
    )
    assert dev.output().count("installing requirements.txt") == 2


def test_inline_base64_zip_manifest_runs(tmp_path, start_dev):
    import base64
    import hashlib
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.py", "from helper import word\n\ndef foo(event, context):\n    return word()\n")
        archive.writestr("helper.py", "def word():\n    return 'zipped'\n")
    data = buffer.getvalue()
    port = free_port()
    (tmp_path / "function.yaml").write_text(
        """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: zipped
  annotations: {local.kubeless.io/port: "%d"}
spec:
  runtime: python3.8
  handler: hello.foo
  function-content-type: base64+zip
  checksum: sha256:%s
  function: %s
"""
        % (port, hashlib.sha256(data).hexdigest(), base64.b64encode(data).decode())
    )
    dev = start_dev("dev", cwd=tmp_path)
    dev.wait_for_output("Watching")
    dev.wait_for_output("python3.8 is a legacy Kubeless runtime; running it as python3.11", timeout=10)
    assert requests.get("http://127.0.0.1:%d/" % port, timeout=5).text == "zipped"


@pytest.mark.parametrize("runtime", ["python3.11", "nodejs20", "ruby3.1", "php8.2", "go1.14", "java11"])
def test_init_scaffolds_a_function_that_loads(tmp_path, runtime):
    from kubeless_local import spec as specs

    cli("init", "fn", "--runtime", runtime, cwd=tmp_path, check=True)
    manifests = specs.load(tmp_path / "fn")
    assert [f.name for f in manifests.functions] == ["fn"]
    fn = manifests.functions[0]
    assert fn.runtime == runtime and fn.source.exists()
    assert not any("__pycache__" in str(p) for p in (tmp_path / "fn").rglob("*"))


def test_a_broken_manifest_keeps_the_running_functions(tmp_path, start_dev):
    cli("init", "hello", "--runtime", "python3.11", cwd=tmp_path, check=True)
    project = tmp_path / "hello"
    dev = start_dev("dev", cwd=project)
    dev.wait_for_output("Watching")
    manifest = project / "function.yaml"
    good = manifest.read_text()
    manifest.write_text(good + "  timeout: [unclosed\n")
    dev.wait_for_output("malformed YAML", timeout=10)
    dev.wait_for_output("still serving its last good manifest")
    assert (
        read_ls(project)["hello"]["state"] == "ConfigError" and "malformed YAML" in read_ls(project)["hello"]["error"]
    )
    assert cli("call", "hello", cwd=project, check=True).stdout.strip() == "hello world"
    manifest.write_text(good.replace('timeout: "180"', 'timeout: "5"'))
    dev.wait_until(lambda: read_ls(project)["hello"]["reloads"] >= 1, "hello reloaded")
    assert cli("call", "hello", cwd=project, check=True).stdout.strip() == "hello world"
    # A typo in the handler: the last good code keeps serving, `ls` says why; fixing it reloads.
    manifest.write_text(good.replace("handler.hello", "handler.helo"))
    # The new server fails (CompileError), then the last good code starts again: wait for that to settle.
    dev.wait_for_output("still serving the last good code")
    row = read_ls(project)["hello"]
    assert row["state"] == "CompileError" and "helo" in row["error"]
    assert cli("call", "hello", cwd=project, check=True).stdout.strip() == "hello world"
    manifest.write_text(good)
    dev.wait_until(lambda: read_ls(project)["hello"]["state"] == "Ready", "hello Ready again")
    assert cli("call", "hello", cwd=project, check=True).stdout.strip() == "hello world"


def test_a_bad_manifest_among_good_ones_is_a_config_error_of_its_own(tmp_path, start_dev):
    """The Kubeless examples folder's old manifests (apiVersion k8s.io/v1) beside a good function: dev runs
    the good one and shows each bad one as ConfigError naming its file; a removed one goes."""
    project = tmp_path / "examples"
    shutil.copytree(EXAMPLES, project)
    (project / "hello.yaml").write_text(
        "apiVersion: kubeless.io/v1beta1\nkind: Function\n"
        "metadata: {name: hello, annotations: {local.kubeless.io/source: python/helloget.py}}\n"
        "spec: {runtime: python3.11, handler: helloget.foo}\n"
    )
    dev = start_dev("dev", cwd=project)
    dev.wait_for_output("Watching")
    assert cli("call", "hello", cwd=project, check=True).stdout.strip() == "hello world"
    rows = read_ls(project)
    assert rows["hello"]["state"] == "Ready"
    # both old files name their Function "function": the second is shown under its file's path
    old = {
        "function": project / "nodejs" / "function.yaml",
        "python/function.yaml": project / "python" / "function.yaml",
    }
    for name, path in old.items():
        assert rows[name]["state"] == "ConfigError", rows
        assert str(path) in rows[name]["error"] and "apiVersion 'k8s.io/v1'" in rows[name]["error"]
        assert str(path) in dev.output()
    assert sorted(rows) == ["function", "hello", "python/function.yaml"]  # LambDa: not a Kubeless kind
    table = cli("ls", cwd=project, check=True).stdout
    assert "ConfigError" in table and str(old["python/function.yaml"]) in table
    old["python/function.yaml"].unlink()
    dev.wait_until(lambda: "python/function.yaml" not in read_ls(project), "the removed file's row gone")


def test_no_arguments_prints_help_and_exits_0(tmp_path):
    result = cli(cwd=tmp_path)
    assert result.returncode == 0 and "Usage:" in result.stdout


def test_unrelated_yaml_and_trees_do_not_stop_dev(tmp_path, start_dev):
    """A Helm chart, a big data YAML, node_modules and an --ignore'd folder beside a function: dev starts,
    says once what it skipped, and the CLI's new flags work against it."""
    cli("init", "hello", "--runtime", "python3.11", cwd=tmp_path, check=True)
    project = tmp_path / "hello"
    (project / "handler.py").write_text(
        "def hello(event, context):\n"
        "    request = event['extensions']['request']\n"
        "    return '%s %s %s' % (request.method, request.headers.get('X-Trace'), event['data'].decode())\n"
    )
    chart = project / "chart" / "templates"
    chart.mkdir(parents=True)
    (chart / "function.yaml").write_text(
        "apiVersion: kubeless.io/v1beta1\nkind: Function\n"
        "metadata: {name: {{ .Values.name }}}\nspec: {runtime: {{ .Values.rt }}}\n"
    )
    (project / "values.yaml").write_text("rows:\n" + "  - {id: 1, name: [unclosed\n" * 1000)
    (project / "node_modules" / "x").mkdir(parents=True)
    (project / "node_modules" / "x" / "bad.yaml").write_text("kind: Function\nmetadata: [oops\n")
    (project / "scratch").mkdir()
    (project / "scratch" / "bad.yaml").write_text("kind: Function\nmetadata: [oops\n")
    dev = start_dev("dev", "--ignore", "scratch/", cwd=project)
    dev.wait_for_output("Watching")
    assert dev.output().count("not loaded: a template") == 1
    table = cli("ls", cwd=project, check=True).stdout
    assert read_ls(project)["hello"]["url"] in table  # piped: full width, never cut at 80 columns
    (tmp_path / "event.txt").write_text("from-a-file")
    result = cli(
        "call",
        "hello",
        "-X",
        "POST",
        "-H",
        "X-Trace: t-1",
        "--data-file",
        str(tmp_path / "event.txt"),
        cwd=project,
        check=True,
    )
    assert result.stdout.strip() == "POST t-1 from-a-file"
    stamped = cli("logs", "hello", "--since", "1h", "--timestamps", cwd=project, check=True).stdout.splitlines()
    assert stamped and all(re_timestamp(line) for line in stamped), stamped


def re_timestamp(line):
    import re

    return re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", line)


def test_a_source_outside_the_project_is_refused(tmp_path):
    (tmp_path / "function.yaml").write_text(
        "apiVersion: kubeless.io/v1beta1\nkind: Function\n"
        "metadata: {name: a, annotations: {local.kubeless.io/source: /etc/passwd}}\n"
        "spec: {runtime: python3.11, handler: passwd.hello}\n"
    )
    line = one_line_error(cli("dev", cwd=tmp_path))
    assert "local.kubeless.io/source" in line and "outside the project folder" in line
