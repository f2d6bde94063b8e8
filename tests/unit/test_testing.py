"""The plugin's engine-side helpers (kubeless_local/testing.py) that need no running function."""

import pytest

from kubeless_local import spec as specs
from kubeless_local import testing
from kubeless_local.emulator.taps import Exchange
from kubeless_local.errors import NotFound


def test_an_ad_hoc_function_is_a_project_of_one_function_with_its_deps_and_env(tmp_path):
    folder = testing.write_function(
        tmp_path / "p",
        "def echo(event, context):\n    return 1\n",
        handler="handler.echo",
        deps="requests\n",
        env={"K": "V"},
        timeout="7",
    )
    (fn,) = specs.Loader(folder).load().functions
    assert (fn.name, fn.handler, fn.runtime, fn.timeout) == ("echo", "handler.echo", "python3.11", "7")
    assert fn.source == folder / "handler.py" and (folder / "handler.py").read_text().startswith("def echo")
    assert fn.deps_file == folder / "requirements.txt" and fn.deps_file.read_text() == "requests\n"
    assert fn.env == [("K", "V")]


def test_an_ad_hoc_function_in_another_runtime_gets_its_suffix_and_deps_file(tmp_path):
    folder = testing.write_function(
        tmp_path / "p", "module.exports = {};\n", runtime="nodejs20", handler="handler.echo", deps="{}"
    )
    (fn,) = specs.Loader(folder).load().functions
    assert fn.source == folder / "handler.js" and fn.deps_file == folder / "package.json"


def test_env_is_added_to_every_functions_container_env_replacing_a_variable_it_sets(tmp_path):
    testing.write_function(tmp_path, "def a(event, context):\n    return 1\n", handler="handler.a", env={"K": "old"})
    manifests = testing.with_env(tmp_path, {"K": "new", "J": "x"})
    assert manifests.functions[0].env == [("K", "new"), ("J", "x")]
    assert specs.Loader(tmp_path).load().functions[0].env == [("K", "old")]  # the files are left alone


@pytest.mark.parametrize(
    "line",
    [
        '127.0.0.1 - - [05/Dec/2026:16:12:45 +0000] "POST / HTTP/1.1" 200 2 "-" "python-requests/2.34.2"',
        '127.0.0.1 - - [05/Dec/2026:16:12:45 UTC] "POST / HTTP/1.1" 200 - "-" "python-requests/2.34.2"',
        '127.0.0.1:54606 "POST / HTTP/1.1" 200 python-requests/2.34.2',  # Go's
    ],
)
def test_the_access_line_of_a_call_closes_its_output_in_every_runtimes_format(line):
    assert testing.closes_the_call(line, "stdout", "POST", "/", "python-requests/2.34.2")
    assert not testing.closes_the_call(line, "stdout", "POST", "/", "Go-http-client/1.1")  # a trigger's
    assert not testing.closes_the_call(line, "stdout", "GET", "/", "python-requests/2.34.2")
    assert not testing.closes_the_call(line, "system", "POST", "/", "python-requests/2.34.2")
    assert testing.printed_by_the_function(line, "stdout") is None
    assert testing.printed_by_the_function("processing x", "stderr") == "processing x"


@pytest.mark.parametrize(
    "access",
    [
        '127.0.0.1 - - [05/Dec/2026:16:12:45 +0000] "POST / HTTP/1.1" 200 2 "-" "python-requests/2.34.2"',
        '::ffff:127.0.0.1 - - [05/Dec/2026:16:12:45 +0000] "POST / HTTP/1.1" 200 - "-" "python-requests/2.34.2"',
        '127.0.0.1:54606 "POST / HTTP/1.1" 200 python-requests/2.34.2',  # Go's
        '[::1]:54606 "POST / HTTP/1.1" 200 python-requests/2.34.2',
        '0:0:0:0:0:0:0:1 - - [05/Dec/2026:16:12:45 +0000] "POST / HTTP/1.1" 200 2 "-" "python-requests/2.34.2"',
    ],
)
@pytest.mark.parametrize("output", ["done", "item 5 of 9", "v1.2.", "count=912", "x - y"])
def test_output_left_without_a_newline_before_the_access_line_is_the_functions(access, output):
    """On the stream they share, output without a trailing newline is glued to the access line (as in the pod)."""
    line = output + access
    assert testing.closes_the_call(line, "stdout", "POST", "/", "python-requests/2.34.2")
    assert testing.printed_by_the_function(line, "stdout") == output


def test_a_snapshot_redacts_the_events_id_and_time_and_durations():
    event = testing.Request("POST", "/", {"event-id": "abc123", "event-time": "2026-12-05T10:00:00Z"}, b"{}")
    response = testing.Response(
        200,
        '{"id": "abc123", "at": "2026-12-05T10:00:00Z", "took_ms": 3, "nested": [{"duration": 1.5}]}',
        {"Content-Type": "application/json"},
        event,
        "",
    )
    assert testing.snapshot_of(response) == {
        "status": 200,
        "content-type": "application/json",
        "body": {
            "id": "<event-id>",
            "at": "<event-time>",
            "took_ms": "<duration>",
            "nested": [{"duration": "<duration>"}],
        },
    }


def test_a_delivery_names_its_function_source_topic_data_and_answer():
    exchange = Exchange("ship", "kafka", "POST", "http://x", {"event-topic": "orders"}, b'{"id": 7}', 500, "no")
    delivery = testing.Delivery(exchange)
    assert delivery.request.headers["Event-Topic"] == "orders" and delivery.request.json() == {"id": 7}
    assert delivery.status_code == 500 and repr(delivery) == "ship ← kafka orders '{\"id\": 7}' → 500"


def test_snapshots_are_written_then_compared_and_updated(tmp_path):
    event = testing.Request("GET", "/", {}, b"")
    snapshots = testing.Snapshots(tmp_path)
    snapshots.match("hello", testing.Response(200, "hi", {}, event, ""))
    snapshots.match("hello", testing.Response(200, "hi", {}, event, ""))
    with pytest.raises(AssertionError, match="snapshot hello differs"):
        snapshots.match("hello", testing.Response(200, "bye", {}, event, ""))
    testing.Snapshots(tmp_path, update=True).match("hello", testing.Response(200, "bye", {}, event, ""))
    snapshots.match("hello", testing.Response(200, "bye", {}, event, ""))
    with pytest.raises(ValueError, match="a snapshot name"):
        snapshots.match("../escape", testing.Response(200, "bye", {}, event, ""))


def test_an_unknown_runtime_is_the_catalogs_error(tmp_path):
    with pytest.raises(NotFound, match="unknown runtime 'cobol1'"):
        testing.write_function(tmp_path, "", runtime="cobol1")
