"""A recorded invocation as a pytest test: the same request sent with the pytest plugin's `kubeless` fixture
(docs/pytest-plugin.md), and the recorded answer asserted.

The test sends what the function received: method, path and query, the headers (the event's own `event-*`
ones too, so the function sees the same event; a secret one, exported as REDACTED, is left out and said so)
and the body. It asserts the status and the body: as JSON when the answer parses, else as text; a body the
recorder cut (over 256 KiB) is not asserted. What differs from call to call (an id, a time) is the user's
to loosen: the file says so.
"""

from __future__ import annotations

import json
import pprint
import re
from typing import Any

from kubeless_local.emulator.recorder import REDACTED, body_bytes

# set by the plugin's call, or by the HTTP client, for every request: not the test's to send
NOT_SENT = frozenset(("host", "content-length", "connection", "user-agent", "accept-encoding", "accept"))
WIDTH = 100  # of the literals written


def file_name(record: dict[str, Any]) -> str:
    return "test_%s_%s.py" % (_identifier(record["function"]), record["id"])


def _identifier(text: str) -> str:
    return re.sub(r"\W", "_", text).strip("_") or "function"


def _literal(value: Any, column: int) -> str:
    """`value` as Python source that starts at `column`: its continuation lines line up under its first."""
    text = pprint.pformat(value, width=max(40, WIDTH - column), sort_dicts=False)
    return text.replace("\n", "\n" + " " * column)


def _headers(headers: dict[str, str]) -> list[str]:
    """The headers argument, one header a line."""
    if not headers:
        return ["        headers={},"]
    return ["        headers={", *("            %r: %r," % pair for pair in headers.items()), "        },"]


def pytest_source(record: dict[str, Any]) -> str:
    """The test file's text for `record` (an export: secret headers REDACTED)."""
    request, response = record["request"], record["response"]
    headers = {name: value for name, value in request["headers"] if name.lower() not in NOT_SENT}
    secret = sorted(name for name, value in headers.items() if value == REDACTED)
    headers = {name: value for name, value in headers.items() if value != REDACTED}
    data: Any = body_bytes(request["body"])
    if "text" in request["body"]:
        data = request["body"]["text"]
    path = request["path"] + ("?" + request["query"] if request["query"] else "")
    lines = [
        '"""Saved from the kubeless-local dashboard: call %s of %s (%s%s), answered %s."""'
        % (
            record["id"],
            record["function"],
            record["source"],
            ", trigger " + record["trigger"] if record["trigger"] else "",
            response["status"] or "nothing",
        ),
        "",
        "",
        "def test_%s_%s(kubeless):" % (_identifier(record["function"]), record["id"]),
    ]
    if secret:
        lines.append(
            "    # not sent: %s (redacted in the recording; add them if the function needs them)" % ", ".join(secret)
        )
    lines += [
        "    response = kubeless.call(",
        "        %r," % record["function"],
        "        data=%s," % _literal(data or None, len("        data=")),
        "        method=%r," % request["method"],
        "        path=%r," % path,
        *_headers(headers),
        "    )",
        "    assert response.status_code == %d" % response["status"],
    ]
    lines += _body_assertion(response["body"])
    return "\n".join(lines) + "\n"


def _body_assertion(body: dict[str, Any]) -> list[str]:
    if body["truncated"]:
        return ["    # the recorded answer was cut at 256 KiB: its body is not compared"]
    if "text" not in body:
        return [
            "    assert response.content == %s" % _literal(body_bytes(body), len("    assert response.content == "))
        ]
    try:
        value = json.loads(body["text"])
    except ValueError:
        return ["    assert response.text == %s" % _literal(body["text"], len("    assert response.text == "))]
    return [
        "    # what differs from call to call (an id, a time) is yours to loosen",
        "    assert response.json() == %s" % _literal(value, len("    assert response.json() == ")),
    ]
