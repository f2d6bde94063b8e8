"""The session's taps (emulator/taps.py): faults answer in a function's place, observers see it all."""

import pytest

from kubeless_local.emulator.taps import INJECTED_BODY, Taps


def exchange(taps, function="hello", answer=(200, "ok")):
    sent = []

    def send():
        sent.append(True)
        return answer

    return taps.exchange(function, "kafka", "POST", "http://127.0.0.1:1", {"event-id": "e1"}, b"x", send), sent


def test_without_faults_the_request_is_sent_and_answered():
    assert exchange(Taps()) == ((200, "ok"), [True])


def test_a_fault_answers_its_functions_next_requests_only():
    taps = Taps()
    taps.fail("hello", 500, times=2)
    assert exchange(taps) == ((500, INJECTED_BODY), [])
    assert exchange(taps, function="other") == ((200, "ok"), [True])
    assert exchange(taps) == ((500, INJECTED_BODY), [])
    assert exchange(taps) == ((200, "ok"), [True])


def test_clear_drops_the_faults():
    taps = Taps()
    taps.fail("hello", 500, times=3)
    taps.clear()
    assert exchange(taps) == ((200, "ok"), [True])


def test_observers_see_sent_and_injected_exchanges():
    taps, seen = Taps(), []
    taps.observers.append(seen.append)
    taps.fail("hello", 502)
    exchange(taps)
    exchange(taps)
    assert [(e.status, e.injected, e.headers, e.body) for e in seen] == [
        (502, True, {"event-id": "e1"}, b"x"),
        (200, False, {"event-id": "e1"}, b"x"),
    ]


def test_a_request_nothing_took_uses_up_no_fault_and_is_not_observed():
    taps, seen = Taps(), []
    taps.observers.append(seen.append)

    def refused():
        raise ConnectionRefusedError

    with pytest.raises(ConnectionRefusedError):
        taps.exchange("hello", "cron", "GET", "http://127.0.0.1:1", {}, b"", refused)
    assert seen == []


def test_watching_tells_the_observer_during_the_block_only():
    taps, seen = Taps(), []
    with taps.watching(seen.append):
        exchange(taps)
    exchange(taps)
    assert len(seen) == 1 and taps.observers == []
