"""Waiting on a condition (never a fixed sleep as synchronisation): bounded polls shared by the tests."""

import time


def pauses(interval):
    """The pauses between looks: 5 ms, doubling up to `interval` (most conditions hold within a few ms, and
    a long wait does not look more often than `interval`); endless."""
    pause = min(interval, 0.005)
    while True:
        yield pause
        pause = min(interval, pause * 2)


def wait_for(predicate, seconds=10.0, interval=0.02):
    """True once predicate() holds, polled until `seconds` have passed; then its last value."""
    deadline = time.monotonic() + seconds
    for pause in pauses(interval):
        if predicate() or time.monotonic() >= deadline:
            break
        time.sleep(pause)
    return predicate()


def wait_until(predicate, what="condition", timeout=60, interval=0.05):
    """Like wait_for, but fails the test naming `what` when the condition is not met in time; `what` may
    be a function, called then (e.g. for the logs as they are at that moment)."""
    deadline = time.monotonic() + timeout
    for pause in pauses(interval):
        if predicate():
            return
        assert time.monotonic() < deadline, "%s not met within %ss" % (what() if callable(what) else what, timeout)
        time.sleep(pause)
