"""Go-specific conformance: contract §10 vectors 12, 14, 15 and where the Go runtime differs by design
(panics, runaway goroutines, compile errors, go.mod dependencies)."""

import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
import zipfile
from pathlib import Path

import pytest
import requests
from runtime_server import RuntimeServer
from sockets import free_port
from waiting import wait_for

from kubeless_local.emulator.prepare import point, setup_runtime_lib
from kubeless_local.runtimes import Catalog

pytestmark = pytest.mark.language("go")

REPO = Path(__file__).resolve().parents[2]
RUNTIME_DIR = REPO / "runtimes" / "go"
COMPILE = RUNTIME_DIR / "compile-function.sh"
FIXTURES = REPO / "tests" / "fixtures" / "go"
HELLO = REPO / "tests" / "conformance" / "scenarios" / "hello" / "handler.go"
WORKDIR = REPO / "tests" / "conformance" / "scenarios" / "workdir" / "handler.go"


def metric(fn, name, method):
    return fn.metrics().get((name, fn.method_label(method)), 0)


# --- through the engine (the `function` fixture) -------------------------------------------------


def test_error_answers_500_with_message_and_raw_data(function):
    """Vector 14: Data is the raw body string; (s, nil) → 200 s; (_, err) → 500 `Error: <err>`."""
    echo = function("echo")
    r = echo.post(data='{"a":1}', headers={"Content-Type": "application/json"})
    assert (r.status_code, r.text) == (200, '{"a":1}')
    # Go sniffs the Content-Type of what the function returned (no JSON handling).
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert echo.post(data="<html><body>x</body></html>").headers["Content-Type"] == "text/html; charset=utf-8"

    raise_ = function("raise")
    before = metric(raise_, "function_failures_total", "POST")
    r = raise_.post(data="boom")
    assert (r.status_code, r.text) == (500, "Error: boom")
    assert metric(raise_, "function_failures_total", "POST") == before + 1


def test_panic_answers_500_and_server_survives(function):
    """Legacy Kubeless crashed the whole server on a panic; here it is a failed call."""
    fn = function("raise")
    r = fn.post(data="panic")
    assert (r.status_code, r.text) == (500, "Error: panic: boom")
    assert metric(fn, "function_failures_total", "POST") == 1
    r = fn.post(data="fine")
    assert (r.status_code, r.text) == (200, "ok")
    assert metric(fn, "function_calls_total", "POST") == 2
    logs = fn.wait_for_log("handler.go:")
    assert "panic in function Handler: boom" in logs
    assert "handler.go:" in logs  # the stack trace names the user's file


def test_cors_preflight_does_not_call_function(function):
    """Vector 12."""
    fn = function("state")
    r = fn.request(
        "OPTIONS", "/", headers={"Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "x-a"}
    )
    assert (r.status_code, r.text) == (200, "")
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert r.headers["Access-Control-Allow-Methods"] == "PUT"
    assert r.headers["Access-Control-Allow-Headers"] == "x-a"
    assert fn.post(data="").text == "1"  # the OPTIONS call never reached the function
    assert fn.get().headers["Access-Control-Allow-Origin"] == "*"


def test_response_writer_status_is_not_written_twice(function):
    fn = function("status")
    r = fn.get()
    assert (r.status_code, r.text, r.headers["X-Custom"]) == (201, "created", "yes")
    assert "superfluous" not in fn.logs()


def test_context_fields_are_strings(function):
    fn = function("context", timeout=7, env={"MY_VAR": "v"})
    body = fn.get().json()
    assert body["timeout"] == "7"
    assert body["function-name"] == "Handler"
    assert body["env"] == "v"


def test_timeout_408_then_runaway_is_stopped_and_server_keeps_serving(function):
    """Vector 15: 408 `Timeout exceeded` and failure +1. Legacy then exited the process; here the
    server restarts itself in place (same socket, metrics kept) once the call ignores its context."""
    fn = function("sleep", timeout=1)
    started = time.monotonic()
    r = fn.post(data="30")
    assert (r.status_code, r.text) == (408, "Timeout exceeded")
    assert time.monotonic() - started < 20  # well before the 30 s sleep would end, even on a loaded machine
    assert metric(fn, "function_failures_total", "POST") == 1
    assert wait_for(lambda: "restarted in place" in fn.logs())
    assert "ignores event.Extensions.Context" in fn.logs()
    r = fn.post(data="0")
    assert (r.status_code, r.text) == (200, "done")
    assert metric(fn, "function_calls_total", "POST") == 2  # counted across the restart
    assert metric(fn, "function_failures_total", "POST") == 1


def test_client_going_away_does_not_stop_the_call(function):
    """Only the timeout ends a call: a client that disconnects does not cause a restart."""
    fn = function("sleep", timeout=5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        fn.post(data="0.6", timeout=0.2)
    assert wait_for(lambda: metric(fn, "function_calls_total", "POST") == 1)
    assert metric(fn, "function_failures_total", "POST") == 0
    assert "restarted in place" not in fn.logs()


def test_spinning_function_is_stopped(function):
    fn = function("spin", timeout=1)
    assert fn.post(data="").status_code == 408
    assert wait_for(lambda: "restarted in place" in fn.logs())
    assert fn.get("/healthz").text == "OK"
    # A second runaway is handled the same way (the new image restarts too).
    assert fn.post(data="").status_code == 408
    assert wait_for(lambda: fn.logs().count("restarted in place") == 2)
    assert metric(fn, "function_failures_total", "POST") == 2


# --- the compile step itself (what the engine shows as CompileError) -----------------------------


@pytest.fixture(scope="module")
def go_lib():
    """The engine's runtime_lib for the Go on this machine (module + build cache, set up once)."""
    go = Catalog().versions("go")[0]  # fails here, not silently, when Go is missing
    return setup_runtime_lib(go, on_line=lambda line: None)


def compile_function(lib, install, build, handler="Handler", env=None):
    build.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [
            "/bin/sh",
            str(COMPILE),
            shutil.which("go"),
            str(RUNTIME_DIR),
            str(lib),
            str(install),
            str(build),
            "handler",
            handler,
        ],
        cwd=build,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def test_compile_error_names_the_users_file_and_keeps_last_good_build(go_lib, tmp_path):
    install, build = tmp_path / "install", tmp_path / "build"
    install.mkdir()
    shutil.copy(HELLO, install / "handler.go")
    assert compile_function(go_lib, install, build).returncode == 0
    good = (build / "server").read_bytes()

    (install / "handler.go").write_text(
        'package kubeless\n\nimport "github.com/kubeless/kubeless/pkg/functions"\n\n'
        "func Handler(event functions.Event, context functions.Context) (string, error) {\n"
        "\treturn undefinedThing, nil\n}\n"
    )
    r = compile_function(go_lib, install, build)
    assert r.returncode != 0
    assert "handler.go:6:9: undefined: undefinedThing" in r.stdout
    assert str(build) not in r.stdout  # no build-tree paths
    assert (build / "server").read_bytes() == good

    shutil.copy(HELLO, install / "handler.go")
    r = compile_function(go_lib, install, build, handler="Missing")
    assert r.returncode != 0
    assert "no function Missing in the function's package" in r.stdout
    assert "func Missing(event functions.Event, context functions.Context) (string, error)" in r.stdout

    (install / "handler.go").write_text('package kubeless\n\nfunc Handler() string { return "" }\n')
    r = compile_function(go_lib, install, build)
    assert r.returncode != 0
    assert "cannot use function.Handler (value of type func() string)" in r.stdout


def test_a_replace_by_a_folder_of_the_function_says_why_it_is_not_used_and_what_works(go_lib, tmp_path):
    """The function's go.mod is not the main module (the server requires it, as in the pod), so Go ignores its
    `replace … => ./lib`: the build looked for the module on the proxy. The compile error says so, and what
    it proposes (the folder as a package of the function's module) builds."""
    install, build = tmp_path / "install", tmp_path / "build"
    (install / "lib").mkdir(parents=True)
    (install / "lib" / "greet.go").write_text('package greet\n\nfunc Words() string { return "hi" }\n')
    (install / "lib" / "go.mod").write_text("module example.invalid/greet\n\ngo 1.21\n")
    (install / "go.mod").write_text(
        "module function\n\ngo 1.21\n\nrequire example.invalid/greet v0.0.0\n\nreplace example.invalid/greet => ./lib\n"
    )
    handler = (
        'package kubeless\n\nimport (\n\tgreet "%s"\n\t"github.com/kubeless/kubeless/pkg/functions"\n)\n\n'
        "func Handler(event functions.Event, context functions.Context) (string, error) {\n"
        "\treturn greet.Words(), nil\n}\n"
    )
    (install / "handler.go").write_text(handler % "example.invalid/greet")
    offline = {**os.environ, "GOPROXY": "off"}
    r = compile_function(go_lib, install, build, env=offline)
    assert r.returncode != 0
    assert (
        "go.mod: replace example.invalid/greet => ./lib is not used: the function is built as a module the"
        " runtime's server requires (as in the pod), and Go applies only the main module's replace directives;"
        ' make the folder a package of the function\'s module (import "function/lib", without its own go.mod)'
    ) in r.stdout.splitlines()
    (install / "lib" / "go.mod").unlink()
    (install / "go.mod").write_text("module function\n\ngo 1.21\n")
    (install / "handler.go").write_text(handler % "function/lib")
    r = compile_function(go_lib, install, build, env=offline)
    assert r.returncode == 0, r.stdout + r.stderr


def test_go_mod_dependencies_resolve_and_run(go_lib, tmp_path):
    """go.mod requirements come through GOPROXY into the shared cache; the legacy
    `require github.com/kubeless/kubeless v1.0.7` line is served by the local functions module."""
    install, build = tmp_path / "install", tmp_path / "build"
    shutil.copytree(FIXTURES / "uuid", install)
    r = compile_function(go_lib, install, build)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (go_lib / "mod" / "github.com" / "google" / "uuid@v1.6.0").is_dir()
    assert not (go_lib / "mod" / "github.com" / "kubeless").exists()

    port = free_port()
    env = {
        **os.environ,
        "FUNC_HANDLER": "Handler",
        "MOD_NAME": "handler",
        "FUNC_PORT": str(port),
        "KUBELESS_LOCAL_BIND": "127.0.0.1",
        "KUBELESS_LOCAL_CONTROL": "1",
        "KUBELESS_INSTALL_VOLUME": str(install),
    }
    proc = subprocess.Popen(
        [str(build / "server")], cwd=install, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout.readline().startswith("Go runtime serving Handler")
        assert proc.stdout.readline().strip() == '@kubeless-local {"event":"ready","generation":0}'
        r = requests.post(f"http://127.0.0.1:{port}/", data="hello", timeout=10)
        assert (r.status_code, r.text) == (200, "074171de-bc84-5ea4-b636-1135477620e1")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def write_module_proxy(root: Path, module: str, version: str, files: dict):
    """A GOPROXY laid out on disk (the module proxy protocol over file://)."""
    base = root / module / "@v"
    base.mkdir(parents=True)
    (base / "list").write_text(version + "\n")
    (base / (version + ".info")).write_text('{"Version": "%s"}' % version)
    (base / (version + ".mod")).write_text("module %s\n\ngo 1.21\n" % module)
    with zipfile.ZipFile(base / (version + ".zip"), "w") as archive:
        archive.writestr("%s@%s/go.mod" % (module, version), "module %s\n\ngo 1.21\n" % module)
        for name, text in files.items():
            archive.writestr("%s@%s/%s" % (module, version, name), text)


def test_goproxy_from_the_environment_is_honoured(go_lib, tmp_path):
    """A private proxy (file://, so no network): the function's requirement is only there."""
    module = "example.com/kl%s/greet" % uuid.uuid4().hex[:12]  # never in the shared cache yet
    write_module_proxy(
        tmp_path / "proxy",
        module,
        "v1.2.3",
        {"greet.go": 'package greet\n\nfunc Hello() string { return "hi from the proxy" }\n'},
    )
    install, build = tmp_path / "install", tmp_path / "build"
    install.mkdir()
    (install / "go.mod").write_text("module kubeless\n\ngo 1.21\n\nrequire %s v1.2.3\n" % module)
    (install / "handler.go").write_text(
        'package kubeless\n\nimport (\n\t"%s"\n\t"github.com/kubeless/kubeless/pkg/functions"\n)\n\n'
        "func Handler(event functions.Event, context functions.Context) (string, error) {\n"
        "\treturn greet.Hello(), nil\n}\n" % module
    )
    env = {**os.environ, "GOPROXY": (tmp_path / "proxy").as_uri(), "GONOSUMDB": "example.com"}
    r = compile_function(go_lib, install, build, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (go_lib / "mod" / (module + "@v1.2.3") / "greet.go").is_file()

    # The same requirement at a version the proxy does not have: a clear error, no build.
    (install / "go.mod").write_text("module kubeless\n\ngo 1.21\n\nrequire %s v1.9.9\n" % module)
    r = compile_function(go_lib, install, tmp_path / "build2", env=env)
    assert r.returncode != 0
    assert "%s@v1.9.9" % module in r.stdout
    assert not (tmp_path / "build2" / "server").exists()


# --- reload in place (SIGHUP), the server run by hand as the engine lays it out ------------------


class Layout:
    """<root>/gen-N (the code) and build-N (its binary) behind the stable links `kubeless` and
    `build`, as the engine lays out each reload (prepare.point)."""

    def __init__(self, root, lib):
        self.root, self.lib = root, lib
        self.install, self.build = root / "kubeless", root / "build"

    def generation(self, n, files, compile=True):
        code = self.root / ("gen-%d" % n)
        code.mkdir()
        for name, text in files.items():
            (code / name).write_text(text)
        build = self.root / ("build-%d" % n)
        if compile:
            r = compile_function(self.lib, code, build)
            assert r.returncode == 0, r.stdout + r.stderr
        else:
            build.mkdir()
        return code, build

    def activate(self, code, build):
        point(self.install, code)
        point(self.build, build)

    def start(self, timeout="180"):
        """The server as the engine starts it: `{build}/server`, cwd and KUBELESS_INSTALL_VOLUME the link."""
        source = next(self.install.glob("*.go")).read_text()
        return RuntimeServer(
            [str(self.build / "server")],
            self.install,
            "handler.go",
            source,
            "go1.26",
            timeout,
            env={"FUNC_HANDLER": "Handler"},
        )


def calls_total(server):
    text = requests.get(server.url + "/metrics", timeout=10).text
    lines = [line for line in text.splitlines() if line.startswith('function_calls_total{method="GET"}')]
    return float(lines[0].split()[-1]) if lines else 0.0


def version_source(version):
    return HELLO.read_text().replace('"hello world"', '"%s"' % version)


def test_sighup_reexecutes_the_new_build_with_no_refused_connection(go_lib, tmp_path):
    layout = Layout(tmp_path, go_lib)
    layout.activate(*layout.generation(1, {"handler.go": version_source("v1")}))
    second = layout.generation(2, {"handler.go": version_source("v2")})
    server = layout.start()
    try:
        assert server.control(0) == {"event": "ready", "generation": 0}
        answers, errors, stop = [], [], threading.Event()

        def hammer(headers):  # a refused or dropped connection is an error
            with requests.Session() as client:
                for _ in range(5000):
                    if stop.is_set():
                        return
                    try:
                        r = client.get(server.url, timeout=10, headers=headers)
                        answers.append((r.status_code, r.text))
                    except requests.RequestException as exc:
                        errors.append(exc)

        # new connections, and keep-alive ones
        threads = [
            threading.Thread(target=hammer, args=(headers,), daemon=True)
            for headers in ({"Connection": "close"}, {"Connection": "close"}, {}, {})
        ]
        for t in threads:
            t.start()
        try:
            assert wait_for(lambda: len(answers) >= 20)
            layout.activate(*second)
            server.proc.send_signal(signal.SIGHUP)
            assert server.control(1) == {"event": "ready", "generation": 1}
            seen = len(answers)
            assert wait_for(lambda: len(answers) >= seen + 20)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert errors == []
        assert {status for status, _ in answers} == {200}
        texts = [text for _, text in answers]
        assert texts[0] == "v1" and "v2" in texts
        assert calls_total(server) == len(answers)  # the counters survive the re-exec
        assert server.proc.poll() is None  # the same process (pid) serves on

        # A build that cannot be executed: load-failed, the last good code serves on.
        layout.activate(*layout.generation(3, {"handler.go": version_source("v3")}, compile=False))
        server.proc.send_signal(signal.SIGHUP)
        failed = server.control(2)
        assert failed["event"] == "load-failed" and failed["generation"] == 2
        assert "cannot execute the new build" in failed["error"]
        assert requests.get(server.url, timeout=10).text == "v2"

        layout.activate(*second)
        server.proc.send_signal(signal.SIGHUP)
        assert server.control(3) == {"event": "ready", "generation": 3}
        assert requests.get(server.url, timeout=10).text == "v2"
    finally:
        server.stop()


def test_working_folder_follows_the_install_link_across_reloads(go_lib, tmp_path):
    layout = Layout(tmp_path, go_lib)
    code, build = layout.generation(0, {"handler.go": WORKDIR.read_text(), "data.txt": "v0\n"})
    layout.activate(code, build)
    server = layout.start(timeout="1")
    try:
        assert server.control(0) == {"event": "ready", "generation": 0}
        assert requests.get(server.url, timeout=10).text == "v0"
        for n in range(1, 21):
            previous = code
            code, _ = layout.generation(n, {"handler.go": WORKDIR.read_text(), "data.txt": "v%d\n" % n}, compile=False)
            layout.activate(code, build)  # the same binary: only data.txt changed
            server.proc.send_signal(signal.SIGHUP)
            assert server.control(n) == {"event": "ready", "generation": n}
            shutil.rmtree(previous)  # the engine prunes the generation that no longer serves
        r = requests.get(server.url, timeout=10)
        assert (r.status_code, r.text) == (200, "v20")
        assert requests.post(server.url, data="sleep", timeout=10).status_code == 408
    finally:
        server.stop()
