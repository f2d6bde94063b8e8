"""The conformance suite: the same HTTP-level behaviour from every runtime × backend (contract §5, §10)."""

import concurrent.futures
import copy
import dataclasses
import json
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest
import requests
from processes import running_with, tree_rss_mb
from sockets import read_to_end
from waiting import wait_for, wait_until

SCENARIOS = Path(__file__).parent / "scenarios"

# Go's and Java's event fields are strings: an absent header is ""; elsewhere null
ABSENT_HEADER = {"go": "", "java": ""}
FUNCTION_NAME = {"go": "Handler"}
TIMEOUT_IS_A_STRING = {"ruby", "php", "go", "java"}  # context timeout: a string there, a number in Python and Node
PARSES_JSON_WITH_PARAMS = {"nodejs"}  # body-parser accepts `application/json; charset=…`; others need it exact
JSON_DATA_IS_RAW = {"go", "java"}  # Go's and Java's event data is the body as a string: JSON is never parsed
BROKEN_CODE = "this is ( not valid code in any language {{{\n"


def test_healthz(function):
    fn = function("hello")
    response = fn.get("/healthz")
    assert response.status_code == 200
    assert response.text == "OK"


def test_hello(function):
    fn = function("hello")
    response = fn.get("/")
    assert response.status_code == 200
    assert response.text == "hello world"


def test_any_path_reaches_the_function(function):
    fn = function("hello")
    assert fn.get("/some/deep/path").text == "hello world"


def test_json_data_is_parsed(function):
    fn = function("echo")
    response = fn.post("/", json={"a": 1, "b": [1, 2]})
    assert response.status_code == 200
    assert response.json() == {"a": 1, "b": [1, 2]}


def test_text_data_is_passed_as_is(function):
    fn = function("echo")
    response = fn.post("/", data="hello", headers={"Content-Type": "text/plain"})
    assert response.status_code == 200
    assert response.text == "hello"


def test_event_fields_come_from_headers(function):
    fn = function("event")
    headers = {
        "event-id": "abc",
        "event-type": "text/plain",
        "event-time": "2021-01-18T17:10:12Z",
        "event-namespace": "cli.kubeless.io",
        "Content-Type": "text/plain",
    }
    body = fn.post("/", data="payload", headers=headers).json()
    assert body == {
        "data": "payload",
        "event-id": "abc",
        "event-type": "text/plain",
        "event-time": "2021-01-18T17:10:12Z",
        "event-namespace": "cli.kubeless.io",
    }


def test_events_sent_by_the_delivery_link_reach_the_function_on_one_connection(function):
    from kubeless_local.emulator.triggers.delivery import FunctionLink
    from kubeless_local.events import envelope

    fn = function("event")
    link = FunctionLink()
    try:
        for i in range(3):  # the second and third go over the kept-alive connection
            method, headers, body = envelope(
                "kafka",
                "payload %d" % i,
                topic="orders",
                event_id="id-%d" % i,
                event_time="2021-01-18 17:10:12 +0000 UTC",
            )
            status, text = link.send(method, fn.url, headers, body, 30)
            assert status == 200, text
            answer = json.loads(text)
            assert (answer["data"], answer["event-id"]) == ("payload %d" % i, "id-%d" % i)
    finally:
        link.close()


def test_json_is_parsed_only_for_the_content_types_kubeless_parses(function):
    fn = function("event")
    exact = fn.post("/", data='{"a": 1}', headers={"Content-Type": "application/json"}).json()
    assert json.loads(exact["data"]) == {"a": 1}
    with_params = fn.post("/", data='{"a": 1}', headers={"Content-Type": "application/json; charset=utf-8"}).json()
    parsed_then_serialised = json.loads(with_params["data"]) == {"a": 1} and with_params["data"] != '{"a": 1}'
    assert parsed_then_serialised == (fn.language in PARSES_JSON_WITH_PARAMS)
    if fn.language not in PARSES_JSON_WITH_PARAMS:
        assert with_params["data"] == '{"a": 1}'  # the raw body, untouched


def test_absent_event_headers(function):
    fn = function("event")
    body = fn.post("/", data="x", headers={"Content-Type": "text/plain"}).json()
    absent = ABSENT_HEADER.get(fn.language)
    assert [body[k] for k in ("event-id", "event-type", "event-time", "event-namespace")] == [absent] * 4


def test_context_and_env(function):
    fn = function("context", timeout="7", env={"MY_VAR": "42"}, memory="128Mi")
    body = fn.get("/").json()
    assert body["function-name"] == FUNCTION_NAME.get(fn.language, "handler")
    assert float(body["timeout"]) == 7
    assert isinstance(body["timeout"], str) == (fn.language in TIMEOUT_IS_A_STRING)
    assert body["runtime"] == fn.runtime
    assert body["memory-limit"] == "128Mi"
    assert body["env"] == "42"
    # the pod's name, as the container runtime sets it (and fieldRef metadata.name here): a local process had none
    assert body["hostname"] == "context-local"


def test_exception_answers_500_and_the_server_survives(function):
    fn = function("raise")
    assert fn.post("/", data="boom").status_code == 500
    after = fn.post("/", data="fine")
    assert (after.status_code, after.text) == (200, "ok")
    assert "boom" in fn.wait_for_log("boom")  # the error reaches the log
    metrics = fn.metrics()
    label = fn.method_label("POST")
    assert metrics[("function_calls_total", label)] == 2
    assert metrics[("function_failures_total", label)] == 1


def test_timeout_answers_408_while_others_are_served(function):
    fn = function("sleep", timeout="1")
    slow = fn.open_call(body=b"30")  # in flight: the server has read it
    quick = fn.post("/", data="0")
    assert (quick.status_code, quick.text) == (200, "done")
    started = time.monotonic()
    assert fn.status_of(slow) == 408
    assert time.monotonic() - started < 20  # well before the 30 s sleep would end, even on a loaded machine
    assert fn.post("/", data="0").text == "done"


def serves(fn):
    """The function's server answers /healthz (a runtime may restart itself after a timeout, e.g. Go). Not yet
    when the answer takes over 2 s: the front door holds a request while the server restarts (proxy.SERVER_WAIT)."""
    try:
        return fn.instance.pid is not None and fn.get("/healthz", timeout=2).status_code == 200
    except (requests.ConnectionError, requests.Timeout):  # a loaded machine: the door still waits for the server
        return False


def process_group_cpu(pgid):
    """CPU seconds used so far by every process in a process group (process backend)."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 (pgrp) after pid and comm
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def test_runaway_cpu_loop_is_stopped(function, backend_name):
    fn = function("spin", timeout="1")
    assert fn.post("/", data="x").status_code == 408
    # The runtime keeps (or comes back to) serving, and the loop no longer burns CPU.
    wait_until(lambda: serves(fn), "the runtime serving again after a timeout", timeout=10, interval=0.1)
    if backend_name == "process":
        before = process_group_cpu(fn.instance.pid)
        time.sleep(1.0)  # a window to measure CPU use over (not a wait): a loop left running uses all of it
        assert process_group_cpu(fn.instance.pid) - before < 0.5


@pytest.mark.language("python", "nodejs", "ruby", "php", "go")  # (the JVM meets its own heap limit first)
def test_a_function_past_its_memory_limit_is_stopped_and_serves_again_as_in_the_cluster(function, backend_name):
    """Each call allocates and keeps as many MiB as its body says. Past the limit the call fails and the memory is
    given back: the process backend stops the server's whole process group, as a pod's container is stopped
    (cgroup v2's memory.oom.group, set by the kubelet since Kubernetes 1.28), and says so; this Docker engine's
    kernel stops the largest process of the container (a runtime's worker, whose server then answers 500)."""
    fn = function("memory", memory="160Mi")
    assert fn.post("/", data="8").text == "8"  # well under the limit: served, kept
    try:
        past = fn.post("/", data="300", timeout=60).status_code  # 308 MiB held: past it, while the call runs
    except requests.ConnectionError:
        past = None
    assert past != 200
    if backend_name == "process":
        assert "(out of memory: its processes used" in fn.wait_for_log("out of memory", seconds=10), fn.logs()
    wait_until(lambda: serves(fn), "the function serving again after it was stopped", timeout=30, interval=0.1)
    assert fn.post("/", data="8").text == "8"  # what the stopped process held is gone


def test_concurrent_calls_get_their_own_answers(function):
    fn = function("echo")
    bodies = ["call-%d" % i for i in range(20)]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda b: fn.post("/", data=b, headers={"Content-Type": "text/plain"}).text, bodies))
    assert answers == bodies


def test_large_body(function):
    fn = function("large", env={"REQ_MB_LIMIT": "10"})
    body = b"x" * (5 * 1024 * 1024)
    response = fn.post("/", data=body, headers={"Content-Type": "application/octet-stream"})
    assert (response.status_code, response.text) == (200, str(len(body)))


def test_native_request_object(function):
    fn = function("request")
    response = fn.get("/?q=7", headers={"X-Test": "abc"})
    assert (response.status_code, response.text) == (200, "abc|7")


def test_function_sets_status_and_headers(function):
    fn = function("status")
    response = fn.post("/", data="x")
    assert response.status_code == 201
    assert response.headers["X-Custom"] == "yes"
    assert response.text == "created"


def test_metrics_names_and_counts(function):
    fn = function("hello")
    for _ in range(3):
        assert fn.get("/").status_code == 200
    metrics = fn.metrics()
    label = fn.method_label("GET")
    assert metrics[("function_calls_total", label)] == 3
    assert metrics[("function_duration_seconds_count", label)] == 3
    assert metrics.get(("function_failures_total", label), 0) == 0


def test_reload_serves_new_code_and_keeps_last_good_on_error(function):
    fn = function("hello", editable=True)
    assert fn.get("/").text == "hello world"
    assert fn.replace_code(fn.scenario_code("echo")).value == "Ready"
    assert fn.post("/", data="new", headers={"Content-Type": "text/plain"}).text == "new"
    assert fn.replace_code(BROKEN_CODE).value == "CompileError"
    assert fn.instance.error  # the compiler's / interpreter's message, for `ls` and the log
    assert fn.post("/", data="still", headers={"Content-Type": "text/plain"}).text == "still"
    assert fn.replace_code(fn.scenario_code("hello")).value == "Ready"
    assert fn.get("/").text == "hello world"


def with_handler(spec, handler):
    """The Function with another spec.handler, as a save of its manifest gives it."""
    document = copy.deepcopy(spec.document)
    document["spec"]["handler"] = handler
    return dataclasses.replace(spec, handler=handler, document=document)


def test_a_handler_typo_keeps_the_last_good_code_serving(function):
    fn = function("hello", editable=True)
    typo = with_handler(fn.spec, fn.spec.module + ".no_such_function")
    instance = fn.supervisor.reload(typo)
    assert instance.state.value == "CompileError", (instance.state, instance.error, fn.logs())
    assert "no_such_function" in instance.error  # the reason, for `ls` and the log
    assert fn.get("/").text == "hello world"  # the last good generation still serves
    assert fn.supervisor.status()[0]["serving"]
    assert fn.supervisor.reload(fn.spec).state.value == "Ready"  # fixing it reloads
    assert fn.get("/").text == "hello world"


@pytest.mark.language("python", "ruby", "php", "nodejs", "go", "java")
def test_a_call_past_its_timeout_stops_with_every_process_it_started(function):
    """A runaway call's subprocesses (a child, a shell in a session of its own and its child) ran on after its 408,
    each timed-out call leaving more (a browser, a stuck converter): its worker was killed, not what it started.
    (Node.js: a call that blocks its worker thread, which is then stopped with what it started; Go: a call that
    ignores its context, which the server restarts itself to stop.)"""
    fn = function("spawns", timeout="4")  # time enough to start them on a loaded machine
    # a first call pays what a cold start leaves to it (a fresh image's first call took over 10 s in CI); a GET
    # has no seconds to sleep: it answers at once
    assert fn.get("/", timeout=90).status_code in (200, 500)
    seconds = "%d.%06d" % (300 + os.getpid() % 100, time.time_ns() % 1_000_000)  # its processes are found by it

    def started():
        return running_with(seconds) + running_with("sleep %s & wait" % seconds)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(fn.post, "/", data=seconds, headers={"Content-Type": "text/plain"}, timeout=90)
        assert wait_for(lambda: len(started()) == 3, 60), (started(), fn.logs())
        assert answer.result().status_code == 408
    assert wait_for(lambda: not started(), 30), "still running after the 408: %s" % started()
    assert fn.get("/").status_code in (200, 500)  # served on


@pytest.mark.language("go", "java")
def test_a_compile_error_names_the_users_file_whole(function):
    """As the other runtimes' errors do: a terminal makes a link of it, where Go's `handler.go:1:1` is any function's."""
    fn = function("hello", editable=True)
    assert fn.replace_code(BROKEN_CODE).value == "CompileError"
    assert str(fn.code_file) + ":1" in fn.instance.error, fn.instance.error


def test_a_save_that_does_not_load_is_reported_once(function):
    """A broken save's error is shown once in `dev`'s log: the engine says it ("load failed, still serving…"),
    so a runtime under the engine does not print it on its own too (it does standalone, as in the pod)."""
    fn = function("hello", editable=True)
    for broken in (BROKEN_CODE, None):  # a syntax error (or compile error), then a handler that is not there
        if broken is None:
            instance = fn.supervisor.reload(with_handler(fn.spec, fn.spec.module + ".no_such_function"))
        else:
            instance = fn.replace_code(broken)
            instance = fn.instance
        assert instance.state.value == "CompileError", (instance.state, instance.error, fn.logs())
        headline = instance.error.splitlines()[0]
        time.sleep(0.5)  # the runtime's own stderr, if any, travels through the log reader too
        logs = fn.logs()
        assert logs.count(headline) == 1, logs
        assert fn.replace_code(fn.scenario_code("hello")).value == "Ready"
        fn.supervisor.reload(fn.spec)


def test_a_server_that_dies_is_restarted(function):
    fn = function("hello")
    os.kill(fn.instance.pid, signal.SIGKILL)  # the runtime server (or the container's init) dies
    # Ready too: the server may answer a moment before the engine has read its `ready` control line
    restarted = wait_for(lambda: fn.instance.restarts > 0 and serves(fn) and fn.instance.state.value == "Ready", 60)
    assert restarted, "not restarted (state %s):\n%s" % (fn.instance.state.value, fn.logs())
    assert fn.get("/").text == "hello world"


@pytest.mark.language("python", "nodejs", "ruby", "php")
def test_a_handler_in_a_folder_of_the_functions_files(function, runtime):
    """spec.handler `src/handler.handler` with a folder source: Kubeless loads /kubeless/src/handler<suffix> (by
    path: MOD_NAME is `src/handler`). The Python runtime imported it as a module name and failed."""
    code = (SCENARIOS / "hello" / ("handler" + runtime.suffix)).read_text()
    fn = function("hello", folder=True, files={"src/handler" + runtime.suffix: code}, module="src/handler")
    assert (fn.get("/").status_code, fn.get("/").text) == (200, "hello world"), fn.logs()
    saved = code.replace("hello world", "hello again")
    assert fn.replace_file(fn.spec.source / "src" / ("handler" + runtime.suffix), saved).value == "Ready"
    assert fn.get("/").text == "hello again"


def test_relative_reads_see_the_current_code_after_many_saves(function):
    # The working folder is the stable code path (as /kubeless in the pod), not the generation
    # folder that was current when the server started (the engine deletes old generations).
    fn = function("workdir", folder=True, timeout="1")
    assert fn.get("/").text == "v0"
    for i in range(1, 21):
        assert fn.replace_file(fn.spec.source / "data.txt", "v%d\n" % i).value == "Ready"
    assert (fn.get("/").status_code, fn.get("/").text) == (200, "v20")
    assert fn.post("/", data="sleep", headers={"Content-Type": "text/plain"}).status_code == 408
    after = fn.get("/")
    assert (after.status_code, after.text) == (200, "v20")


def test_the_function_writes_in_its_working_folder_and_a_save_starts_it_afresh(function):
    """/kubeless is an emptyDir in the pod, filled by the init container as the pod's user: the function may make
    files there and change its own (a cache, a SQLite file); a new pod (a save) starts from the code again. The
    docker backend mounted it read-only: `Read-only file system`."""
    fn = function("writes", folder=True)

    def post(body):
        answer = fn.post("/", data=body, headers={"Content-Type": "text/plain"})
        return answer.status_code, answer.text

    assert post("a") == (200, "v0a|a")
    assert post("b") == (200, "v0ab|ab")
    assert fn.replace_file(fn.spec.source / "data.txt", "v1\n").value == "Ready"
    assert post("c") == (200, "v1c|c")
    assert (fn.spec.source / "data.txt").read_text() == "v1\n" and not (fn.spec.source / "notes").exists()


def test_the_function_reads_the_clock_in_the_pods_time_zone(function, monkeypatch):
    """A pod has no TZ and its image's zone is UTC: a local process took this machine's (TZ here, or
    /etc/localtime), so dates a function formats or a day it computes differed from the pod's."""
    monkeypatch.setenv("TZ", "America/New_York")  # what a local process inherits (a container does not)
    fn = function("clock")
    assert fn.get("/").text == "+0000"


def test_the_function_reads_text_as_utf8_whatever_this_machines_locale(function, monkeypatch):
    """Kubeless' images run with LANG=C.UTF-8 (Python's, Ruby's, the JDK's): a function's text files read as UTF-8.
    Ours had no LANG (Ruby read them as US-ASCII, Java as ASCII) and a local process took this machine's locale."""
    for name in [name for name in os.environ if name.startswith("LC_")] + ["LANGUAGE"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "C")  # ASCII: what a local process inherits (a container does not)
    monkeypatch.setenv("LC_ALL", "C")
    fn = function("text", folder=True)
    assert fn.get("/").text == "1"


def test_output_a_call_left_without_a_newline_is_the_calls_own(function):
    """The runtime's access line goes to stdout as in the pod, so output without a trailing newline is glued to it
    (`kubectl logs` shows the same line); the call's record keeps that output and only that. The glued line was
    taken for the access line (the output dropped) or, with a space in the output, for output (the access line
    with it, found after the writer's wait)."""
    fn = function("unfinished")
    answer = fn.get("/", headers={"User-Agent": "glue-test"})
    assert (answer.status_code, answer.text) == (200, "done")
    assert "no newline here" in fn.wait_for_log("no newline here")
    recorder = fn.supervisor.recorder
    assert recorder.flush(10)
    [summary] = recorder.list(fn.instance.name)
    record = recorder.get(summary["id"])
    assert [line["text"] for line in record["logs"]] == ["no newline here"], fn.logs()


def test_each_of_calls_in_quick_succession_holds_the_line_it_printed(function):
    """A client calling one after another (a kept-alive session: ~2 ms apart) on Node.js got the lines of several
    calls in the first record and none in the others: its access lines were written in a batch after the output of
    the next calls, which reached the server thread apart from the answers."""
    fn = function("prints")
    with requests.Session() as session:
        for n in range(30):
            answer = session.post(fn.url + "/", data="n%d" % n, headers={"Content-Type": "text/plain"}, timeout=30)
            assert answer.text == "n%d" % n
    recorder = fn.supervisor.recorder
    assert recorder.flush(10)
    printed = {}
    for summary in recorder.list(fn.instance.name, limit=30):
        record = recorder.get(summary["id"])
        printed[record["request"]["body"]["text"]] = [line["text"] for line in record["logs"]]
    assert printed == {"n%d" % n: ["handling n%d" % n] for n in range(30)}, fn.logs()


def test_output_at_load_without_a_newline_neither_stops_the_start_nor_is_lost(function):
    """The runtime's control lines (ready, load-failed) follow it on stdout: one glued to such output was taken for
    the function's, and a Node.js function never became Ready (a save of one kept the last code)."""
    fn = function("loadprint", editable=True)
    assert fn.get("/").text == "hello world"
    assert "loading config..." in fn.wait_for_log("loading config...")
    assert "@kubeless-local" not in fn.logs()
    assert fn.replace_code(fn.scenario_code("loadprint").replace("hello world", "hello again")).value == "Ready"
    assert fn.get("/").text == "hello again"


# Each runtime's own files (runtimes/<server>/): a function's module of such a name is its own, as in the pod
RUNTIME_FILES = {
    "python": ["kubeless", "template"],
    "nodejs": ["kubeless", "worker", "held", "check"],
    "ruby": ["kubeless", "install", "worker_pool"],
    "php": ["kubeless", "http", "call", "metrics", "pool", "protocol", "runner", "server"],
}


@pytest.mark.language(*RUNTIME_FILES)
def test_a_handler_module_named_as_a_file_of_the_runtime_is_the_functions(function, runtime):
    """Kubeless' runtimes live apart from /kubeless (the Python one is /_kubeless.py): a function's kubeless.py is
    its own. Python took the runtime's own kubeless.py or template.py, the first on sys.path."""
    for module in RUNTIME_FILES[runtime.server]:
        fn = function("hello", module=module)
        assert fn.get("/").text == "hello world", (module, fn.logs())
        fn.supervisor.stop(fn.instance.name)


def http_1_0_answer(sock):
    """(head, body) of one answer to an HTTP/1.0 request on `sock`: its body by Content-Length, else up to the
    close."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "closed before an answer: %r" % data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length: *(\d+)", head)
    while length is None or len(body) < int(length[1]):
        chunk = sock.recv(65536)
        if not chunk:
            assert length is None, "closed within the body"
            break
        body += chunk
    return head.decode("latin-1").lower(), body


def closed_by_peer(sock):
    """The peer closed `sock` (seen within its timeout), nothing more sent."""
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False


@pytest.mark.parametrize("asked", [True, False])
def test_an_http_1_0_client_is_told_the_connection_stays_or_it_is_closed(function, asked):
    """`ab -k` (HTTP/1.0 asking `Connection: keep-alive`) hung on the Python runtime: it kept the connection without
    saying so, and an HTTP/1.0 client then waits for the close."""
    fn = function("hello")
    request = b"GET / HTTP/1.0\r\nHost: x\r\n" + (b"Connection: keep-alive\r\n" if asked else b"") + b"\r\n"
    with socket.create_connection(("127.0.0.1", fn.instance.port), timeout=3) as sock:
        for _ in range(3):
            sock.sendall(request)
            head, body = http_1_0_answer(sock)
            assert head.startswith("http/1.") and body == b"hello world", (head, body)
            if "connection: keep-alive" not in head:
                assert closed_by_peer(sock), "kept without saying so: %s" % head
                break
            assert asked, head  # the next request on this connection is answered


def variables_that_stop_the_runtime(language, folder):
    """A variable of the user's shell that keeps `language`'s runtime (or its build) from starting; a pod has none."""
    ini = folder / "php.d"
    ini.mkdir()
    (ini / "prepend.ini").write_text("auto_prepend_file=/nonexistent/prepend.php\n")
    return {
        "nodejs": {"NODE_OPTIONS": "--require ./.pnp.cjs"},  # a Yarn PnP shell
        "ruby": {"RUBYOPT": "-rkubeless_local_no_such_library"},  # as `bundle exec` sets it, with its library
        "php": {"PHP_INI_SCAN_DIR": str(ini)},  # another project's php.ini
        "java": {"JAVA_TOOL_OPTIONS": "-javaagent:/nonexistent/agent.jar"},  # an APM agent
    }[language]


@pytest.mark.language("nodejs", "ruby", "php", "java")  # Go's GOARCH: tests/unit/test_prepare.py
def test_this_machines_runtime_variables_do_not_reach_the_function(function, runtime, monkeypatch, tmp_path):
    """A pod's env is its image's and the function's: a variable in the user's shell that changes how the
    language's runtime starts crashed the server (or its build) here, where the pod runs."""
    for name, value in variables_that_stop_the_runtime(runtime.server, tmp_path).items():
        monkeypatch.setenv(name, value)
    fn = function("hello")
    assert fn.get("/").text == "hello world"


def test_other_callers_are_served_during_a_runaway_call(function):
    fn = function("workdir", folder=True, timeout="1")
    runaway = fn.open_call(body=b"sleep", headers={"Content-Type": "text/plain"})

    def call(delay):
        time.sleep(delay)  # spreads the calls over the runaway call and its timeout (not a synchronisation)
        response = requests.get(fn.url + "/", timeout=30)
        return response.status_code, response.text

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(call, [i * 0.075 for i in range(20)]))
    assert answers == [(200, "v0")] * 20
    assert fn.status_of(runaway) == 408


def test_a_half_closed_request_is_answered(function):
    # `nc -N` and some proxies shut their sending side down once the request is sent
    fn = function("hello")
    sock = socket.create_connection(("127.0.0.1", fn.instance.port), timeout=10)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    sock.shutdown(socket.SHUT_WR)
    data = read_to_end(sock)
    assert data.startswith(b"HTTP/1.1 200"), data
    assert data.endswith(b"hello world")


CUT_SHORT = {
    "body": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\nabc",
    "head": b"GET / HTTP/1.1\r\nHost: x\r\nUser-Ag",
}


@pytest.mark.parametrize("cut", sorted(CUT_SHORT))
def test_a_request_the_client_cut_short_is_let_go(function, backend_name, cut):
    # A client that gives up mid-upload (a timeout, a cancelled browser upload) closes its side: the request can
    # never be complete, so the server closes the connection (with a 400 or without an answer). Python's worker,
    # which reads kept-alive connections itself, kept the connection and spun on its end-of-file at 100 % CPU
    # (the process backend's door let the client go at once: there the spin is what shows it).
    fn = function("hello")
    sock = socket.create_connection(("127.0.0.1", fn.instance.port), timeout=15)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # first a whole request: kept alive, Python's worker takes it
    first = b""
    while not first.endswith(b"hello world"):
        first += sock.recv(65536) or pytest.fail("closed after the first answer: %r" % first)
    sock.sendall(CUT_SHORT[cut])
    sock.shutdown(socket.SHUT_WR)
    data = read_to_end(sock)  # a server that holds the connection makes this time out
    assert data == b"" or data.startswith(b"HTTP/1.1 400"), data
    assert fn.get("/").text == "hello world"
    if backend_name == "process":
        before = process_group_cpu(fn.instance.pid)
        time.sleep(1.0)  # a window to measure CPU use over (not a wait): a spinning worker uses all of it
        assert process_group_cpu(fn.instance.pid) - before < 0.5


def raw_call(fn, request):
    """Send raw request bytes (Connection: close) and return the status code."""
    sock = socket.create_connection(("127.0.0.1", fn.instance.port), timeout=10)
    sock.sendall(request)
    return fn.status_of(sock)


def no_failures(fn):
    return {k: v for k, v in fn.metrics().items() if k[0] == "function_failures_total" and v} == {}


def test_invalid_json_is_a_client_error(function):
    fn = function("echo")
    response = fn.post("/", data=b"{oops", headers={"Content-Type": "application/json"})
    if fn.language in JSON_DATA_IS_RAW:
        assert (response.status_code, response.text) == (200, "{oops")  # nothing parses it
    else:
        assert response.status_code == 400
    assert no_failures(fn)


# Runtimes that decode the path and headers as UTF-8 (Python, Node) refuse such a request with 400;
# Ruby, PHP, Go and Java hand the raw bytes to the function, as their HTTP stacks do in the pod. Either
# way it is never a 5xx and never counted as a function failure.
CLIENT_ERROR_STATUS = {"python": 400, "nodejs": 400, "ruby": 200, "php": 200, "go": 200, "java": 200}


def test_an_undecodable_path_is_a_client_error(function):
    fn = function("echo")
    status = raw_call(fn, b"GET /%ff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == CLIENT_ERROR_STATUS[fn.language]
    assert no_failures(fn)


def test_a_non_utf8_header_is_a_client_error(function):
    fn = function("echo")
    status = raw_call(
        fn,
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1\r\n"
        b"Content-Type: text/plain\xff\xfe\r\n\r\nx",
    )
    assert status == CLIENT_ERROR_STATUS[fn.language]
    assert no_failures(fn)


def test_a_timed_out_call_counts_as_a_failure(function):
    fn = function("sleep", timeout="1")
    assert fn.post("/", data="5").status_code == 408
    metrics = fn.metrics()
    label = fn.method_label("POST")
    assert metrics[("function_calls_total", label)] == 1
    assert metrics[("function_failures_total", label)] == 1


def test_saves_after_runaway_calls_serve_the_new_code(function):
    # Go restarts itself after a runaway call: the restart must go on through the engine's `build`
    # link, so later saves (new builds behind that link) are served, and a later runaway call (after
    # the old builds were pruned) restarts it again.
    fn = function("workdir", folder=True, timeout="1")
    code = fn.scenario_code("workdir")

    def save(n):  # new code that reads another file: answers "v<n>" only if the new code serves
        (fn.spec.source / ("data-%d.txt" % n)).write_text("v%d\n" % n)
        assert fn.replace_code(code.replace("data.txt", "data-%d.txt" % n)).value == "Ready", fn.logs()
        answer = fn.get("/")
        assert (answer.status_code, answer.text) == (200, "v%d" % n), fn.logs()

    def runaway():
        assert fn.post("/", data="sleep", headers={"Content-Type": "text/plain"}).status_code == 408

    runaway()
    for n in range(1, 5):
        save(n)
    runaway()
    save(5)
    runaway()
    answer = fn.get("/")
    assert (answer.status_code, answer.text) == (200, "v5"), fn.logs()
    assert fn.instance.state.value == "Ready"


def test_a_server_restarted_while_the_saved_code_is_broken_stays_in_compile_error(function):
    # The restart (after a runaway call, after a crash) serves the last good code again; the saved code
    # is still broken, so `ls` keeps saying CompileError with the same error until a save fixes it.
    fn = function("workdir", folder=True, timeout="1")
    assert fn.replace_code(BROKEN_CODE).value == "CompileError"
    broken = ("CompileError", fn.instance.error)
    assert fn.post("/", data="sleep", headers={"Content-Type": "text/plain"}).status_code == 408
    assert fn.get("/").text == "v0"
    assert (fn.instance.state.value, fn.instance.error) == broken
    os.kill(fn.instance.pid, signal.SIGKILL)  # the runtime server (or the container's init) dies
    # the state too: the server may answer a moment before the engine has read its `ready` control line
    restarted = wait_for(lambda: fn.instance.restarts > 0 and serves(fn) and fn.instance.state.value == broken[0], 60)
    assert restarted, "not restarted:\n" + fn.logs()
    assert fn.get("/").text == "v0"
    assert (fn.instance.state.value, fn.instance.error) == broken, fn.logs()
    assert fn.supervisor.status()[0]["serving"]
    assert fn.replace_code(fn.scenario_code("workdir")).value == "Ready"


def test_a_chunked_request_body_reaches_the_function(function):
    # requests sends a generator as Transfer-Encoding: chunked (as curl -T - and streaming clients do)
    fn = function("echo")
    response = fn.post("/", data=iter([b"hello", b" chunked", b" world"]), headers={"Content-Type": "text/plain"})
    assert (response.status_code, response.text) == (200, "hello chunked world")
    big = function("large", env={"REQ_MB_LIMIT": "10"})
    chunk = b"x" * 65536
    response = big.post("/", data=(chunk for _ in range(64)), headers={"Content-Type": "application/octet-stream"})
    assert (response.status_code, response.text) == (200, str(64 * len(chunk)))


SLOW_CLIENTS = 200  # each holds a connection with half a request header, as a slow-loris client does


def test_slow_clients_do_not_stop_other_calls(function):
    fn = function("hello")
    slow = []
    try:
        for _ in range(SLOW_CLIENTS):
            sock = socket.create_connection(("127.0.0.1", fn.instance.port), timeout=10)
            sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            slow.append(sock)
        response = fn.get("/", timeout=15)  # generous: milliseconds when nothing blocks it
        assert (response.status_code, response.text) == (200, "hello world")
    finally:
        for sock in slow:
            sock.close()


BIG_BODY_MB = 50


def test_memory_goes_back_after_big_bodies(function):
    # A server (and its workers) used to stay as big as its last big requests: 150-300 MB after a
    # few 50 MB bodies. Runtimes release the memory after such a call.
    fn = function("large", env={"REQ_MB_LIMIT": str(BIG_BODY_MB + 10)})
    octets = {"Content-Type": "application/octet-stream"}
    for _ in range(5):  # every lazy load done, the pool settled
        assert fn.post("/", data=b"x" * 1000, headers=octets).text == "1000"
    baseline = tree_rss_mb(fn.instance.pid)
    body = b"x" * (BIG_BODY_MB << 20)
    for _ in range(4):
        response = fn.post("/", data=body, headers=octets)
        assert (response.status_code, response.text) == (200, str(len(body)))
    bound = baseline + BIG_BODY_MB // 2  # generous, yet less than one body kept anywhere
    wait_for(lambda: tree_rss_mb(fn.instance.pid) < bound, seconds=30)
    assert tree_rss_mb(fn.instance.pid) < bound, "%d MB after %d-MB bodies, %d MB before" % (
        tree_rss_mb(fn.instance.pid),
        BIG_BODY_MB,
        baseline,
    )
