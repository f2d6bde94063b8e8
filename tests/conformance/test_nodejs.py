"""Node.js-specific vectors (contract §5 Node column, §10 #9-#13) and the places where the Node
runtime deliberately differs from the legacy Kubeless image (see the README parity table)."""

import concurrent.futures
import http.client
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from sockets import answer_of, free_port

from kubeless_local.emulator.prepare import setup_runtime_lib

pytestmark = pytest.mark.language("nodejs")

RUNTIME_DIR = Path(__file__).resolve().parents[2] / "runtimes" / "nodejs"


def test_get_without_body_gives_empty_object_as_json_with_cors(function):  # §10 #9
    f = function("echo")
    r = f.get()
    assert r.status_code == 200
    assert r.json() == {}
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    assert r.headers["Access-Control-Allow-Origin"] == "*"


def test_form_body_is_a_string_sent_without_content_type(function):  # §10 #10
    f = function("echo")
    r = f.post(data="hello", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200
    assert r.text == "hello"
    assert "Content-Type" not in r.headers


def test_json_with_parameters_is_parsed(function):  # §10 #11
    f = function("echo")
    r = f.post(data="[1,2]", headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.json() == [1, 2]
    assert r.headers["Content-Type"].startswith("application/json")


def test_cors_preflight_echoes_request_and_skips_the_function(function):  # §10 #12
    f = function("state")
    r = f.request(
        "OPTIONS", "/", headers={"Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "x-a"}
    )
    assert r.status_code == 200
    assert r.text == ""
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert r.headers["Access-Control-Allow-Methods"] == "PUT"
    assert r.headers["Access-Control-Allow-Headers"] == "x-a"
    assert f.get().text == "1"  # the handler was not called by the preflight


def test_throw_answers_500_with_module_method_label(function):  # §10 #13
    f = function("raise")
    label = f.method_label("POST")
    assert label == "handler-POST"
    before = f.metrics().get(("function_failures_total", label), 0)
    r = f.post(data="boom", headers={"Content-Type": "text/plain"})
    assert r.status_code == 500
    assert r.text == "Internal Server Error"
    assert f.metrics().get(("function_failures_total", label), 0) == before + 1
    assert "Error: boom" in f.wait_for_log("Error: boom")


@pytest.mark.parametrize(
    "code, body, content_type",
    [
        ("module.exports = { handler: () => 42 };", "42", None),
        ("module.exports = { handler: () => true };", "true", None),
        ("module.exports = { handler: () => null };", "null", "application/json; charset=utf-8"),
        ("module.exports = { handler: () => undefined };", "", None),
        ("module.exports = { handler: () => ({ a: [1] }) };", '{"a":[1]}', "application/json; charset=utf-8"),
        ("module.exports = { handler: () => Promise.resolve('later') };", "later", None),
        (
            "module.exports = { handler: async () => { await null; return { ok: 1 }; } };",
            '{"ok":1}',
            "application/json; charset=utf-8",
        ),
        # module.exports may be the function itself (any FUNC_HANDLER)
        ("module.exports = (event, context) => 'bare ' + context['function-name'];", "bare handler", None),
    ],
)
def test_return_conversions(function, code, body, content_type):
    f = function("hello", editable=True)
    assert f.replace_code(code).value == "Ready"
    r = f.get()
    assert r.status_code == 200
    assert r.text == body
    assert r.headers.get("Content-Type") == content_type


def test_rejected_promise_is_a_failure(function):
    f = function("hello", editable=True)
    assert (
        f.replace_code("module.exports = { handler: async () => { throw new TypeError('nope'); } };").value == "Ready"
    )
    r = f.get()
    assert r.status_code == 500
    assert f.metrics().get(("function_failures_total", f.method_label("GET")), 0) == 1


def test_timeout_covers_async_work_that_then_spins(function):
    # legacy: only the synchronous part was timed; a loop after an await ran forever
    f = function("hello", timeout=1, editable=True)
    code = (
        "module.exports = { handler: async (e) => {\n"
        "  await new Promise((r) => setTimeout(r, 10));\n"
        "  if (e.data === 'spin') for (;;) {}\n"
        "  return 'ok';\n} };\n"
    )
    assert f.replace_code(code).value == "Ready"
    started = time.monotonic()
    r = f.post(data="spin", headers={"Content-Type": "text/plain"})
    assert r.status_code == 408
    assert "Timeout while processing the function" in r.text
    assert time.monotonic() - started < 20  # stopped by the 1 s timeout, not left to the client's 30 s
    assert f.post(data="x", headers={"Content-Type": "text/plain"}).text == "ok"  # a fresh worker serves
    # Kubeless counted no failure; a timeout is one in every runtime here
    assert f.metrics().get(("function_failures_total", f.method_label("POST")), 0) == 1


def test_other_callers_are_not_stuck_behind_a_blocked_loop(function):
    # one caller spins with a long timeout; calls the blocked worker does not pick up move to a spare
    f = function("hello", timeout=20, editable=True)
    code = "module.exports = { handler: (e) => { if (e.data === 'spin') for (;;) {} return 'ok'; } };\n"
    assert f.replace_code(code).value == "Ready"
    spinner = f.open_call(body=b"spin", headers={"Content-Type": "text/plain"})  # in flight
    started = time.monotonic()
    r = requests.post(f.url, data="x", headers={"Content-Type": "text/plain"}, timeout=30)
    assert r.text == "ok"
    assert time.monotonic() - started < 15  # a spare served it: not after the spinner's 20 s timeout
    spinner.close()


def test_calls_that_arrive_with_a_runaway_one_are_served_by_a_spare(function):
    # calls the server reads together go to the worker in one message; the first spins, the others (not
    # started) move to a spare and are answered within the sockets' 20 s, long before the 30 s timeout.
    # On docker the URL is the front door, so the calls arrive one by one, some in one turn, some not
    f = function("hello", timeout=30, editable=True)
    code = "module.exports = { handler: (e) => { if (e.data === 'spin') for (;;) {} return 'ok ' + e.data; } };\n"
    assert f.replace_code(code).value == "Ready"
    port = int(f.instance.server_url.rsplit(":", 1)[1])  # the runtime server itself (process: past a front door)
    socks = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(6)]
    bodies = [b"spin"] + [b"%d" % i for i in range(1, 6)]
    for sock, body in zip(socks, bodies):  # back to back, so that the server reads them in one turn
        head = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        sock.sendall(head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    assert [answer_of(sock) for sock in socks[1:]] == [(200, "ok %d" % i) for i in range(1, 6)]
    socks[0].close()


def test_a_call_answered_before_a_runaway_one_starts_is_answered_at_once(function):
    # calls the server reads in one turn reach the worker in one message: here "1" answers and "spin" spins;
    # the answer of "1" (sent from a microtask once its handler returned) must leave before the spin takes
    # the thread, not wait for the spin's 408. Pipelined on one connection, both are read in one turn.
    f = function("hello", timeout=30, editable=True)
    code = "module.exports = { handler: (e) => { if (e.data === 'spin') for (;;) {} return 'ok ' + e.data; } };\n"
    assert f.replace_code(code).value == "Ready"
    port = int(f.instance.server_url.rsplit(":", 1)[1])
    head = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head % (1, b"1") + head % (4, b"spin"))
        first = http.client.HTTPResponse(sock)  # the first answer only: the spin's comes at its 408
        first.begin()
        assert (first.status, first.read()) == (200, b"ok 1")


def test_express_response_object_is_usable(function):
    f = function("hello", editable=True)
    code = (
        "module.exports = { handler: (e) => {\n"
        "  const res = e.extensions.response, req = e.extensions.request;\n"
        "  res.status(202).cookie('k', 'v').json({ path: req.path, q: req.query.q, is: req.is('json') });\n"
        "} };\n"
    )
    assert f.replace_code(code).value == "Ready"
    r = f.post("/some/path?q=1", json={"a": 1})
    assert r.status_code == 202
    assert r.json() == {"path": "/some/path", "q": "1", "is": "json"}
    assert r.cookies.get("k") == "v"


def test_express_objects_read_late_are_the_calls_own(function):
    # event.extensions are built when first read: after an await, other calls in between, they are still
    # Express' request and response of this call, listed as before and with req.body as event.data
    f = function("hello", editable=True)
    code = (
        "module.exports = { handler: async (e) => {\n"
        "  const keys = Object.keys(e.extensions);\n"
        "  await new Promise((r) => setTimeout(r, 20));\n"
        "  const req = e.extensions.request;\n"
        "  e.extensions.response.set('X-Late', req.query.q);\n"
        "  return { keys, path: req.path, q: req.query.q, same: req.body === e.data, id: req.get('event-id') };\n"
        "} };\n"
    )
    assert f.replace_code(code).value == "Ready"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        calls = [
            pool.submit(requests.get, f.url + "/p%d?q=%d" % (i, i), headers={"event-id": "e%d" % i}, timeout=30)
            for i in range(16)
        ]
        answers = [c.result() for c in calls]
    for i, r in enumerate(answers):
        assert r.status_code == 200
        assert r.json() == {
            "keys": ["request", "response"],
            "path": "/p%d" % i,
            "q": str(i),
            "same": True,
            "id": "e%d" % i,
        }
        assert r.headers["X-Late"] == str(i)


def test_body_limit_defaults_to_1_mb(function):
    f = function("large")
    assert f.post(data=b"x" * (1024 * 1024)).text == str(1024 * 1024)
    assert f.post(data=b"x" * (1024 * 1024 + 1)).status_code == 413


def test_body_limit_follows_req_mb_limit(function):
    f = function("large", env={"REQ_MB_LIMIT": "3"})
    assert f.post(data=b"x" * (2 * 1024 * 1024)).text == str(2 * 1024 * 1024)


def test_access_log_is_morgan_combined(function):
    f = function("hello")
    f.get("/x?y=1", headers={"User-Agent": "kl-test", "Referer": "http://r/"})
    logs = f.wait_for_log('"kl-test"')
    line = next(line for line in logs.splitlines() if '"kl-test"' in line)
    # :remote-addr - :remote-user [:date[clf]] ":method :url HTTP/:http-version" :status :res[content-length] ":referrer" ":user-agent"
    assert line.startswith("127.0.0.1 - - [")
    assert '+0000] "GET /x?y=1 HTTP/1.1" 200 - "http://r/" "kl-test"' in line


STREAMING = """let release = null;
module.exports = { handler: async (e) => {
  if (e.data === 'release') { if (release) release(); return 'released'; }
  const res = e.extensions.response;
  if (e.data === 'sse') { res.set('Content-Type', 'text/event-stream'); res.flushHeaders(); }
  else { res.writeHead(200, { 'Content-Type': 'text/plain' }); res.write('first\\n'); }
  await new Promise((r) => { release = r; setTimeout(r, 30000); });
  res.end(e.data === 'sse' ? 'data: last\\n\\n' : 'last\\n');
} };
"""


@pytest.mark.parametrize("kind", ["write", "sse"])
def test_a_response_written_in_pieces_reaches_the_caller_as_written(function, kind):
    # as in Kubeless, where the function's Express response is the socket's: what it writes (res.write, the
    # headers of res.flushHeaders) reaches the caller while the call goes on (server-sent events, progress),
    # not once it ends; through the URL (the front door) and the runtime server's own port
    f = function("hello", editable=True)
    assert f.replace_code(STREAMING).value == "Ready"
    for url in (f.url, f.instance.server_url):
        address = url.split("//")[1].split(":")
        connection = http.client.HTTPConnection(address[0], int(address[1]), timeout=10)
        connection.request("POST", "/", body=kind, headers={"Content-Type": "text/plain"})
        try:
            response = connection.getresponse()  # its head, within the socket's 10 s while the call waits
            first = b"" if kind == "sse" else response.readline()
        finally:
            assert f.post(data="release", headers={"Content-Type": "text/plain"}).text == "released"
        assert response.status == 200
        assert response.getheader("Transfer-Encoding") == "chunked"
        if kind == "sse":
            assert response.getheader("Content-Type").startswith("text/event-stream")  # Express adds a charset
        assert first + response.read() == (b"data: last\n\n" if kind == "sse" else b"first\nlast\n")
        connection.close()
    assert f.metrics().get(("function_calls_total", f.method_label("POST")), 0) == 4  # with the releases


def test_a_streamed_response_cut_short_by_the_timeout_ends_unfinished(function):
    # its head went with the first piece, so no 408 can follow: the connection ends before the last chunk, which
    # a caller sees as an answer cut short (http.client's IncompleteRead), never as a complete one
    f = function("hello", timeout=1, editable=True)
    code = "module.exports = { handler: (e) => { e.extensions.response.write('first'); return new Promise(() => {}); } };\n"
    assert f.replace_code(code).value == "Ready"
    connection = http.client.HTTPConnection(f.url.split("//")[1], timeout=20)
    connection.request("GET", "/")
    response = connection.getresponse()
    assert response.status == 200
    with pytest.raises(http.client.IncompleteRead) as cut:
        response.read()
    assert cut.value.partial == b"first"
    assert f.metrics().get(("function_failures_total", f.method_label("GET")), 0) == 1


def test_a_function_written_as_an_es_module(function, runtime):
    # Kubeless loads the function with require(): Node 20 (20.19 on) requires an ES module, Node 18 cannot, and
    # said so in words meant for our worker.js ("change the require of handler.js in worker.js"), which the load
    # error dropped whole: `handler.js: Error: `. Now one line saying what to do; a dependency that is an ES module
    # keeps Node's own words (they name the user's require)
    f = function("hello", folder=True)
    folder = f.spec.source
    (folder / "package.json").write_text('{"type": "module"}\n')
    state = f.replace_code("export function handler() { return 'esm'; }\n")
    if state.value == "Ready":  # a Node that requires ES modules (20.19 on), not Node 18
        assert runtime.name != "nodejs18" and f.get().text == "esm"
        return
    assert state.value == "CompileError"
    assert f.instance.error == (
        '%s: the function is an ES module ("type": "module" in its package.json), which this Node.js cannot'
        " require(), and Kubeless loads functions with require(): write it as CommonJS (module.exports = {"
        " handler }, require() for its modules)" % f.code_file
    )
    (folder / "package.json").write_text("{}\n")
    (folder / "lib").mkdir()
    (folder / "lib" / "package.json").write_text('{"type": "module"}\n')
    (folder / "lib" / "index.js").write_text("export const a = 1;\n")
    assert f.replace_code(
        "const { a } = require('./lib/index.js');\nmodule.exports = { handler: () => a };\n"
    ).value == ("CompileError")
    assert (
        "Error: require() of ES Module %s from %s not supported."
        % (
            folder / "lib" / "index.js",
            f.code_file,
        )
        in f.instance.error
    )


def test_module_state_persists_in_the_warm_worker(function):
    f = function("state")
    assert [f.get().text for _ in range(3)] == ["1", "2", "3"]


# ---- dependencies: the catalog's install step, then the server resolving them via NODE_PATH ----


def test_package_json_install_and_npm_registry_settings(tmp_path, runtime, backend_name):
    lib = tmp_path / "kl-greet"
    lib.mkdir()
    (lib / "package.json").write_text(json.dumps({"name": "kl-greet", "version": "1.0.0", "main": "index.js"}))
    (lib / "index.js").write_text("module.exports = (n) => `hi ${n}`;\n")
    deps = tmp_path / "deps"
    deps.mkdir()
    (deps / "package.json").write_text(
        json.dumps({"name": "fn", "version": "1.0.0", "dependencies": {"kl-greet": "file:%s" % lib}})
    )
    env = dict(
        os.environ,
        NPM_REGISTRY="http://127.0.0.1:9/",
        NPM_SCOPE="@kl",
        NPM_CONFIG_EXTRA="fund=false",
        KUBELESS_DEPS_FILE=str(deps / "package.json"),
    )
    done = subprocess.run(
        ["/bin/sh", str(RUNTIME_DIR / "npm-install.sh")], cwd=deps, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert (deps / ".npmrc").read_text() == "@kl:registry=http://127.0.0.1:9/\nfund=false\n"
    assert (deps / "node_modules" / "kl-greet").exists()

    install = tmp_path / "install"
    install.mkdir()
    (install / "fn.js").write_text(
        "const greet = require('kl-greet');\nmodule.exports = { go: (e) => greet(e.data) };\n"
    )
    port = free_port()
    env = dict(
        os.environ,
        MOD_NAME="fn",
        FUNC_HANDLER="go",
        FUNC_PORT=str(port),
        FUNC_TIMEOUT="5",
        KUBELESS_INSTALL_VOLUME=str(install),
        KUBELESS_LOCAL_BIND="127.0.0.1",
        KUBELESS_LOCAL_CONTROL="1",
        NODE_PATH=str(deps / "node_modules"),
        KUBELESS_RUNTIME_LIB=str(setup_runtime_lib(runtime, lambda line: None)),
    )
    proc = subprocess.Popen(
        [shutil.which("node"), str(RUNTIME_DIR / "kubeless.js")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout.readline().startswith('@kubeless-local {"event":"ready","generation":0}')
        r = requests.post("http://127.0.0.1:%d/" % port, data="bob", headers={"Content-Type": "text/plain"}, timeout=10)
        assert r.text == "hi bob"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.backend("process")
def test_a_held_servers_first_worker_runs_the_function_with_the_env_it_is_released_with(
    tmp_path, runtime, backend_name
):
    """`run`'s held start (held.js) boots the function's first worker thread before the env is known: released,
    the function in it sees the env and NODE_PATH it was released with, as a worker started then would."""
    deps = tmp_path / "deps" / "node_modules" / "kl-word"
    deps.mkdir(parents=True)
    (deps / "index.js").write_text("module.exports = 'found on NODE_PATH';\n")
    install = tmp_path / "install"
    install.mkdir()
    (install / "fn.js").write_text(
        "module.exports = { go: () => ({ greeting: process.env.GREETING, stale: process.env.STALE,"
        " dep: require('kl-word'), cwd: process.cwd() }) };\n"
    )
    port = free_port()
    released = dict(
        {k: v for k, v in os.environ.items() if k != "STALE"},
        MOD_NAME="fn",
        FUNC_HANDLER="go",
        FUNC_PORT=str(port),
        KUBELESS_INSTALL_VOLUME=str(install),
        KUBELESS_LOCAL_BIND="127.0.0.1",
        KUBELESS_LOCAL_CONTROL="1",
        NODE_PATH=str(tmp_path / "deps" / "node_modules"),
        KUBELESS_RUNTIME_LIB=str(setup_runtime_lib(runtime, lambda line: None)),
        GREETING="hi",
    )
    proc = subprocess.Popen(
        [shutil.which("node"), str(RUNTIME_DIR / "held.js"), str(RUNTIME_DIR / "kubeless.js")],
        env={**os.environ, "STALE": "from the held start"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        proc.stdin.write(json.dumps({"env": released, "cwd": str(install)}) + "\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith('@kubeless-local {"event":"ready","generation":0}')
        answer = requests.get("http://127.0.0.1:%d/" % port, timeout=10).json()
        assert answer == {"greeting": "hi", "dep": "found on NODE_PATH", "cwd": str(install)}  # no STALE
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_syntax_check_headline_names_the_error(tmp_path):
    # check.js is the catalog's `check` step: `ls` shows its first line
    broken = tmp_path / "handler.js"
    broken.write_text("this is ( not valid code {{{\n")
    done = subprocess.run(
        [shutil.which("node"), str(RUNTIME_DIR / "check.js"), str(broken)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == "%s:1: SyntaxError: Unexpected identifier 'is'" % broken
    fine = tmp_path / "fine.js"
    fine.write_text("module.exports = { handler: () => 1 };\n")
    assert (
        subprocess.run(
            [shutil.which("node"), str(RUNTIME_DIR / "check.js"), str(fine)], timeout=30, check=False
        ).returncode
        == 0
    )


def raw_head_and_body(url, target, extra=b"", json_body=None):
    """(the answer's header lines but Date, its body) of one raw `GET target` (a POST of `json_body`, bytes): the
    exact lines, in order."""
    host, port = url.split("//", 1)[1].split(":")
    if json_body is not None:
        extra += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(json_body)
    request = b"%s %s HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n%s" % (
        b"GET" if json_body is None else b"POST",
        target.encode(),
        extra,
        json_body or b"",
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return [line for line in head.split(b"\r\n") if not line.lower().startswith(b"date:")], body


def test_an_object_answered_without_express_is_what_express_answers(function):
    """A returned object is answered without Express where nothing can make it differ (no conditional header, not a
    HEAD): the same head line for line, and the same body, as through Express, which answers a path with a % (it
    decodes it) and a conditional request (it may answer 304)."""
    f = function("echo")  # a GET has event.data {}: res.json({})
    fast, fast_body = raw_head_and_body(f.url, "/plain")
    routed, routed_body = raw_head_and_body(f.url, "/%70lain")
    assert fast == routed and fast_body == routed_body == b"{}"
    assert b"Content-Type: application/json; charset=utf-8" in fast and any(h.startswith(b"ETag: W/") for h in fast)
    etag = next(h for h in fast if h.startswith(b"ETag: ")).split(b": ", 1)[1]
    unchanged, body = raw_head_and_body(f.url, "/plain", b"If-None-Match: %s\r\n" % etag)
    assert unchanged[0] == b"HTTP/1.1 304 Not Modified" and body == b""
    text = '{"a":"\u00e9\u4e2d"}'.encode()  # not ASCII: its length and ETag are of its utf-8 bytes
    fast, fast_body = raw_head_and_body(f.url, "/plain", json_body=text)
    routed, routed_body = raw_head_and_body(f.url, "/%70lain", json_body=text)
    assert fast == routed and fast_body == routed_body == text
