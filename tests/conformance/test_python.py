"""Python-specific vectors of contract §10 (1–7) and the warm/per-call module-state modes."""

import socket

import pytest
import requests
from processes import busy_pool_peak, child_processes
from sockets import read_to_end
from waiting import wait_until

pytestmark = pytest.mark.language("python")

VECTOR_HEADERS = {
    "event-id": "abc",
    "event-type": "application/json",
    "event-time": "2021-01-18T17:10:12Z",
    "event-namespace": "cli.kubeless.io",
}


def test_vector_1_json_is_parsed_and_returned_as_json(function):
    fn = function("echo")
    response = fn.post("/", data=b'{"a":1}', headers={"Content-Type": "application/json", **VECTOR_HEADERS})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.text == '{"a": 1}'


def test_vector_2_json_with_charset_stays_bytes(function):
    fn = function("echo")
    response = fn.post("/", data=b'{"a":1}', headers={"Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=UTF-8"
    assert response.text == '{"a":1}'


def test_vector_3_get_without_headers(function):
    fn = function("event")
    body = fn.get("/x").json()
    assert body == {"data": "", "event-id": None, "event-type": None, "event-time": None, "event-namespace": None}


def test_headers_reach_the_function_as_bottle_reads_them(function):
    # the server builds bottle's environ and the event's fields itself: values read as UTF-8, a repeated
    # header joined with commas, Content-Type by its CGI name, Content-Length never twice
    fn = function("event")
    body = fn.get("/", headers={"event-namespace": "caf\u00e9".encode(), "Event-ID": "e1"}).json()
    assert (body["event-namespace"], body["event-id"]) == ("caf\u00e9", "e1")
    fn = function("request")
    sock = socket.create_connection(("127.0.0.1", fn.instance.port), timeout=10)
    sock.sendall(b"GET /?q=1 HTTP/1.1\r\nHost: x\r\nX-Test: a\r\nx-test: b\r\nConnection: close\r\n\r\n")
    answer = read_to_end(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\na,b|1"), answer
    json_body = fn.post("/", data=b'{"a":1}', headers={"Content-Type": "application/json"})
    assert json_body.status_code == 200


def test_vector_4_put_is_not_allowed(function):
    fn = function("hello")
    assert fn.request("PUT", "/").status_code == 405
    assert fn.request("HEAD", "/").status_code == 200


def test_vector_5_exception_is_bottles_500_page(function):
    fn = function("raise")
    response = fn.post("/", data="boom")
    assert response.status_code == 500
    assert "Internal Server Error" in response.text and "<html>" in response.text
    assert "RuntimeError: boom" in fn.wait_for_log("RuntimeError: boom")  # the traceback goes to the log


def test_vector_6_timeout_page_and_failures(function):
    fn = function("sleep", timeout="1")
    response = fn.post("/", data="5")
    assert response.status_code == 408
    assert "Timeout while processing the function" in response.text
    metrics = fn.metrics()
    assert metrics[("function_calls_total", "POST")] == 1
    assert metrics[("function_failures_total", "POST")] == 1  # legacy counted none; all runtimes agree now


def pages_name_the_url_the_client_asked(base):
    host = {"Host": "hello.default.svc.cluster.local:8080"}
    timed_out = requests.post(base + "/x?y=1", data="5", headers=host, timeout=30)
    assert timed_out.status_code == 408
    assert "http://hello.default.svc.cluster.local:8080/x?y=1" in timed_out.text, timed_out.text
    refused = requests.put(base + "/x", headers=host, timeout=30)
    assert refused.status_code == 405
    assert "http://hello.default.svc.cluster.local:8080/x" in refused.text, refused.text


def test_the_timeout_and_405_pages_name_the_url_the_client_asked(function):
    """Bottle's page names the request's URL, with its Host, as in the pod; it named the server's private port
    (`http://localhost:41873/`), which the user never called."""
    pages_name_the_url_the_client_asked(function("sleep", timeout="1").url)


@pytest.mark.backend("process")  # the runtime server's own port, on the host: the call is read by a worker
def test_the_timeout_page_of_a_call_a_worker_read_names_the_url_the_client_asked(function):
    pages_name_the_url_the_client_asked(function("sleep", timeout="1").instance.server_url)


@pytest.mark.parametrize(
    "kind, status, body, content_type",
    [
        ("none", 200, "", None),
        ("int", 500, None, None),
        ("dict", 200, '{"k": "v"}', "application/json"),
        ("list", 200, "ab", None),
        ("bytes", 200, "raw", None),
        ("tuple", 202, "accepted", None),
        ("tuple-headers", 418, "teapot", None),
    ],
)
def test_vector_7_return_values(function, kind, status, body, content_type):
    fn = function("returns")
    response = fn.post("/", data=kind)
    assert response.status_code == status
    if body is not None:
        assert response.text == body
    if content_type:
        assert response.headers["Content-Type"] == content_type
    if kind == "tuple-headers":
        assert response.headers["X-Kind"] == "tuple"


def test_invalid_json_is_400_before_metrics(function):
    fn = function("echo")  # legacy answered 500; a caller's mistake is a 400 in every runtime now
    response = fn.post("/", data=b"{oops", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "Invalid JSON" in response.text and "<html>" in response.text  # bottle's error page
    assert fn.metrics().get(("function_calls_total", "POST"), 0) == 0


def test_warm_workers_keep_module_state(function):
    fn = function("state")
    assert [fn.get("/").text for _ in range(3)] == ["1", "2", "3"]


def test_per_call_isolation_gives_legacy_module_state(function):
    fn = function("state", isolation="per-call")
    assert [fn.get("/").text for _ in range(3)] == ["1", "1", "1"]


def test_bottle_request_forms_and_files(function):
    fn = function("forms")
    assert fn.post("/", data={"a": "1"}).text == "1|None|"
    response = fn.post("/", data={"a": "2"}, files={"f": ("notes.txt", b"file body")})
    assert (response.status_code, response.text) == (200, "2|notes.txt|file body")


@pytest.mark.backend("process")  # counts the server's child processes on the host
def test_worker_pool_honours_its_limit_and_shrinks_when_idle(function):
    fn = function("sleep", env={"KUBELESS_LOCAL_WORKERS": "2", "CHERRYPY_NUMTHREADS": "5"})
    answers, peak = busy_pool_peak(fn)
    assert answers == ["done"] * 120
    assert 2 < peak <= 5  # it grew under load, never past CHERRYPY_NUMTHREADS
    # idle workers retire after 10 s
    wait_until(
        lambda: len(child_processes(fn.instance.pid)) <= 2,
        "the pool did not shrink back to its warm minimum",
        timeout=30,
        interval=0.2,
    )


SLOW_TO_LOAD_STATE = """import time
time.sleep(0.5)  # workers spawned after the first one become ready while it serves
print("module loaded", flush=True)
calls = 0


def handler(event, context):
    global calls
    calls += 1
    return str(calls)
"""


def test_sequential_calls_stay_on_the_warm_worker_while_the_pool_fills(function):
    fn = function("state", editable=True, env={"KUBELESS_LOCAL_WORKERS": "3"})
    assert fn.replace_code(SLOW_TO_LOAD_STATE).value == "Ready"  # the probe worker serves; two more load
    assert fn.get("/").text == "1"
    # the new workers are ready (and idle)
    wait_until(lambda: fn.logs().count("module loaded") >= 3, lambda: "3 workers loaded:\n" + fn.logs(), timeout=20)
    assert [fn.get("/").text for _ in range(2)] == ["2", "3"]


@pytest.mark.parametrize(
    "code, headline",
    [
        ("import kl_no_such_module\n", "ModuleNotFoundError: No module named 'kl_no_such_module'"),
        ("def other(event, context):\n    return 1\n", "has no function 'handler'"),
        ("x = 1\x00\n", "null bytes"),  # e.g. an archive copied as the module: named, not `None:None`
        # Kubeless sends a call's result back pickled, which these cannot be: each call timed out in the pod; here
        # a 500 with nothing in the log (a coroutine), or bottle answered it (a generator)
        ("async def handler(event, context):\n    return 1\n", "handler is an async def, which Kubeless' Python"),
        ("def handler(event, context):\n    yield 'a'\n", "handler is a generator (it yields), whose result"),
    ],
)
def test_load_error_headline_is_the_exception_line(function, code, headline):
    fn = function("hello", editable=True)
    assert fn.replace_code(code).value == "CompileError"
    first = fn.instance.error.splitlines()[0]
    assert headline in first and "Traceback" not in first
    assert str(fn.code_file) in first  # the user's file, not the generated copy


def test_relative_reads_and_timeouts_survive_a_failed_reload(function):
    # the failed generation's folder is deleted; the last good code keeps its working folder
    fn = function("workdir", folder=True, timeout="1")
    assert fn.replace_file(fn.spec.source / "data.txt", "v1\n").value == "Ready"
    assert fn.replace_code("raise RuntimeError('no load')\n").value == "CompileError"
    assert (fn.get("/").status_code, fn.get("/").text) == (200, "v1")
    assert fn.post("/", data="sleep", headers={"Content-Type": "text/plain"}).status_code == 408
    assert fn.request("PUT", "/").status_code == 405
    assert (fn.get("/").status_code, fn.get("/").text) == (200, "v1")


# A client connection goes to an idle worker that reads and answers its calls itself (the direct hand-off);
# the server keeps a copy to answer 408 and kill that worker past the timeout.


@pytest.mark.backend("process")  # counts the server's child processes on the host
def test_a_runaway_call_on_a_handed_connection_is_408_and_its_worker_is_replaced(function):
    fn = function("sleep", timeout="1")
    server = fn.instance.server_url + "/"
    before = set(child_processes(fn.instance.pid))
    runaway = fn.open_call(body=b"30")  # in flight in the worker it was handed to
    with requests.Session() as other:  # another connection, served meanwhile by another worker
        assert [other.post(server, data="0", timeout=30).text for _ in range(3)] == ["done"] * 3
    assert fn.status_of(runaway) == 408
    wait_until(
        lambda: (
            len(before - set(child_processes(fn.instance.pid))) == 1
            and len(child_processes(fn.instance.pid)) == len(before)
        ),
        lambda: "the killed worker was not replaced: %s then %s" % (before, child_processes(fn.instance.pid)),
        timeout=20,
    )
    metrics = fn.metrics()
    assert metrics[("function_calls_total", "POST")] == 4
    assert metrics[("function_failures_total", "POST")] == 1
    assert fn.post("/", data="0").text == "done"


@pytest.mark.backend("process")  # the runtime server's own port, on the host
def test_module_state_stays_warm_across_new_connections(function):
    fn = function("state")
    server = fn.instance.server_url + "/"
    assert [requests.get(server, timeout=30).text for _ in range(3)] == ["1", "2", "3"]  # a connection each
    with requests.Session() as kept:
        assert [kept.get(server, timeout=30).text for _ in range(2)] == ["4", "5"]
    assert requests.get(server, timeout=30).text == "6"  # after the kept-alive one closed


def test_access_lines_of_a_worker_killed_at_the_timeout_are_kept(function):
    fn = function("sleep", timeout="1")
    with requests.Session() as caller:  # one kept-alive connection: the same worker answers both
        assert caller.post(fn.url + "/?first", data="0", timeout=30).text == "done"
        assert caller.post(fn.url + "/?runaway", data="30", timeout=30).status_code == 408
    logs = fn.wait_for_log('"POST /?runaway HTTP/1.1" 408')
    assert '"POST /?first HTTP/1.1" 200' in logs and '"POST /?runaway HTTP/1.1" 408' in logs


@pytest.mark.backend("process")  # the runtime server's own port, kept across a reload in place
def test_a_kept_alive_connection_meets_the_new_code_right_after_a_reload(function):
    fn = function("hello", editable=True)
    server = fn.instance.server_url + "/"
    with requests.Session() as kept:  # its worker answers it itself until the reload takes it back
        assert kept.get(server, timeout=30).text == "hello world"
        for n in range(3):
            assert fn.replace_code('def handler(event, context):\n    return "v%d"\n' % n).value == "Ready"
            assert kept.get(server, timeout=30).text == "v%d" % n


@pytest.mark.backend("process")  # counts the server's child processes on the host
def test_an_idle_function_keeps_one_warm_worker_and_grows_for_calls_that_wait(function):
    fn = function("sleep")
    assert len(child_processes(fn.instance.pid)) == 1  # a server and one worker: two processes
    answers, peak = busy_pool_peak(fn, calls=20, at_once=5)
    assert answers == ["done"] * 20
    assert 1 < peak <= 10  # CHERRYPY_NUMTHREADS' default


EXITS = """import os


def handler(event, context):
    if event["data"] == b"exit":
        os._exit(1)
    return "alive"
"""


def test_a_worker_that_exits_during_a_call_answers_500_and_is_replaced(function):
    fn = function("hello", editable=True)
    assert fn.replace_code(EXITS).value == "Ready"
    with requests.Session() as caller:  # one kept-alive connection: answered by the worker it was handed to
        assert caller.post(fn.url + "/", data=b"exit", timeout=30).status_code == 500
        assert caller.post(fn.url + "/", data=b"again", timeout=30).text == "alive"
    assert "function worker exited during the call" in fn.wait_for_log("function worker exited during the call")
    metrics = fn.metrics()
    assert metrics[("function_calls_total", "POST")] == 2
    assert metrics[("function_failures_total", "POST")] == 1


def test_a_calls_duration_lands_in_prometheus_clients_own_buckets(function):
    """The workers count each call's duration per bucket before prometheus_client is loaded (kubeless.py BUCKETS);
    /metrics shows them under the bounds prometheus_client's histogram has: a 0.3 s call is in le=0.5, not le=0.25.
    Before any call, Kubeless' three families are listed."""
    from prometheus_client.parser import text_string_to_metric_families

    fn = function("sleep")

    def buckets():
        text = requests.get(fn.url + "/metrics", timeout=10).text
        families = {family.name: family for family in text_string_to_metric_families(text)}
        assert {"function_calls", "function_failures", "function_duration_seconds"} <= families.keys()
        return {
            sample.labels["le"]: sample.value
            for sample in families["function_duration_seconds"].samples
            if sample.name.endswith("_bucket")
        }

    assert buckets() == {}
    assert fn.post("/", data=b"0.3").text == "done"
    counted = buckets()
    assert counted["0.25"] == 0 and counted["0.5"] == counted["+Inf"] == 1
    assert len(counted) == 15  # prometheus_client's default bounds, +Inf included


def test_a_time_zone_in_the_functions_env_is_the_one_its_clock_reads(function):
    # as TZ in the pod's env: a server forked from the template (emulator/forkserver.py) read the template's zone
    fn = function("clock", env={"TZ": "XYZ-05:30"})  # a POSIX zone: no tzdata needed, in no image either
    assert fn.get("/").text == "+0530"


def test_asserts_run_whatever_this_machines_python_variables(function, monkeypatch):
    """PYTHONOPTIMIZE in the user's shell skipped the function's asserts here; the pod's interpreter runs them."""
    monkeypatch.setenv("PYTHONOPTIMIZE", "1")
    fn = function("asserts")
    assert fn.post("/", data="good", headers={"Content-Type": "text/plain"}).text == "checked"
    assert fn.post("/", data="bad", headers={"Content-Type": "text/plain"}).status_code == 500
