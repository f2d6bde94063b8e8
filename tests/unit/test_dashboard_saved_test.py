"""A recorded invocation saved as a pytest test (dashboard/saved_test.py): the file runs, sends the recorded
request through the plugin's `kubeless.call`, and asserts the recorded answer; and the dashboard's routes that
show it and save it into the project's tests/ folder, never over a file."""

import json
from types import SimpleNamespace

import pytest

from kubeless_local.dashboard import saved_test
from kubeless_local.dashboard.source import SessionSource
from kubeless_local.errors import Conflict


def record(response_text='{"ok": true, "n": [1, null]}', status=200, body=None, truncated=False):
    return {
        "id": "a1b2c3",
        "function": "hello-world",
        "source": "kafka",
        "trigger": "orders",
        "request": {
            "method": "POST",
            "path": "/orders",
            "query": "x=1",
            "headers": [
                ["Host", "127.0.0.1:8080"],
                ["Content-Type", "application/json"],
                ["event-namespace", "kafkatriggers.kubeless.io"],
                ["Authorization", "REDACTED"],
                ["Content-Length", "9"],
            ],
            "body": body or {"size": 9, "truncated": False, "text": '{"id": 7}'},
        },
        "response": {
            "status": status,
            "headers": [],
            "body": {"size": len(response_text), "truncated": truncated, "text": response_text},
        },
    }


class FakeKubeless:
    """The fixture's `call`, answering what the test expects (or not), and what it was asked."""

    def __init__(self, status, text, content=None):
        self.answer = SimpleNamespace(
            status_code=status, text=text, json=lambda: json.loads(text), content=content or text.encode()
        )
        self.asked = []

    def call(self, name, **options):
        self.asked.append((name, options))
        return self.answer


def run(source, kubeless):
    namespace = {}
    exec(compile(source, "test_saved.py", "exec"), namespace)
    (test,) = [value for name, value in namespace.items() if name.startswith("test_")]
    test(kubeless)


def test_the_saved_test_sends_the_recorded_request_and_passes_on_the_recorded_answer():
    source = saved_test.pytest_source(record())
    assert saved_test.file_name(record()) == "test_hello_world_a1b2c3.py"
    assert "def test_hello_world_a1b2c3(kubeless):" in source
    assert "# not sent: Authorization" in source
    kubeless = FakeKubeless(200, '{"n": [1, null], "ok": true}')
    run(source, kubeless)
    ((name, options),) = kubeless.asked
    assert name == "hello-world"
    assert options == {
        "data": '{"id": 7}',
        "method": "POST",
        "path": "/orders?x=1",
        "headers": {"Content-Type": "application/json", "event-namespace": "kafkatriggers.kubeless.io"},
    }


@pytest.mark.parametrize("status, text", [(500, '{"ok": true, "n": [1, null]}'), (200, '{"ok": false}')])
def test_the_saved_test_fails_on_another_answer(status, text):
    with pytest.raises(AssertionError):
        run(saved_test.pytest_source(record()), FakeKubeless(status, text))


def test_a_text_answer_is_compared_as_text_and_a_cut_one_not_at_all():
    run(saved_test.pytest_source(record("<b>hi</b> 'x'")), FakeKubeless(200, "<b>hi</b> 'x'"))
    with pytest.raises(AssertionError):
        run(saved_test.pytest_source(record("<b>hi</b>")), FakeKubeless(200, "<b>bye</b>"))
    cut = saved_test.pytest_source(record("x" * 10, truncated=True))
    assert "not compared" in cut
    run(cut, FakeKubeless(200, "anything"))


def test_a_binary_request_body_is_sent_as_bytes():
    body = {"size": 3, "truncated": False, "base64": "AP8B"}
    kubeless = FakeKubeless(200, '{"ok": true, "n": [1, null]}')
    run(saved_test.pytest_source(record(body=body)), kubeless)
    assert kubeless.asked[0][1]["data"] == b"\x00\xff\x01"


def test_saving_writes_into_the_projects_tests_folder_and_never_over_a_file(tmp_path):
    class Recorded(SessionSource):
        def invocation(self, ident):
            return record()

    source = Recorded(SimpleNamespace(root=tmp_path))
    saved = source.save_test("a1b2c3")
    path = tmp_path / "tests" / "test_hello_world_a1b2c3.py"
    assert saved == {"path": str(path), "source": path.read_text()}
    path.write_text("# the user's own edits\n")
    with pytest.raises(Conflict, match="exists already"):
        source.save_test("a1b2c3")
    assert path.read_text() == "# the user's own edits\n"
