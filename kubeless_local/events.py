"""The event envelopes Kubeless' event sources send (contract §6), as data.

Each source: the `event-namespace`, how `event-id` and `event-time` are made, how the content type
depends on the data, and the fixed headers its sender adds (the User-Agent of the Go HTTP client the
released kafka-trigger image uses; none from NATS; curl's from the CronJob; contract §6).
`envelope()` turns a source + data into (method, headers, body).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import time

TYPE_CHECKING = False  # typing is not imported (~3 ms of `call`): mypy reads this as typing.TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any

# The provision image (kubeless/unzip, bitnami/minideb + Debian's curl) runs the CronJob's `curl -Lv`.
CURL_HEADERS = {"User-Agent": "curl/7.64.0", "Accept": "*/*"}

# Who sent a request, for the function's front door (emulator/recorder.py reads and removes it): a sender
# adds it beside the envelope. `<source>[; trigger=<name>][; of=<id>]`.
SOURCE_HEADER = "X-Kubeless-Local-Source"

SOURCES: dict[str, dict[str, Any]] = {
    # kubeless function call: GET without data, POST with; JSON object → application/json
    "cli": {"namespace": "cli.kubeless.io", "id": "random15", "time": "rfc3339", "content_type": "by-data"},
    # kafka-trigger controller (v1.1.0 as released): always POST; JSON when its IsJSON accepts the body
    "kafka": {
        "namespace": "kafkatriggers.kubeless.io",
        "id": "random15",
        "time": "go",
        "content_type": "go-is-json",
        "always_post": True,
        "topic": True,
        "headers": {"User-Agent": "Go-http-client/1.1"},
    },
    "nats": {
        "namespace": "natstriggers.kubeless.io",
        "id": "random15",
        "time": "go",
        "content_type": "go-is-json",
        "always_post": True,
    },
    # cronjob-trigger: curl from a CronJob; id = pod UID; JSON content type even on GET
    "cron": {
        "namespace": "cronjobtrigger.kubeless.io",
        "id": "uid",
        "time": "rfc3339-seconds",
        "content_type": "json",
        "headers": CURL_HEADERS,
    },
}


def event_id(kind):
    if kind == "uid":
        import uuid  # with `platform`, ~2 ms: not for the CLI's `call`, whose ids are base64

        return str(uuid.uuid4())
    return base64.urlsafe_b64encode(os.urandom(11)).decode().rstrip("=")  # 15 chars


def go_time_string(moment, nanoseconds):
    """Go's Time.String() of a UTC time: the fraction's trailing zeros trimmed, no fraction when it is 0."""
    fraction = ("%09d" % nanoseconds).rstrip("0")
    return moment.strftime("%Y-%m-%d %H:%M:%S") + ("." + fraction if fraction else "") + " +0000 UTC"


def event_time(kind, now=None):
    if now is None and kind == "go":
        stamp = time.time_ns()  # Go's clock has nanoseconds: so do the digits it prints
        moment = datetime.datetime.fromtimestamp(stamp // 10**9, datetime.timezone.utc)
        return go_time_string(moment, stamp % 10**9)
    now = (now or datetime.datetime.now(datetime.timezone.utc)).astimezone(datetime.timezone.utc)
    if kind == "rfc3339":
        return now.strftime("%Y-%m-%dT%H:%M:%SZ")
    if kind == "rfc3339-seconds":  # date --rfc-3339=seconds --utc
        return now.strftime("%Y-%m-%d %H:%M:%S+00:00")
    return go_time_string(now, now.microsecond * 1000)


make_event_id, make_event_time = event_id, event_time  # `envelope`'s parameters shadow the names


def is_json_object(data):
    try:
        return isinstance(json.loads(data), dict)
    except (TypeError, ValueError):
        return False


def _no_constant(name):
    raise ValueError("%s is not JSON" % name)


def go_is_json(data):
    """kafka-trigger's IsJSON: Go's json.Unmarshal into a map[string]interface{} succeeds, i.e. the body is
    a JSON object or `null` (no NaN/Infinity, no byte order mark; invalid UTF-8 is replaced, as Go does)."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if not isinstance(text, str) or text.lstrip(" \t\r\n")[:1] not in ("{", "n"):
        return False  # only an object or null can be: no need to parse the rest
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (TypeError, ValueError):
        return False
    return value is None or isinstance(value, dict)


def envelope(source, data=None, *, topic=None, now=None, event_id=None, event_time=None):
    """(method, headers, body) of one event from `source`; data is text or bytes (or None: no data).
    A stored event passes the `event_id` and `event_time` it got when emitted, so every redelivery
    carries the same ones (a function can de-duplicate)."""
    s = SOURCES[source]
    headers = {
        "event-id": event_id or make_event_id(s["id"]),
        "event-time": event_time or make_event_time(s["time"], now),
        "event-namespace": s["namespace"],
    }
    if s.get("topic") and topic is not None:
        headers["event-topic"] = topic
    headers.update(s.get("headers", {}))
    has_data = bool(data)  # `kubeless function call --data ''` sends a GET, as without --data
    method = "POST" if has_data or s.get("always_post") else "GET"
    if s["content_type"] == "json":
        headers["Content-Type"] = headers["event-type"] = "application/json"
    elif method == "POST":
        is_json = go_is_json if s["content_type"] == "go-is-json" else is_json_object
        ctype = "application/json" if has_data and is_json(data) else "application/x-www-form-urlencoded"
        headers["Content-Type"] = headers["event-type"] = ctype
    body = data.encode() if isinstance(data, str) else (data or b"")
    return method, headers, body
