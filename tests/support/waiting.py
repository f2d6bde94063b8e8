"""Waiting on a condition (never a fixed sleep as synchronisation): bounded polls shared by the tests."""

import time


def wait_for(predicate, seconds=10.0, interval=0.02):
    """True once predicate() holds, polled until `seconds` have passed; then its last value."""
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(interval)
    return predicate()


def wait_until(predicate, what="condition", timeout=60, interval=0.05):
    """Like wait_for, but fails the test naming `what` when the condition is not met in time; `what` may
    be a function, called then (e.g. for the logs as they are at that moment)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "%s not met within %ss" % (what() if callable(what) else what, timeout)
        time.sleep(interval)
