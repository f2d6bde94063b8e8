"""Which modules `--version` and `call` import (issue R): their start-up is most of their time, so the console
script's entry answers them without click (tests/unit/test_cli_entry.py: with the same output), the root group
loads a command's module only when it runs, and `call` needs no engine, YAML, rich or HTTP library. Structural:
the modules a fresh interpreter lists with `-X importtime`, never a timing."""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kubeless_local.commands import root

REPO = Path(__file__).resolve().parents[2]

# What the two commands may import of ours; growing these lists is a decision, not an accident.
VERSION_MODULES = {
    "kubeless_local",
    "kubeless_local.commands",
    "kubeless_local.commands.entry",
    "kubeless_local.commands.output",
    "kubeless_local.errors",
}
CALL_MODULES = VERSION_MODULES | {
    "kubeless_local.client",
    "kubeless_local.events",
    "kubeless_local.paths",
    "kubeless_local.places",  # paths' os-only part
    "kubeless_local.emulator",  # the package's __init__ only (names load on first use): for registry
    "kubeless_local.emulator.registry",
}
# The standard library's heavy ones: http.client alone (email, ssl) was a third of call's own time; typing and
# dataclasses (with inspect) ~10 ms more; the idna codec (a str host given to getaddrinfo) ~1 ms.
HEAVY_STDLIB = {
    "http.client",
    "email",
    "ssl",
    "sqlite3",
    "asyncio",
    "importlib.metadata",
    "urllib.request",
    "typing",
    "dataclasses",
    "inspect",
    "encodings.idna",
}


# Runs the CLI as `python -m kubeless_local` does, then writes the modules it added to sys.modules (a module
# importlib.import_module loads, as the root group does, is missing from `-X importtime`), at exit or at the
# os._exit that ends a `call`.
RUN = """
import sys
before, listing = set(sys.modules), sys.argv[1]
import atexit, os, runpy
def write_listing():
    open(listing, "w").write("\\n".join(sorted(set(sys.modules) - before)))
atexit.register(write_listing)
end_at_once = os._exit  # `call` ends its process without the interpreter's teardown, atexit included
os._exit = lambda code: (write_listing(), end_at_once(code))
sys.argv = ["kubeless-local", *sys.argv[2:]]
runpy.run_module("kubeless_local", run_name="__main__", alter_sys=True)
"""


def imported(argv, cwd, env=None, flags=()):
    """(the modules `kubeless-local ARGV` imported in a fresh interpreter, beyond the interpreter's own; its stdout).
    `flags`: the interpreter's (-S: without what site's .pth files import, as a clean virtualenv starts)."""
    listing = Path(cwd) / "modules.json"
    result = subprocess.run(
        [sys.executable, *flags, "-c", RUN, str(listing), *argv],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return set(listing.read_text().split()), result.stdout


def third_party(modules):
    """The top-level packages among `modules` that are neither the standard library's nor ours."""
    return {name.split(".")[0] for name in modules} - set(sys.stdlib_module_names) - {"kubeless_local"}


def ours(modules):
    return {name for name in modules if name.split(".")[0] == "kubeless_local"}


def test_version_imports_no_command_module(tmp_path):
    modules, out = imported(["--version"], tmp_path)
    assert out.startswith("kubeless-local, version ")
    assert ours(modules) == VERSION_MODULES
    assert not third_party(modules), "no click, nor any other package"
    bare, _ = imported(["--version"], tmp_path, flags=["-S"])
    assert not (HEAVY_STDLIB | {"re", "pathlib", "json"}) & bare, "a version line needs no regular expression nor path"


class FakeSession(BaseHTTPRequestHandler):
    """A running session's admin API and the function it runs, on one port: what `call` talks to."""

    def do_GET(self):
        port = self.server.server_address[1]
        if (
            self.path.split("?")[0] == "/api/functions"
        ):  # its filters (?name, ?counts) ignored, as an older session does
            row = {"name": "hello", "state": "Ready", "url": "http://127.0.0.1:%d" % port, "port": port}
            body = json.dumps([{**row, "error": "", "serving": True, "recorded": True}]).encode()
        else:
            body = b"ok"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def session(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeSession)
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    state = tmp_path / "project" / ".kubeless-local"
    state.mkdir(parents=True)
    info = {"port": server.server_address[1], "pid": os.getpid(), "root": str(state.parent), "token": "t"}
    (state / "admin.json").write_text(json.dumps(info))
    yield state.parent
    server.shutdown()
    server.server_close()


def test_call_imports_no_engine_yaml_rich_nor_http_library(session, tmp_path):
    modules, out = imported(["call", "hello"], session, {"KUBELESS_LOCAL_REGISTRY": str(tmp_path / "registry")})
    assert out == "ok\n"  # it did call: the modules are those of a whole call
    assert ours(modules) == CALL_MODULES, "call imports more of kubeless_local than it needs"
    assert not third_party(modules), "no click, nor any other package"
    assert not HEAVY_STDLIB & modules


def test_a_run_loads_no_http_library_before_its_first_answer(tmp_path):
    """The engine, the process backend and the admin API (which opens beside the first server's start) read and
    write HTTP themselves: http.server's import (http.client, email, ssl) ran beside the function's start. Nor
    what only the watch (started after the functions) or a debugger needs."""
    script = (
        "import sys; import kubeless_local.commands.running, kubeless_local.commands.serving, "
        "kubeless_local.emulator.session, kubeless_local.emulator.process, kubeless_local.emulator.admin; "
        "print(' '.join(sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    loaded = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    loaded = set(loaded.stdout.split())
    assert not {"http.server", "http.client", "email", "ssl"} & loaded
    # what only a watch (after the start), `--debug`, several functions or a trigger's subscriber need
    later = {"watchdog", "watchdog.events", "kubeless_local.emulator.debugging", "kubeless_local.emulator.delve"}
    assert not (later | {"concurrent.futures", "logging"}) & loaded


def test_every_command_is_one_row_of_the_root_table():
    """Adding a command is one COMMANDS row; each row names a command of that name."""
    for name in root.COMMANDS:
        command = root.main.get_command(None, name)
        assert command is not None and command.name == name


def test_call_ends_at_once_with_its_exit_code_and_its_output_flushed(session, tmp_path):
    """`call` ends its process without the interpreter's teardown (entry.entry): what it printed still arrives,
    and its exit code is the command's."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "KUBELESS_LOCAL_REGISTRY": str(tmp_path / "registry")}
    argv = [sys.executable, "-m", "kubeless_local", "call"]
    called = subprocess.run([*argv, "hello"], cwd=session, env=env, capture_output=True, text=True, timeout=60)
    assert (called.returncode, called.stdout) == (0, "ok\n"), called.stderr
    unknown = subprocess.run([*argv, "nope"], cwd=session, env=env, capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: no function 'nope'"), unknown.stderr
    assert unknown.stdout == ""
