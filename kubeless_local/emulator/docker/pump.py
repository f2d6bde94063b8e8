"""A runtime container's output to the log (control lines to the instance), and its exit."""

import codecs
import time

from kubeless_local.emulator.base import State, handle_output

EXIT_WAIT = 10  # seconds to wait for the exit code once the output stream ended
NOT_READY_SAY = 5  # seconds without an answer on /healthz before the log says why


def pump(backend, handle, stream):
    """Read the attach stream until it ends; then report a container that exited on its own as
    crashed (with the exit code and the last lines) to its owner (the function's instance, which tells the
    supervisor; or a reload's trial). Control lines go to the handle, which passes them to its owner."""
    from docker.errors import APIError, DockerException
    from urllib3.exceptions import HTTPError

    decoders = {
        "stdout": codecs.getincrementaldecoder("utf-8")("replace"),
        "stderr": codecs.getincrementaldecoder("utf-8")("replace"),
    }
    pending = {"stdout": "", "stderr": ""}
    prepared = handle.prepared
    try:
        for out, err in stream:
            for name, chunk in (("stdout", out), ("stderr", err)):
                if not chunk:
                    continue
                pending[name] += decoders[name].decode(chunk)
                *lines, pending[name] = pending[name].split("\n")
                for line in lines:
                    handle_output(handle, backend.logs, line.rstrip("\r"), name, prepared.map_paths)
    except (DockerException, OSError, HTTPError) as exc:
        if not handle.stopping:  # removing the container closes the stream: expected then
            backend.logs.emit(handle.name, "the container's output stream broke: %s" % exc, "system")
    for name, rest in pending.items():
        if rest.strip():
            handle_output(handle, backend.logs, rest, name, prepared.map_paths)
    code = None
    if not handle.stopping:
        try:
            code = handle.container.wait(timeout=EXIT_WAIT).get("StatusCode")
        except (APIError, DockerException, OSError) as exc:
            code = "unknown (%s)" % exc
    handle.exited.set()
    instance = handle.owner
    if instance.handle is handle and not handle.stopping and instance.state != State.STOPPED:
        out_of_memory = code == 137 and prepared.spec.memory_limit != "0"
        backend.server_exited(
            instance, code, "the container", " (out of memory: raise the memory limit)" if out_of_memory else ""
        )


def poll_health(backend, handle, interval=0.1, explain_after=NOT_READY_SAY):
    """Images without control lines: Ready once /healthz answers 200 (Kubeless' probe) on the container's own
    server (backend.probe: its relay's connector or its own published port), so a stale server on the
    function's port, or the container a reload replaces, cannot answer for it. Not ready after
    `explain_after` seconds: says why once (it keeps waiting). Looks every 10 ms at first (a reload waits on
    it), doubling up to `interval`."""
    started, said, pause = time.monotonic(), False, min(0.01, interval)
    while not handle.exited.is_set() and handle.owner.handle is handle:
        status, why = backend.probe(handle)
        if status == 200:
            handle.owner.on_control("ready", handle.generation)
            return
        if status is not None:
            why = "/healthz answered %d (Kubeless probes it: it must answer 200)" % status
        if not said and time.monotonic() - started > explain_after and not handle.exited.is_set():
            said = True
            backend.logs.emit(handle.name, "not ready after %d s: %s" % (explain_after, why), "system")
        handle.exited.wait(pause)
        pause = min(interval, pause * 2)
