import datetime
import re

import pytest

from kubeless_local.events import envelope, go_time_string

NOW = datetime.datetime(2021, 1, 29, 11, 18, 3, 123456, tzinfo=datetime.timezone.utc)


def test_cli_call_with_a_json_object_posts_json():  # vector 17
    method, headers, body = envelope("cli", '{"k":"v"}', now=NOW)
    assert method == "POST" and body == b'{"k":"v"}'
    assert headers["Content-Type"] == headers["event-type"] == "application/json"
    assert headers["event-namespace"] == "cli.kubeless.io"
    assert re.fullmatch(r"[A-Za-z0-9_-]{15}", headers["event-id"])
    assert headers["event-time"] == "2021-01-29T11:18:03Z"


def test_cli_call_without_data_is_a_plain_get():
    method, headers, body = envelope("cli", None, now=NOW)
    assert method == "GET" and body == b""
    assert "Content-Type" not in headers and "event-type" not in headers


def test_cli_call_with_non_object_json_is_form_encoded():
    method, headers, _ = envelope("cli", "[1]")
    assert method == "POST" and headers["Content-Type"] == "application/x-www-form-urlencoded"


def test_kafka_message():  # vector 18
    method, headers, body = envelope("kafka", "hi", topic="t", now=NOW)
    assert method == "POST" and body == b"hi"
    assert headers["event-namespace"] == "kafkatriggers.kubeless.io"
    assert headers["event-topic"] == "t"
    assert headers["event-type"] == "application/x-www-form-urlencoded"
    assert headers["event-time"] == "2021-01-29 11:18:03.123456 +0000 UTC"
    assert headers["User-Agent"] == "Go-http-client/1.1"  # what the released kafka-trigger v1.1.0 sends


def test_cron_with_and_without_payload():  # vector 19
    method, headers, body = envelope("cron", '{"x":1}', now=NOW)
    assert method == "POST" and body == b'{"x":1}'
    assert headers["event-namespace"] == "cronjobtrigger.kubeless.io"
    assert headers["event-time"] == "2021-01-29 11:18:03+00:00"
    assert re.fullmatch(r"[0-9a-f-]{36}", headers["event-id"])
    method, headers, _ = envelope("cron", None, now=NOW)
    assert method == "GET" and headers["Content-Type"] == "application/json"


def test_a_stored_event_keeps_its_id_and_time_on_every_delivery():
    first = envelope("kafka", "hi", topic="t", event_id="abcdefghijklmno", event_time="2021-01-29 11:18:03.1 +0000 UTC")
    again = envelope("kafka", "hi", topic="t", event_id="abcdefghijklmno", event_time="2021-01-29 11:18:03.1 +0000 UTC")
    assert first == again
    assert first[1]["event-id"] == "abcdefghijklmno" and first[1]["event-time"] == "2021-01-29 11:18:03.1 +0000 UTC"


def test_nats_message():
    method, headers, body = envelope("nats", b'{"a": 1}', topic="t", now=NOW)
    assert method == "POST" and body == b'{"a": 1}'
    assert headers["event-namespace"] == "natstriggers.kubeless.io" and "event-topic" not in headers
    assert headers["Content-Type"] == headers["event-type"] == "application/json"
    assert headers["event-time"] == "2021-01-29 11:18:03.123456 +0000 UTC"
    assert "User-Agent" not in headers


@pytest.mark.parametrize(
    "body, json_type",
    [
        (b'{"a": 1}', True),
        (b" null ", True),  # Go's json.Unmarshal of null into a map is no error
        (b"[1, 2]", False),  # kafka-trigger's IsJSON unmarshals into map[string]interface{}: objects only
        (b'"text"', False),
        (b"42", False),
        (b'{"a": NaN}', False),  # Go has no NaN in JSON
        ("\ufeff{}".encode(), False),  # nor a byte order mark
        (b"{", False),
        (b"", False),
    ],
)
def test_kafka_and_nats_content_type_is_json_when_gos_is_json_accepts_the_body(body, json_type):
    for source in ("kafka", "nats"):
        _, headers, _ = envelope(source, body, topic="t", now=NOW)
        expected = "application/json" if json_type else "application/x-www-form-urlencoded"
        assert headers["Content-Type"] == headers["event-type"] == expected, (source, body)


@pytest.mark.parametrize(
    "nanoseconds, printed",
    [
        (123456789, "2021-01-29 11:18:03.123456789 +0000 UTC"),
        (120000000, "2021-01-29 11:18:03.12 +0000 UTC"),
        (0, "2021-01-29 11:18:03 +0000 UTC"),
    ],
)
def test_event_time_digits_as_gos_time_string_prints_them(nanoseconds, printed):
    assert go_time_string(NOW.replace(microsecond=0), nanoseconds) == printed


def test_a_kafka_event_time_made_now_has_nanosecond_digits_trimmed():
    stamp = envelope("kafka", "x", topic="t")[1]["event-time"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{0,8}[1-9])? \+0000 UTC", stamp), stamp
