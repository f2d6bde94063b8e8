"""Python-specific vectors of contract §10 (1–7) and the warm/per-call module-state modes."""
import pytest

pytestmark = pytest.mark.language("python")

VECTOR_HEADERS = {"event-id": "abc", "event-type": "application/json", "event-time": "2021-01-18T17:10:12Z",
                  "event-namespace": "cli.kubeless.io"}


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


def test_vector_6_timeout_page_and_failures_unchanged(function):
    fn = function("sleep", timeout="1")
    response = fn.post("/", data="5")
    assert response.status_code == 408
    assert "Timeout while processing the function" in response.text
    metrics = fn.metrics()
    assert metrics[("function_calls_total", "POST")] == 1
    assert metrics.get(("function_failures_total", "POST"), 0) == 0


@pytest.mark.parametrize("kind, status, body, content_type", [
    ("none", 200, "", None),
    ("int", 500, None, None),
    ("dict", 200, '{"k": "v"}', "application/json"),
    ("list", 200, "ab", None),
    ("bytes", 200, "raw", None),
    ("tuple", 202, "accepted", None),
    ("tuple-headers", 418, "teapot", None),
])
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


def test_invalid_json_is_500_before_metrics(function):
    fn = function("echo")
    assert fn.post("/", data=b"{oops", headers={"Content-Type": "application/json"}).status_code == 500
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
