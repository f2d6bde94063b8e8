"""A generation of the code is removed only when no call can still use it (issue J.7): a call in
flight across two saves finishes on the code it started with (Python and Ruby answered 500, file
not found; PHP 200 with an empty body)."""

import threading

from sockets import answer_of

from kubeless_local.emulator.base import State

# Runtimes whose reload waits for the calls in flight (Go re-executes its server once they are done; the
# Java server, restarted, finishes them on SIGTERM before it exits):
# a save cannot finish while the call waits for the test, so the call is released as the saves start.
RELOAD_WAITS_FOR_CALLS = {"go", "java"}


def test_a_call_in_flight_across_two_saves_finishes_on_its_code(function):
    fn = function("inflight", folder=True)
    prepared = fn.supervisor.serving[fn.instance.name]
    release = "/release"  # in the function's state folder: visible to a process and to a container
    sock = fn.open_call(body=((prepared.view.function or str(prepared.root)) + release).encode())
    states = []

    def save_twice():
        for version in ("v1", "v2"):
            states.append(fn.replace_file(fn.spec.source / "data.txt", version + "\n"))

    saves = threading.Thread(target=save_twice)
    saves.start()
    if fn.language not in RELOAD_WAITS_FOR_CALLS:
        saves.join()
    (prepared.root / release.lstrip("/")).touch()
    status, body = answer_of(sock)
    saves.join()
    assert states == [State.READY, State.READY], fn.logs()
    assert (status, body) in ((200, "v0"), (200, "v1"), (200, "v2")), fn.logs()
    assert fn.post("/", data="/").text == "v2"  # `/` exists: new calls answer at once, with the new code
