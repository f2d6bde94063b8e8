"""Ruby-specific vectors (contract §5 Ruby column, §10 #16) and the places where the Ruby runtime
deliberately differs from the legacy Kubeless image (see the README parity table)."""

import pytest
from processes import busy_pool_peak, child_processes
from waiting import wait_until

pytestmark = pytest.mark.language("ruby")


def test_exception_answers_500_not_legacy_200(function):
    # legacy: the Go proxy delivered Sinatra's error body with status 200 (§10 #16)
    f = function("raise")
    before = f.metrics().get(("function_failures_total", "POST"), 0)
    r = f.post(data="boom")
    assert r.status_code == 500
    assert f.metrics().get(("function_failures_total", "POST"), 0) == before + 1
    assert "RuntimeError: boom" in f.wait_for_log("RuntimeError: boom")
    assert f.post(data="fine").text == "ok"


def test_rack_triplet_sets_status_and_headers(function):
    # legacy: the proxy delivered the body only, always 200
    r = function("status").get()
    assert (r.status_code, r.headers["X-Custom"], r.text) == (201, "yes", "created")


def test_every_method_reaches_the_function(function):
    # legacy Sinatra routes were GET and POST only
    f = function("request")
    for method in ("PUT", "PATCH", "DELETE", "OPTIONS"):
        r = f.request(method, "/any/path?q=v", headers={"X-Test": "t"})
        assert (r.status_code, r.text) == (200, "t|v")


def test_module_state_is_warm_across_sequential_calls(function):
    # calls run in a reused forked worker: like the legacy in-process runtime, module state persists
    f = function("state")
    assert [f.get().text for _ in range(3)] == ["1", "2", "3"]


def test_timeout_is_408_counted_as_failure_and_server_survives(function):
    f = function("spin", timeout=1)
    r = f.get()
    assert r.status_code == 408 and "Timeout while processing the function" in r.text
    assert f.metrics().get(("function_failures_total", "GET"), 0) == 1
    assert f.get("/healthz").text == "OK"


@pytest.mark.backend("process")  # counts the server's child processes on the host
def test_worker_pool_honours_its_limit_and_shrinks_when_idle(function):
    # as the Python pool: grows for calls that wait, back to one warm worker after 10 s idle
    fn = function("sleep", env={"KUBELESS_RUBY_WORKERS": "5"})
    answers, peak = busy_pool_peak(fn)
    assert answers == ["done"] * 120
    assert 2 < peak <= 5  # it grew under load, never past KUBELESS_RUBY_WORKERS
    # idle workers retire after 10 s
    wait_until(
        lambda: len(child_processes(fn.instance.pid)) <= 1,
        "the pool did not shrink back to its warm worker",
        timeout=30,
        interval=0.2,
    )
