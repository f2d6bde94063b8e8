"""The event envelopes Kubeless' event sources send (contract §6), as data.

Each source: the `event-namespace`, how `event-id` and `event-time` are made, and whether the
content type depends on the data. `envelope()` turns a source + data into (method, headers, body).
"""

import base64
import datetime
import json
import os
import uuid

SOURCES = {
    # kubeless function call: GET without data, POST with; JSON object → application/json
    "cli": {"namespace": "cli.kubeless.io", "id": "random15", "time": "rfc3339", "content_type": "by-data"},
    # kafka-trigger controller: always POST
    "kafka": {
        "namespace": "kafkatriggers.kubeless.io",
        "id": "random15",
        "time": "go",
        "content_type": "by-data",
        "always_post": True,
        "topic": True,
        "user_agent": "kubeless-kafka-trigger-controller/v1.1.0",
    },
    "nats": {
        "namespace": "natstriggers.kubeless.io",
        "id": "random15",
        "time": "go",
        "content_type": "by-data",
        "always_post": True,
    },
    # cronjob-trigger: curl from a CronJob; id = pod UID; JSON content type even on GET
    "cron": {"namespace": "cronjobtrigger.kubeless.io", "id": "uid", "time": "rfc3339-seconds", "content_type": "json"},
}


def event_id(kind):
    if kind == "uid":
        return str(uuid.uuid4())
    return base64.urlsafe_b64encode(os.urandom(11)).decode().rstrip("=")  # 15 chars


def event_time(kind, now=None):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if kind == "rfc3339":
        return now.strftime("%Y-%m-%dT%H:%M:%SZ")
    if kind == "rfc3339-seconds":  # date --rfc-3339=seconds --utc
        return now.strftime("%Y-%m-%d %H:%M:%S+00:00")
    # Go's Time.String() in UTC: nanoseconds, trailing zeros kept
    return now.strftime("%Y-%m-%d %H:%M:%S.") + "%09d +0000 UTC" % (now.microsecond * 1000)


make_event_id, make_event_time = event_id, event_time  # `envelope`'s parameters shadow the names


def is_json_object(data):
    try:
        return isinstance(json.loads(data), dict)
    except (TypeError, ValueError):
        return False


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
    if s.get("user_agent"):
        headers["User-Agent"] = s["user_agent"]
    has_data = bool(data)  # `kubeless function call --data ''` sends a GET, as without --data
    method = "POST" if has_data or s.get("always_post") else "GET"
    if s["content_type"] == "json":
        headers["Content-Type"] = headers["event-type"] = "application/json"
    elif method == "POST":
        ctype = "application/json" if has_data and is_json_object(data) else "application/x-www-form-urlencoded"
        headers["Content-Type"] = headers["event-type"] = ctype
    body = data.encode() if isinstance(data, str) else (data or b"")
    return method, headers, body
