"""The console script's entry answers `--version` and `call NAME [-d DATA]` without click (issue R): each line is
run both ways — as the entry answers it, and with every line sent to click's parser as before — and the two must
print the same stdout and stderr and exit with the same code, errors included. Lines the entry leaves to click
are compared too: they must reach click (whose usage errors they get)."""

import json
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kubeless_local.commands import entry

REPO = Path(__file__).resolve().parents[2]

# `kubeless-local ARGV` through the entry; with `click` first, with no line answered by the entry itself. Writes
# whether click was imported to the file named second, at exit or at the os._exit that ends a `call`.
RUN = """
import atexit, os, sys
from kubeless_local.commands import entry
way, seen = sys.argv[1:3]
if way == "click":
    entry.plain = lambda args: None
def write_seen():
    with open(seen, "w") as file:
        file.write("click" if "click" in sys.modules else "no click")
atexit.register(write_seen)
end_at_once = os._exit
os._exit = lambda code: (write_seen(), end_at_once(code))
entry.entry(sys.argv[3:])
"""

ROWS = {  # the functions of the fake session: name → (its row's fields, its answer: status, content type, body)
    "hello": ({}, None),  # answers what it received (below)
    "failing": ({}, (500, "text/plain", b"boom")),
    "slow": ({}, (408, "text/plain", b"")),
    "colored": ({}, (200, "text/plain; charset=utf-8", b"\x1b[31mred\x1b[0m")),
    "stale": ({"state": "Error", "error": "SyntaxError: invalid syntax (handler.py, line 2)"}, None),
    "broken": (
        {"state": "Error", "serving": False, "error": "Traceback (most recent call last):\n  File x\nValueError: bad"},
        None,
    ),
    "hanging": ({}, None),
}


class FakeSession(BaseHTTPRequestHandler):
    """A running session's admin API and its functions (/fn/NAME), on one port: what `call` talks to."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.answer()

    def do_POST(self):
        self.answer()

    def answer(self):
        port = self.server.server_address[1]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, content_type = 200, "application/json"
        if self.path.startswith("/api/functions?"):
            name = self.path.partition("name=")[2].partition("&")[0]
            row = {"name": name, "state": "Ready", "error": "", "serving": True, "recorded": True, "port": port}
            rows = [{**row, "url": "http://127.0.0.1:%d/fn/%s" % (port, name), **ROWS[name][0]}] if name in ROWS else []
            body = json.dumps(rows).encode()
        else:
            name = self.path.split("/")[2]
            if name == "hanging":
                self.server.called.set()
                self.server.release.wait(30)
            if ROWS[name][1]:
                status, content_type, body = ROWS[name][1]
            else:
                seen = (self.command, self.headers.get("Content-Type"), self.headers.get("X-Kubeless-Local-Source"))
                status, content_type, body = 200, "text/plain", ("%s %s %s " % seen).encode() + body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def session(tmp_path):
    """(a project folder whose session is the fake, a folder outside any project, the environment of both)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeSession)
    server.called, server.release = threading.Event(), threading.Event()
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    state = tmp_path / "project" / ".kubeless-local"
    state.mkdir(parents=True)
    info = {"port": server.server_address[1], "pid": os.getpid(), "root": str(state.parent), "token": "t"}
    (state / "admin.json").write_text(json.dumps(info))
    registry = tmp_path / "registry"
    registry.mkdir()
    entry_info = {"pid": os.getpid(), "root": str(state.parent), "admin": str(state / "admin.json"), "kind": "dev"}
    (registry / "1-1.json").write_text(json.dumps(entry_info))
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "KUBELESS_LOCAL_REGISTRY": str(registry)}
    env.pop(entry.COMPLETION_VARIABLE, None)
    yield server, state.parent, outside, env
    server.release.set()
    server.shutdown()
    server.server_close()


def run(way, argv, cwd, env, tmp_path):
    """(exit code, stdout, stderr, whether click was imported) of `kubeless-local ARGV` run `way`."""
    seen = tmp_path / ("seen-" + way)
    command = [sys.executable, "-c", RUN, way, str(seen), *argv]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr, seen.read_text() == "click"


LINES = {  # what the entry answers itself: (argv, where it runs: the project or outside any)
    "version": (["--version"], "project"),
    "call": (["call", "hello"], "project"),
    "data": (["call", "hello", "-d", '{"a": 1}'], "project"),
    "data first": (["call", "--data", "text", "hello"], "project"),
    "data=": (["call", "hello", "--data=x=1"], "project"),
    "empty data": (["call", "hello", "-d", ""], "project"),
    "across sessions": (["call", "hello"], "outside"),
    "unknown function": (["call", "nope"], "project"),
    "failing answer": (["call", "failing"], "project"),
    "timeout": (["call", "slow"], "project"),
    "escape sequences off a terminal": (["call", "colored"], "project"),
    "a stale function": (["call", "stale"], "project"),
    "a function that does not serve": (["call", "broken"], "project"),
    "run a missing file": (["run", "nope.py", "--runtime", "python3.11", "--handler", "nope.hello"], "outside"),
    "run missing deps": (["run", ".", "-r", "python3.11", "--handler", "h.hello", "-d", "nope.txt"], "outside"),
}
TO_CLICK = {  # what the entry leaves to click's parser (its options and usage errors)
    "no name": ["call"],
    "two names": ["call", "hello", "other"],
    "data missing": ["call", "hello", "-d"],
    "data that looks like an option": ["call", "hello", "-d", "-x"],
    "data twice": ["call", "hello", "-d", "a", "-d", "b"],
    "another option": ["call", "hello", "-X", "PUT"],
    "data file missing": ["call", "hello", "--data-file", "nowhere.json"],
    "help": ["call", "--help"],
    "version after a command": ["call", "--version"],
    "run on port 0": ["run", "nope.py", "--runtime", "python3.11", "--handler", "nope.hello", "--port", "0"],
    "run with a memory that is no quantity": ["run", ".", "-r", "python3.11", "--handler", "h.hello", "--memory", "x"],
    "run without a handler": ["run", "nope.py", "--runtime", "python3.11"],
}


@pytest.mark.parametrize("case", sorted(LINES))
def test_a_line_the_entry_answers_prints_and_exits_as_the_click_command(case, session, tmp_path):
    _server, project, outside, env = session
    argv, where = LINES[case]
    cwd = project if where == "project" else outside
    *clicked, click_seen = run("click", argv, cwd, env, tmp_path)
    *quick, quick_seen = run("quick", argv, cwd, env, tmp_path)
    assert quick == clicked
    assert click_seen, "the click way ran click"
    assert not quick_seen, "the entry's way needs no click (escape sequences off a terminal included)"


def test_the_lines_answered_cover_success_and_each_error(session, tmp_path):
    """The cases above are what they say (the comparison alone would pass if both ways failed alike)."""
    _server, project, outside, env = session
    assert run("quick", ["--version"], project, env, tmp_path)[:2] == (0, "kubeless-local, version %s\n" % version())
    assert run("quick", ["call", "hello", "-d", '{"a": 1}'], project, env, tmp_path)[:2] == (
        0,
        'POST application/json call {"a": 1}\n',
    )
    assert run("quick", ["call", "hello"], project, env, tmp_path)[:3] == (0, "GET None call \n", "")
    assert run("quick", ["call", "hello"], outside, env, tmp_path)[2] == "(the dev session of %s)\n" % project
    assert run("quick", ["call", "colored"], project, env, tmp_path)[1] == "red\n"  # stripped off a terminal
    code, out, err, _ = run("quick", ["call", "nope"], project, env, tmp_path)
    assert (code, out) == (2, "") and err.startswith("error: no function 'nope'")
    assert run("quick", ["call", "failing"], project, env, tmp_path)[:3] == (
        1,
        "boom\n",
        "error: the function answered 500 Internal Server Error\n",
    )
    assert run("quick", ["call", "slow"], project, env, tmp_path)[2] == "error: Request timeout exceeded\n"
    assert run("quick", ["call", "broken"], project, env, tmp_path)[:3] == (
        1,
        "",
        "error: broken is Error: ValueError: bad\n",
    )
    assert run("quick", ["call", "stale"], project, env, tmp_path)[2].startswith("warning: stale is Error (SyntaxError")


def version():
    from kubeless_local import __version__

    return __version__


def test_no_running_session_is_the_same_error_both_ways(tmp_path):
    """Outside any project and with no session in the registry: one line, exit 2."""
    registry, elsewhere = tmp_path / "registry", tmp_path / "elsewhere"
    registry.mkdir()
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "KUBELESS_LOCAL_REGISTRY": str(registry)}
    env.pop(entry.COMPLETION_VARIABLE, None)
    *clicked, _ = run("click", ["call", "hello"], elsewhere, env, tmp_path)
    *quick, quick_seen = run("quick", ["call", "hello"], elsewhere, env, tmp_path)
    assert quick == clicked and not quick_seen
    assert quick[0] == 2 and quick[2].startswith("error: no running `kubeless-local dev`")


@pytest.mark.parametrize("case", sorted(TO_CLICK))
def test_a_line_the_entry_leaves_to_click_gets_clicks_answer(case, session, tmp_path):
    _server, project, _outside, env = session
    *clicked, _ = run("click", TO_CLICK[case], project, env, tmp_path)
    *quick, quick_seen = run("quick", TO_CLICK[case], project, env, tmp_path)
    assert quick == clicked
    assert quick_seen, "the entry left the line to click"


@pytest.mark.parametrize("way", ["click", "quick"])
def test_ctrl_c_during_a_call_is_clicks_aborted(way, session, tmp_path):
    """Ctrl-C while the function has not answered: a blank line and "Aborted!" on stderr, exit 1, both ways."""
    server, project, _outside, env = session
    seen = tmp_path / "seen"
    command = [sys.executable, "-c", RUN, way, str(seen), "call", "hanging"]
    proc = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.called.wait(30), "the call reached the function"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, out, err) == (1, "", "\nAborted!\n")
    assert (seen.read_text() == "click") == (way == "click")


def test_plain_call_reads_a_name_and_at_most_one_data():
    assert entry.plain_call(["hello"]) == ("hello", None)
    assert entry.plain_call(["-d", "x", "hello"]) == ("hello", "x")
    assert entry.plain_call(["hello", "--data=a=b"]) == ("hello", "a=b")
    for refused in ([], [""], ["a", "b"], ["a", "-d"], ["a", "-d", "-1"], ["a", "-dx"], ["--", "a"], ["a", "-h"]):
        assert entry.plain_call(refused) is None, refused


RUN_LINES = [  # `run`'s arguments, split at spaces: lines the entry reads to head-start the runtime before click's import
    "handler.py --runtime python3.11 --handler handler.hello",
    "-r nodejs20 --handler=handler.hello handler.js --port 8080 --name hi",
    "src --runtime=python3.11 --handler Main.hello -e A=1 --env B=2 -l x=y --timeout 5",
    "handler.py --runtime python3.11 --handler handler.hello --backend process --ignore *.tmp",
    "handler.py --runtime python3.11 --handler handler.hello -d requirements.txt --memory 64Mi",
]
RUN_LINES_LEFT_TO_CLICK = [
    "handler.py --runtime python3.11",  # no handler: click says it
    "handler.py --handler handler.hello",
    "handler.py --runtime python3.11 --handler handler.hello --debug",
    "handler.py --runtime python3.11 --handler handler.hello --runtime-image img",
    "handler.py --runtime python3.11 --handler handler.hello --unknown x",
    "handler.py --runtime python3.11 --handler handler.hello --name",
    "handler.py --runtime -x --handler handler.hello",
    "handler.py other.py --runtime python3.11 --handler handler.hello",
    "-- handler.py --runtime python3.11 --handler handler.hello",
    "handler.py -rpython3.11 --handler handler.hello",
    "-h",
]


@pytest.mark.parametrize("text", RUN_LINES)
def test_a_plain_run_line_is_read_as_click_reads_it(text, monkeypatch):
    from kubeless_local.commands.local import run

    monkeypatch.delenv("KUBELESS_LOCAL_BACKEND", raising=False)
    line = text.split()
    params = run.make_context("run", list(line)).params
    found = entry.plain_run(line)
    assert {key: tuple(v) if key in entry.RUN_REPEATED else v for key, v in found.items()} == {
        key: params[key] if isinstance(params[key], (str, tuple)) else str(params[key]) for key in found
    }


RUN_LINES_RUN_HERE = [  # (`run`'s arguments, $KUBELESS_LOCAL_BACKEND): lines the entry runs without click
    ("handler.py --runtime python3.11 --handler handler.hello", None),
    ("-r nodejs20 --handler=handler.hello handler.js --port 8080 --name hi --port=9090", None),
    ("src --runtime=python3.11 --handler Main.hello -e A=1 --env B=2,C=3 -l x=y --timeout 5 --secrets s", None),
    ("handler.py --runtime python3.11 --handler handler.hello --backend process --ignore *.tmp --ignore b/", "docker"),
    ("handler.py --runtime python3.11 --handler handler.hello -d requirements.txt", "process"),
    ("handler.py --runtime python3.11 --handler handler.hello --port 65535", "auto"),
]
RUN_LINES_RUN_BY_CLICK = [  # (the same): lines the entry reads (and head-starts) but leaves to click to convert
    ("handler.py --runtime python3.11 --handler handler.hello --memory 64Mi", None),
    ("handler.py --runtime python3.11 --handler handler.hello --isolation per-call", None),
    ("handler.py --runtime python3.11 --handler handler.hello --port 0", None),
    ("handler.py --runtime python3.11 --handler handler.hello --port 65536", None),
    ("handler.py --runtime python3.11 --handler handler.hello --port 80x", None),
    ("handler.py --runtime python3.11 --handler handler.hello --port ８０", None),
    ("handler.py --runtime python3.11 --handler handler.hello --backend Docker", None),
    ("handler.py --runtime python3.11 --handler handler.hello", "kubernetes"),
    ("handler.py --runtime python3.11 --handler handler.hello", ""),
]


@pytest.mark.parametrize("text, backend", RUN_LINES_RUN_HERE)
def test_a_plain_run_line_runs_with_the_arguments_click_would_pass(text, backend, monkeypatch):
    """The entry's run_function arguments, with run_function's defaults for the options not given, are those
    click's parser passes to the command (which hands them to run_function as they are)."""
    import inspect

    from kubeless_local.commands.local import run
    from kubeless_local.commands.running import run_function

    if backend is None:
        monkeypatch.delenv("KUBELESS_LOCAL_BACKEND", raising=False)
    else:
        monkeypatch.setenv("KUBELESS_LOCAL_BACKEND", backend)
    line = text.split()
    arguments = entry.run_arguments(entry.plain_run(line))
    assert arguments is not None
    defaults = {
        name: p.default for name, p in inspect.signature(run_function).parameters.items() if p.default is not p.empty
    }
    assert {**defaults, **arguments} == run.make_context("run", list(line)).params


@pytest.mark.parametrize("text, backend", RUN_LINES_RUN_BY_CLICK)
def test_a_run_line_whose_values_click_converts_is_left_to_click(text, backend, monkeypatch):
    if backend is None:
        monkeypatch.delenv("KUBELESS_LOCAL_BACKEND", raising=False)
    else:
        monkeypatch.setenv("KUBELESS_LOCAL_BACKEND", backend)
    line = text.split()
    assert entry.plain_run(line) is not None
    assert entry.run_arguments(entry.plain_run(line)) is None
    assert entry.plain(["run", *line]) is None


def test_the_run_options_the_entry_reads_are_run_s_own_and_take_a_value():
    """RUN_VALUE_OPTIONS is a twin of `run`'s declaration (commands/local.py), kept so that click is not imported:
    an option there that became a flag would make the entry take FILE for its value."""
    from kubeless_local.commands.local import run

    options = {opt: param for param in run.params for opt in param.opts}
    for option, key in entry.RUN_VALUE_OPTIONS.items():
        param = options[option]
        assert not getattr(param, "is_flag", False) and param.nargs == 1, option
        assert param.name == key and param.multiple == (key in entry.RUN_REPEATED), option


@pytest.mark.parametrize("text", RUN_LINES_LEFT_TO_CLICK)
def test_any_other_run_line_is_left_to_the_command(text):
    assert entry.plain_run(text.split()) is None


def test_the_early_head_start_is_the_one_the_run_command_asks_for(tmp_path, monkeypatch):
    """The entry starts the runtime's server side for the state folder `run` will use; the command's own head
    start then finds it asked for (one a runtime); a URL, the docker backend or a line left to click: none."""
    from kubeless_local.commands.running import code_location
    from kubeless_local.emulator import headstart, prestart

    asked = []
    monkeypatch.setattr(prestart, "start", lambda runtime, project: asked.append((runtime, project)))
    monkeypatch.delenv("KUBELESS_LOCAL_BACKEND", raising=False)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "handler.py").write_text("def hello(event, context):\n    return 'hello'\n")
    monkeypatch.chdir(tmp_path / "src")
    entry.early_head_start(["handler.py", "--runtime", "python3.11", "--handler", "handler.hello", "--name", "hi"])
    _, _, state_dir = headstart.run_folders(code_location("handler.py", "FILE"), "handler.hello", "hi")
    assert asked == [("python3.11", str(state_dir.resolve()))]
    assert state_dir.resolve() == tmp_path / "src" / ".kubeless-local" / "run-hi"
    asked.clear()
    for skipped in (
        ["https://example.invalid/handler.py", "--runtime", "python3.11", "--handler", "handler.hello"],
        ["missing.py", "--runtime", "python3.11", "--handler", "handler.hello"],
        ["handler.py", "--runtime", "python3.11", "--handler", "handler.hello", "--backend", "docker"],
        ["handler.py", "--runtime", "python3.11", "--handler", "handler.hello", "--debug"],
    ):
        entry.early_head_start(skipped)
    monkeypatch.setenv("KUBELESS_LOCAL_BACKEND", "docker")
    entry.early_head_start(["handler.py", "--runtime", "python3.11", "--handler", "handler.hello"])
    assert asked == []
    monkeypatch.delenv("KUBELESS_LOCAL_BACKEND")

    def fails(runtime, project):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(prestart, "start", fails)  # a guess that fails is left to the command
    entry.early_head_start(["handler.py", "--runtime", "python3.11", "--handler", "handler.hello"])
