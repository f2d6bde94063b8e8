"""The CLI with click's CliRunner: parsing and printing, against a fake admin client and a tiny HTTP server."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import click
import pytest
import yaml
from click.testing import CliRunner

from kubeless_local import emulator
from kubeless_local.commands import common, local, output, running
from kubeless_local.commands import root as cli
from kubeless_local.errors import Unavailable, UserError
from kubeless_local.runtimes import Catalog

TRACEBACK = """Traceback (most recent call last):
  File "/x/kubeless.py", line 40, in load
    module = importlib.import_module(name)
  File "/x/handler.py", line 1, in <module>
    import no_such_module
ModuleNotFoundError: No module named 'no_such_module'
"""


def row(name="hello", **overrides):
    base = {
        "name": name,
        "runtime": "python3.11",
        "state": "Ready",
        "url": "http://127.0.0.1:8080",
        "port": 8080,
        "pid": 4242,
        "backend": "process",
        "calls": 3,
        "errors": 0,
        "reloads": 1,
        "restarts": 0,
        "error": "",
        "ready_ms": 120,
    }
    return {**base, **overrides}


class FakeAdmin:
    """Stands in for AdminClient: the rows and log lines a running `dev` would answer."""

    rows = []
    lines = []
    across = False  # inside the project's folder: its session only

    def functions(self):
        return self.rows

    def function(self, name):
        return self.owner(name)[1]

    def describe(self):
        return "the dev session of /work/shop"

    def owner(self, name):
        """(session, row): this fake is its own (one) session."""
        for r in self.rows:
            if r["name"] == name:
                return self, r
        raise UserError("no function %r in this project; `kubeless-local ls` lists them" % name)

    def logs(self, name, follow=False, tail=None):
        lines = self.lines if tail is None else self.lines[-tail:] if tail else []
        return iter(lines)


@pytest.fixture
def admin(monkeypatch):
    monkeypatch.setattr(emulator, "AdminClient", FakeAdmin, raising=False)
    FakeAdmin.rows, FakeAdmin.lines, FakeAdmin.across = [row()], [], False
    return FakeAdmin


def invoke(*args):
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


def one_line_error(result):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# ---------------------------------------------------------------- the command itself


def test_no_arguments_prints_the_help_and_succeeds():
    result = invoke()
    assert result.exit_code == 0 and "Usage:" in result.output and "init" in result.output


def test_backend_choices_come_from_the_engine():
    params = {p.name: p for p in local.dev.params}
    assert list(params["backend"].type.choices) == emulator.backends.CHOICES


# ---------------------------------------------------------------- init


def test_init_creates_the_template_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("init", "hello", "--runtime", "python3.11")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "hello").iterdir()) == ["function.yaml", "handler.py", "requirements.txt"]
    assert "created hello/handler.py" in result.output and "Next: cd hello" in result.output
    assert "name: hello" in (tmp_path / "hello" / "function.yaml").read_text()


def test_init_refuses_a_non_empty_folder_unless_forced(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hello").mkdir()
    (tmp_path / "hello" / "handler.py").write_text("mine\n")
    (tmp_path / "hello" / "notes.txt").write_text("keep me\n")
    assert one_line_error(invoke("init", "hello", "-r", "python3.11")) == (
        "error: hello/ already exists and is not empty; choose another name, or add --force to overwrite its "
        "template files (other files are kept)"
    )
    assert (tmp_path / "hello" / "handler.py").read_text() == "mine\n"
    result = invoke("init", "hello", "-r", "python3.11", "--force")
    assert result.exit_code == 0, result.output
    assert "def hello" in (tmp_path / "hello" / "handler.py").read_text()
    assert (tmp_path / "hello" / "notes.txt").read_text() == "keep me\n"


def test_init_where_the_folder_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    # a folder of another user's, a read-only mount: one line naming what could not be written, not a traceback
    monkeypatch.chdir(tmp_path)

    real = type(tmp_path).mkdir

    def mkdir(path, *args, **kwargs):
        if path.name == "hello":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(type(tmp_path), "mkdir", mkdir)
    assert one_line_error(invoke("init", "hello", "-r", "python3.11")) == (
        "error: cannot write hello (Permission denied); run `init` in a folder you can write to"
    )


def test_a_cache_folder_that_cannot_be_made_is_one_line(tmp_path, monkeypatch):
    # a HOME that is not there or not the user's (a container's user, a service account: HOME=/)
    (tmp_path / "home").write_text("a file, where the cache's folder should be\n")
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "home" / ".cache" / "kubeless-local"))
    assert one_line_error(invoke("get-server-config")) == (
        "error: cannot make the cache folder %s/home/.cache/kubeless-local (Not a directory): set KUBELESS_LOCAL_CACHE"
        " or XDG_CACHE_HOME to a folder you can write to" % tmp_path
    )


def test_init_with_an_unknown_runtime_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_line_error(invoke("init", "hello", "-r", "fortran77"))
    assert line.startswith("error: unknown runtime 'fortran77'; available: ")
    assert line.endswith(" (see `kubeless-local get-server-config`)")
    assert not (tmp_path / "hello").exists()


# ---------------------------------------------------------------- the engine's typed errors, worded by the CLI


def test_no_docker_engine_is_one_line_with_the_fix(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    line = one_line_error(invoke("runtime", "build", "python3.11"))
    assert line.startswith("error: no Docker engine answers (tried unix:///nonexistent/docker.sock")
    assert line.endswith("); start Docker (or set DOCKER_HOST) or use --backend process")


def test_a_damaged_topics_db_says_how_to_start_again(tmp_path):
    from kubeless_local.emulator.triggers.topics import TopicStore

    db = tmp_path / "topics.db"
    db.write_bytes(b"not a database " * 500)
    with pytest.raises(Unavailable) as damaged:
        TopicStore(tmp_path)
    assert (damaged.value.what, damaged.value.name) == ("topics database", str(db))
    assert "`kubeless-local dev`" not in str(damaged.value)  # the engine's words; the CLI says which command
    assert str(output.worded(damaged.value)) == (
        "%s is damaged (file is not a database); move it away (e.g. `mv %s %s.damaged`) and start "
        "`kubeless-local dev` again: a new, empty one is created, and the old file keeps what it held" % (db, db, db)
    )


def test_a_broker_that_does_not_answer_names_the_settings_to_correct(tmp_path):
    from kubeless_local.emulator.triggers.kafka_bridge import KafkaBridge

    bridge = KafkaBridge(["127.0.0.1:9"], lambda: None, None, None, tmp_path)
    try:
        unanswered = bridge._unanswered(ConnectionRefusedError("refused"))
    finally:
        bridge.loop.close()
        bridge.pool.shutdown()
    assert (type(unanswered), unanswered.what, unanswered.name) == (Unavailable, "kafka broker", "127.0.0.1:9")
    assert "--kafka-brokers" not in str(unanswered)  # the flag is the CLI's to name
    assert str(output.worded(unanswered)) == (
        "no Kafka broker answers at 127.0.0.1:9 (refused); start one (scripts/kafka-up.sh, see "
        "docs/kafka-broker.md) or correct --kafka-brokers / KAFKA_BROKERS / kafka.brokers in .kubeless-local.yaml"
    )


def test_scaffold_returns_the_created_paths(tmp_path):
    result = emulator.scaffold("fn", "nodejs20", target=tmp_path / "fn")
    assert sorted(p.name for p in result.created) == ["function.yaml", "handler.js", "package.json"]
    assert all(p.is_file() for p in result.created)


# ---------------------------------------------------------------- run / dev


def test_run_refuses_a_memory_that_is_not_a_quantity(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "handler.py").write_text("def hello(event, context):\n    return 1\n")
    monkeypatch.setattr(running, "serve", lambda *a, **k: pytest.fail("must not start"))
    line = one_line_error(
        invoke("run", "handler.py", "-r", "python3.11", "--handler", "handler.hello", "--memory", "lots")
    )
    assert "--memory 'lots'" in line and "128Mi" in line


def test_run_accepts_a_quantity(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "handler.py").write_text("def hello(event, context):\n    return 1\n")
    started = []
    monkeypatch.setattr(running, "serve", lambda root, backend, manifests=None, **k: started.append(manifests))
    result = invoke("run", "handler.py", "-r", "python3.11", "--handler", "handler.hello", "--memory", "256Mi")
    assert result.exit_code == 0, result.output
    assert started[0].functions[0].memory_limit == "256Mi"


def test_dev_passes_ignore_patterns(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(
        local, "serve", lambda root, backend, manifests=None, ignore=(), **_: seen.update(ignore=ignore)
    )
    result = invoke("dev", str(tmp_path), "--ignore", "build/", "--ignore", "*.log")
    assert result.exit_code == 0, result.output
    assert list(seen["ignore"]) == ["build/", "*.log"]


def test_dev_passes_kafka_brokers_from_the_flag_or_kafka_brokers(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(local, "serve", lambda *args, kafka_brokers=None, **_: seen.append(kafka_brokers))
    monkeypatch.delenv("KAFKA_BROKERS", raising=False)
    assert invoke("dev", str(tmp_path)).exit_code == 0
    assert invoke("dev", str(tmp_path), "--kafka-brokers", "h:1").exit_code == 0
    monkeypatch.setenv("KAFKA_BROKERS", "env:2")
    assert invoke("dev", str(tmp_path)).exit_code == 0
    assert invoke("dev", str(tmp_path), "--kafka-brokers", "h:1").exit_code == 0
    assert seen == [None, "h:1", "env:2", "h:1"]


# ---------------------------------------------------------------- call


class Recorder(BaseHTTPRequestHandler):
    seen = []
    paths = []

    def log_message(self, *args):
        pass

    def answer(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Recorder.seen.append((self.command, dict(self.headers), body))
        Recorder.paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = do_PUT = do_DELETE = answer


@pytest.fixture
def function_server(admin):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, args=(0.005,), daemon=True).start()
    Recorder.seen, Recorder.paths = [], []
    admin.rows = [row(url="http://127.0.0.1:%d" % server.server_address[1], port=server.server_address[1])]
    yield Recorder.seen
    server.shutdown()
    server.server_close()


def test_call_sends_method_headers_and_a_data_file(tmp_path, function_server):
    data = tmp_path / "event.json"
    data.write_bytes(b'{"a": 1}')
    result = invoke(
        "call", "hello", "-X", "put", "-H", "X-Trace: abc", "-H", "Authorization: Bearer t", "--data-file", str(data)
    )
    assert result.exit_code == 0, result.output + result.stderr
    assert result.output == "ok\n"
    method, headers, body = function_server[0]
    assert method == "PUT" and body == b'{"a": 1}'
    assert headers["X-Trace"] == "abc" and headers["Authorization"] == "Bearer t"
    assert headers["Content-Type"] == "application/json" and headers["event-namespace"] == "cli.kubeless.io"


def test_outside_a_project_call_and_ls_name_the_session_they_used(function_server, admin):
    assert "the dev session" not in invoke("call", "hello").stderr  # inside the project: no doubt which
    assert "PROJECT" not in invoke("ls").output
    admin.across = True
    result = invoke("call", "hello")
    assert result.exit_code == 0 and result.stdout == "ok\n" and result.stderr == "(the dev session of /work/shop)\n"
    admin.rows = [row(project="/work/shop")]
    assert invoke("ls").output.splitlines()[0].split()[-1] == "PROJECT"


def test_call_path_is_a_path_on_the_function_never_another_host(function_server):
    """`--path '@host:port/x'` once made the URL http://127.0.0.1:PORT@host:port/x: the call and its data went
    to that host. A second server on 127.0.0.1 stands for it."""

    class OtherHost(Recorder):
        def answer(self):
            reached.append(self.path)
            super().answer()

        do_GET = do_POST = answer

    reached = []
    other = ThreadingHTTPServer(("127.0.0.1", 0), OtherHost)
    threading.Thread(target=other.serve_forever, args=(0.005,), daemon=True).start()
    try:
        for path in ("@127.0.0.1:%d/x" % other.server_address[1], "x/y?z=1", "/a@b"):
            result = invoke("call", "hello", "--path", path, "--data", "secret")
            assert result.exit_code == 0, result.output
            assert reached == [] and Recorder.paths[-1] == "/" + path.lstrip("/")
    finally:
        other.shutdown()
        other.server_close()
    assert [body for _, _, body in function_server] == [b"secret"] * 3


def test_call_without_flags_is_a_get(function_server):
    assert invoke("call", "hello").exit_code == 0
    assert function_server[0][0] == "GET"


def test_call_flag_errors_are_one_line(tmp_path, function_server):
    assert "'Name: value'" in one_line_error(invoke("call", "hello", "-H", "no-colon"))
    (tmp_path / "d").write_text("x")
    assert "exclusive" in one_line_error(invoke("call", "hello", "-d", "x", "--data-file", str(tmp_path / "d")))
    assert function_server == []


# ---------------------------------------------------------------- ls


def test_ls_outputs(admin):
    admin.rows = [row(), row("broken", state="CompileError", error=TRACEBACK, calls=None)]
    assert [r["name"] for r in json.loads(invoke("ls", "-o", "json").output)] == ["hello", "broken"]
    assert yaml.safe_load(invoke("ls", "-o", "yaml").output) == admin.rows
    wide = invoke("ls", "-o", "wide").output
    header = wide.splitlines()[0].split()
    assert header[-4:] == ["BACKEND", "PID", "RESTARTS", "READY_MS"]
    assert "4242" in wide and "process" in wide and "120" in wide
    assert "BACKEND" not in invoke("ls").output
    admin.rows = [row(ready_ms=501.9191139999748)]
    assert invoke("ls", "-o", "wide").output.splitlines()[1].split()[-1] == "502"


def test_ls_wide_shows_where_a_debugger_listens(admin):
    debug = {"debugger": "debugpy", "port": 5678, "local_root": "/u/hello", "remote_root": "/p/kubeless"}
    admin.rows = [row(state="Debugging", debug=debug), row("plain")]
    lines = invoke("ls", "-o", "wide").output.splitlines()
    assert "DEBUG" in lines[0].split()
    assert "Debugging" in lines[1] and "127.0.0.1:5678 (debugpy)" in lines[1]
    assert "(debugpy)" not in lines[2]
    assert "DEBUG" not in invoke("ls").output


def test_kubeless_function_ls_counts_a_debugged_function_as_ready(admin):
    debug = {"debugger": "debugpy", "port": 5678, "local_root": "/u/hello", "remote_root": "/p/kubeless"}
    admin.rows = [row(state="Debugging", debug=debug)]
    assert "1/1 READY" in invoke("function", "ls").output


def test_kubeless_function_ls_counts_a_reloading_function_as_ready(admin):
    admin.rows = [row(state="Reloading"), row("gone", state="Crashed")]  # Reloading: the last good code serves
    lines = invoke("function", "ls").output.splitlines()
    assert "1/1 READY" in lines[1] and "0/1 NOT READY (Crashed)" in lines[2]


def test_waiting_for_a_deployed_function_waits_past_its_reload(monkeypatch):
    from kubeless_local.client import SessionClient

    states = iter(["Reloading", "Reloading", "Ready"])  # `function update` of a serving function: a save
    monkeypatch.setattr(SessionClient, "functions", lambda self: [row(state=next(states))])
    client = SessionClient.__new__(SessionClient)  # no session: only its rows are asked
    assert client.wait_settled("hello", timeout=5)["state"] == "Ready"


def test_debug_config_prints_the_attach_entry_of_a_debugged_function(admin):
    debug = {"debugger": "debugpy", "port": 5678, "local_root": "/u/hello", "remote_root": "/p/kubeless"}
    admin.rows = [row(state="Debugging", debug=debug), row("plain")]
    entry = json.loads(invoke("debug-config", "hello", "--editor", "vscode").output)
    assert entry["connect"] == {"host": "127.0.0.1", "port": 5678}
    assert entry["pathMappings"] == [{"localRoot": "/u/hello", "remoteRoot": "/p/kubeless"}]
    assert one_line_error(invoke("debug-config", "plain")) == (
        "error: plain runs under no debugger; start it with `kubeless-local dev --debug plain`"
    )


def test_ls_shows_the_exception_of_a_traceback_not_its_first_line(admin):
    admin.rows = [row("broken", state="CompileError", error=TRACEBACK)]
    output = invoke("ls").output
    assert "broken: ModuleNotFoundError: No module named 'no_such_module'" in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    "error, expected",
    [
        (TRACEBACK, "ModuleNotFoundError: No module named 'no_such_module'"),
        (
            "ModuleNotFoundError: No module named 'no_such_module'\n" + TRACEBACK,  # runtimes that put it first
            "ModuleNotFoundError: No module named 'no_such_module'",
        ),
        ("handler.py has no function 'hello'", "handler.py has no function 'hello'"),
        ("", ""),
    ],
)
def test_headline(error, expected):
    assert output.headline(error) == expected


def test_tables_are_full_width_when_piped(admin):
    long_name = "a-function-with-a-rather-long-name-that-pushes-the-table-wide"
    admin.rows = [row(long_name, url="http://127.0.0.1:18080")]
    output = invoke("ls").output
    assert "http://127.0.0.1:18080" in output and long_name in output and "…" not in output


# ---------------------------------------------------------------- logs


def test_logs_since_and_timestamps(admin):
    now = time.time()
    admin.lines = [
        {"text": "old", "stream": "stdout", "time": now - 3600},
        {"text": "recent", "stream": "stdout", "time": now - 30},
        {"text": "newest", "stream": "stdout", "time": now - 1},
    ]
    assert invoke("logs", "hello").output.split() == ["old", "recent", "newest"]
    assert invoke("logs", "hello", "--since", "10m").output.split() == ["recent", "newest"]
    assert invoke("logs", "hello", "--since", "5s").output.split() == ["newest"]
    stamped = invoke("logs", "hello", "--since", "1h1m", "--timestamps").output.splitlines()
    assert len(stamped) == 3 and stamped[0].endswith(" old")
    admin.lines = [{"text": 'Traceback (most recent call last):\n  File "x"\nValueError: x', "time": now}]
    stamped = invoke("logs", "hello", "--timestamps").output.splitlines()
    assert len(stamped) == 3 and all(line.split()[0].endswith("Z") for line in stamped)
    assert time.strftime("%Y-%m-%dT", time.gmtime(now)) in stamped[0] and stamped[0].split()[0].endswith("Z")


def test_logs_since_must_be_a_duration(admin):
    assert "--since 'yesterday'" in one_line_error(invoke("logs", "hello", "--since", "yesterday"))


def test_parse_duration():
    assert [common.parse_duration(t) for t in ("30s", "10m", "1h", "1h30m")] == [30, 600, 3600, 5400]
    for bad in ("", "10", "m", "1d", "-5s"):
        with pytest.raises(ValueError):
            common.parse_duration(bad)


def test_shell_completion_as_the_readme_documents_it():
    runner = CliRunner()
    script = runner.invoke(cli.main, [], prog_name="kubeless-local", env={"_KUBELESS_LOCAL_COMPLETE": "bash_source"})
    assert "_kubeless_local_completion" in script.output
    words = runner.invoke(
        cli.main,
        [],
        prog_name="kubeless-local",
        env={
            "_KUBELESS_LOCAL_COMPLETE": "bash_complete",
            "COMP_WORDS": "kubeless-local dev --backend ",
            "COMP_CWORD": "3",
        },
    )
    assert words.output.split() == ["plain,%s" % choice for choice in emulator.backends.CHOICES]


def test_call_with_empty_data_is_a_get_as_the_kubeless_cli_sends_it(function_server):
    assert invoke("call", "hello", "--data", "").exit_code == 0
    assert function_server[0][0] == "GET"


def test_run_label_without_value_is_an_empty_label(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "handler.py").write_text("def hello(event, context):\n    return 1\n")
    started = []
    monkeypatch.setattr(running, "serve", lambda root, backend, manifests=None, **k: started.append(manifests))
    result = invoke(
        "run", "handler.py", "-r", "python3.11", "--handler", "handler.hello", "--label", "foo:bar,bar=foo,foobar"
    )
    assert result.exit_code == 0, result.output + result.stderr
    assert started[0].functions[0].labels == {"foo": "bar", "bar": "foo", "foobar": ""}


@pytest.mark.parametrize(
    "values, pairs",
    [
        (["K1=v1,K2:v2", "K3=v3"], [("K1", "v1"), ("K2", "v2"), ("K3", "v3")]),
        # a value with a comma, quoted as the Kubeless CLI (pflag's string slice: CSV) takes it
        (['"URL=postgres://u:p@db/x?a=1,b=2"'], [("URL", "postgres://u:p@db/x?a=1,b=2")]),
        (['"HOSTS=a,b",MODE=on'], [("HOSTS", "a,b"), ("MODE", "on")]),
        (['GREETING=say "hi"'], [("GREETING", 'say "hi"')]),
    ],
)
def test_env_and_labels_read_a_comma_list_as_the_kubeless_cli_does(values, pairs):
    from kubeless_local.commands.serving import parse_pairs

    assert parse_pairs(values, "--env") == pairs


class Files(BaseHTTPRequestHandler):
    """Serves FILES by path, as a web server holding code and deps would."""

    files = {}

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = self.files.get(self.path, b"")
        self.send_response(200 if self.path in self.files else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def file_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=server.serve_forever, args=(0.005,), daemon=True).start()
    yield "http://127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()


def test_run_a_url_with_url_dependencies(tmp_path, monkeypatch, file_server):
    monkeypatch.chdir(tmp_path)
    Files.files = {"/requirements.txt": b"six\n"}
    started = []
    monkeypatch.setattr(running, "serve", lambda root, backend, manifests=None, **k: started.append((root, manifests)))
    result = invoke(
        "run", file_server + "/code.tar.gz", "-r", "python3.11", "--handler", "handler.hello",
        "--dependencies", file_server + "/requirements.txt",
    )  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    root, manifests = started[0]
    fn = manifests.functions[0]
    assert root == tmp_path.resolve() and fn.source is None
    assert (fn.function, fn.content_type, fn.deps) == (file_server + "/code.tar.gz", "url+compressedtar", "six\n")


def test_run_a_missing_file_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(running, "serve", lambda *a, **k: pytest.fail("must not start"))
    assert "nope.zip does not exist" in one_line_error(
        invoke("run", "nope.zip", "-r", "python3.11", "--handler", "handler.hello")
    )


@pytest.mark.parametrize("state", ["CompileError", "ConfigError"])
def test_call_refuses_a_function_that_does_not_serve(function_server, admin, state):
    """Another program may answer on the port it had: never print that as the function's answer."""
    admin.rows[0].update(state=state, error="handler.py:2: SyntaxError: '(' was never closed", serving=False)
    result = invoke("call", "hello")
    assert result.exit_code == 1 and function_server == []
    assert result.stderr.strip() == "error: hello is %s: handler.py:2: SyntaxError: '(' was never closed" % state


def test_call_of_a_compile_error_still_serving_warns_and_calls(function_server, admin):
    admin.rows[0].update(state="CompileError", error="handler.py:2: SyntaxError: bad", serving=True)
    result = invoke("call", "hello")
    assert result.exit_code == 0 and result.stdout == "ok\n" and "last good code" in result.stderr


@pytest.mark.parametrize(
    "word, says",
    [
        ("cronjob", "fired on schedule by the session"),
        ("http", "routed by Host and path by the session's gateway"),  # dev's gateway (issue O)
        ("kafka", "the session delivers its topic's events"),
        ("nats", "the session delivers its topic's events"),
    ],
)
def test_trigger_help_says_what_the_session_does_with_the_kind(word, says):
    result = CliRunner().invoke(cli.main, ["trigger", word, "--help"])
    assert result.exit_code == 0, result.output
    assert says in result.output and "emulated" not in result.output


def test_a_functions_log_and_ls_show_the_engines_errors_and_notices_in_the_clis_words(tmp_path):
    from conftest import FakeBackend, function

    from kubeless_local.emulator.logs import LogHub
    from kubeless_local.emulator.supervisor import Supervisor
    from kubeless_local.errors import NotFound, Notice

    stale = Notice("image x:1 was built from other runtime files than this kubeless-local's", "runtime image", "fake1")

    class Told(FakeBackend):
        def resolve(self, spec, catalog):
            return super().resolve(spec, catalog)[0], stale

    supervisor = Supervisor(tmp_path, Told, LogHub(), ephemeral_ports=True, word=output.in_words)
    try:
        supervisor.start(function())
        supervisor.backend.prepares["hello"].append(NotFound("unknown runtime 'cobol1'", "runtime", "cobol1"))
        instance = supervisor.reload(function(code="v2"))
        said = [line.text for line in supervisor.logs.tail("hello")]
        assert stale + "; rebuild it with `kubeless-local runtime build fake1`" in said
        unknown = "unknown runtime 'cobol1' (see `kubeless-local get-server-config`)"
        assert unknown in said and instance.broken is not None and unknown in str(instance.broken)
    finally:
        supervisor.stop_all()


def test_a_kafka_brokers_value_that_is_no_address_names_the_flag_in_the_cli_and_the_parameter_in_the_engine(
    tmp_path, monkeypatch
):
    from kubeless_local import config

    monkeypatch.delenv("KAFKA_BROKERS", raising=False)
    line = one_line_error(invoke("dev", str(tmp_path), "--kafka-brokers", "not-an-address"))
    assert line == "error: --kafka-brokers/KAFKA_BROKERS: 'not-an-address' must be %s" % config.BROKERS_MUST
    with pytest.raises(UserError, match="^kafka_brokers: 'not-an-address' must be HOST:PORT"):
        config.kafka_brokers(config.Settings(tmp_path / config.FILE), "not-an-address")


EDITOR_CATALOG = """\
runtimes:
  python:
    server: python
    depName: requirements.txt
    fileNameSuffix: .py
    versions:
      - version: "3.11"
        executable: [%s]
    process:
      command: ["{exe}"]
      init: ["/bin/sh", "-c", "echo {runtime_dir} > editor.txt"]
"""


def test_scaffold_runs_the_runtimes_init_step_in_the_new_folder(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text(EDITOR_CATALOG % "python3")
    result = emulator.scaffold("fn", "python3.11", target=tmp_path / "fn", catalog=Catalog(path))
    assert (tmp_path / "fn" / "editor.txt").read_text().strip().endswith("runtimes/python")
    assert result.notice == ""


def test_scaffold_without_the_toolchain_writes_the_folder_and_says_what_init_could_not_do(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text(EDITOR_CATALOG % "no-such-compiler-here")
    result = emulator.scaffold("fn", "python3.11", target=tmp_path / "fn", catalog=Catalog(path))
    assert (tmp_path / "fn" / "function.yaml").is_file() and not (tmp_path / "fn" / "editor.txt").exists()
    assert result.notice == (
        "no-such-compiler-here is not on this machine, so your editor's libraries were not installed "
        "(it runs all the same)"
    )


def test_the_cli_styles_text_with_clicks_escape_sequences():
    """`run`'s log printer styles without click (commands/output.py): the same sequences click.style writes."""
    from kubeless_local.commands.serving import COLORS

    for fg in (None, *COLORS, "red", "white"):
        for dim in (None, True, False):
            assert output.style("a|b", fg=fg, dim=dim) == click.style("a|b", fg=fg, dim=dim), (fg, dim)


def every_command(group, path=()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from every_command(command, (*path, name))


def test_every_command_and_option_says_what_it_is_for():
    """`--help` is the user's manual: a command or option without a line there (`trigger http delete`, `-n`) is one
    they have to guess."""
    silent = []
    for path, command in every_command(cli.main):
        if not (command.help or command.short_help):
            silent.append(" ".join(path))
        silent += [
            "%s %s" % (" ".join(path), "/".join(param.opts))
            for param in command.params
            if isinstance(param, click.Option) and not param.hidden and not param.help
        ]
    assert not silent, "without help text: " + ", ".join(silent)
