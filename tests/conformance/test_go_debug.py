"""Go functions under Delve (KUBELESS_LOCAL_DEBUG_PORT, as the process backend starts a debugged function):
a DAP client (an editor's remote attach) stops a call at a line of the user's handler and reads its locals,
the breakpoints bind again after a save on the same port, a paused call does not time out; without the
variable no Delve runs. The server run by hand as the engine lays it out (test_go.Layout), real Go, real dlv."""

import shutil
import signal
import threading
from pathlib import Path

import pytest
import requests
from dap import DapClient
from runtime_server import RuntimeServer
from sockets import free_port, taken_port
from test_go import Layout
from waiting import wait_for

from kubeless_local.emulator import delve
from kubeless_local.emulator.prepare import setup_runtime_lib
from kubeless_local.runtimes import Catalog

pytestmark = pytest.mark.language("go")

V1 = """package kubeless

import "github.com/kubeless/kubeless/pkg/functions"

func Handler(event functions.Event, context functions.Context) (string, error) {
	greeting := "hello " + event.Data
	return greeting, nil
}
"""
# A save that moves the line: the breakpoint must bind at its new number.
V2 = V1.replace("func Handler", "// Handler says goodbye.\n// (two lines more)\nfunc Handler").replace("hello ", "bye ")

EXITS = """package kubeless

import (
	"os"

	"github.com/kubeless/kubeless/pkg/functions"
)

func Handler(event functions.Event, context functions.Context) (string, error) {
	os.Exit(3)
	return "", nil
}
"""

WAITS = """package kubeless

import (
	"os"
	"time"

	"github.com/kubeless/kubeless/pkg/functions"
)

// Handler answers once the file named by the body exists.
func Handler(event functions.Event, context functions.Context) (string, error) {
	for {
		if _, err := os.Stat(event.Data); err == nil {
			return "released", nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}
"""

# The first debug build compiles the standard library without optimisations (~20 s on an idle machine).
FIRST_BUILD = 240


@pytest.fixture(scope="module")
def go_lib():
    """The engine's runtime_lib for the Go on this machine (module + build cache, set up once)."""
    return setup_runtime_lib(Catalog().versions("go")[0], on_line=lambda line: None)


@pytest.fixture(scope="module")
def dlv():
    return delve.dlv(shutil.which("go") or "go")


def line_of(source, text):
    return next(n for n, line in enumerate(source.splitlines(), 1) if text in line)


def start(layout, env, timeout="180"):
    """The server as the engine starts it (`{build}/server` through the link), with `env` added."""
    return RuntimeServer(
        [str(layout.build / "server")],
        layout.install,
        "handler.go",
        (layout.install / "handler.go").read_text(),
        "go1.26",
        timeout,
        env={"FUNC_HANDLER": "Handler", **env},
    )


def listening_ports(pid):
    """The TCP ports process `pid` listens on (from /proc: its socket fds that are in LISTEN state)."""
    inodes = set()
    for fd in Path("/proc/%d/fd" % pid).iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def stop_a_call_at(server, port, path, line, data, greeting, answer, paused_past_timeout=False):
    """What an editor does: attach, a breakpoint on `line` of `path`, a call stops there with its
    local `greeting`; the breakpoint removed, continue, and the call answers `answer`."""
    with DapClient.connect(port) as dap:
        dap.initialize()
        dap.request("attach", {"mode": "remote"})
        dap.wait_event("initialized")
        [breakpoint] = dap.set_breakpoints(str(path), [line])
        assert breakpoint["verified"] and breakpoint["line"] == line, breakpoint
        dap.request("configurationDone")
        call: dict = {}
        caller = threading.Thread(target=lambda: call.update(r=requests.post(server.url, data=data, timeout=120)))
        caller.start()
        stopped = dap.wait_event("stopped", timeout=60)
        frame = dap.stack(stopped["threadId"])[0]
        assert (frame["source"]["path"], frame["line"]) == (str(path), line)
        assert dap.top_locals(stopped["threadId"])["greeting"] == greeting
        if paused_past_timeout:
            caller.join(2.5)  # lets FUNC_TIMEOUT (1 s) pass: a paused call is not a runaway
            assert caller.is_alive(), call["r"].text
        dap.set_breakpoints(str(path), [])  # a breakpoint left set would stop the next call too
        dap.request("continue", {"threadId": stopped["threadId"]})
        caller.join(60)
        assert (call["r"].status_code, call["r"].text) == (200, answer)
        dap.request("disconnect", {"terminateDebuggee": False})


def test_a_breakpoint_stops_a_call_in_the_users_handler_and_binds_again_after_a_save(go_lib, dlv, tmp_path):
    layout = Layout(tmp_path, go_lib)
    layout.activate(*layout.generation(1, {"handler.go": V1}))
    port = free_port()
    server = start(layout, {"KUBELESS_LOCAL_DEBUG_PORT": str(port), "KUBELESS_LOCAL_DLV": str(dlv)}, timeout="1")
    # The file as the debug binary names it, whatever the generation: through the install link, as the
    # server loads it (debug-config maps that folder to the user's).
    handler = layout.install / "handler.go"
    try:
        assert server.control(0, timeout=FIRST_BUILD) == {"event": "ready", "generation": 0}
        stop_a_call_at(server, port, handler, line_of(V1, "return"), "world", '"hello world"', "hello world", True)
        assert requests.post(server.url, data="again", timeout=30).text == "hello again"  # runs through

        layout.activate(*layout.generation(2, {"handler.go": V2}))
        server.proc.send_signal(signal.SIGHUP)
        assert server.control(1, timeout=FIRST_BUILD) == {"event": "ready", "generation": 1}
        assert line_of(V2, "return") != line_of(V1, "return")
        stop_a_call_at(server, port, handler, line_of(V2, "return"), "you", '"bye you"', "bye you")
        debugging = server.descendants()  # Delve and the server it debugs
        assert len(debugging) >= 2
    finally:
        server.stop()
    assert server.proc.returncode == 0
    assert wait_for(lambda: not any(Path("/proc/%d" % pid).exists() for pid in debugging))


def test_a_save_lets_the_calls_in_flight_finish_before_delve_restarts(go_lib, dlv, tmp_path):
    layout = Layout(tmp_path, go_lib)
    layout.activate(*layout.generation(1, {"handler.go": WAITS}))
    server = start(layout, {"KUBELESS_LOCAL_DEBUG_PORT": str(free_port()), "KUBELESS_LOCAL_DLV": str(dlv)})
    release = tmp_path / "release"
    try:
        assert server.control(0, timeout=FIRST_BUILD) == {"event": "ready", "generation": 0}
        call: dict = {}
        caller = threading.Thread(
            target=lambda: call.update(r=requests.post(server.url, data=str(release), timeout=120))
        )
        caller.start()
        layout.activate(*layout.generation(2, {"handler.go": V1}))
        server.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "stopping the server under Delve" in server.log(), FIRST_BUILD), server.log()
        release.touch()  # the call ends while its server is being stopped
        caller.join(60)
        assert (call["r"].status_code, call["r"].text) == (200, "released")
        assert server.control(1, timeout=FIRST_BUILD) == {"event": "ready", "generation": 1}
        assert requests.post(server.url, data="world", timeout=30).text == "hello world"
    finally:
        server.stop()


def test_without_the_debug_port_no_delve_runs_and_only_the_function_listens(go_lib, tmp_path):
    layout = Layout(tmp_path, go_lib)
    layout.activate(*layout.generation(1, {"handler.go": V1}))
    server = start(layout, {})
    try:
        assert server.control(0) == {"event": "ready", "generation": 0}
        assert requests.post(server.url, data="world", timeout=30).text == "hello world"
        assert server.descendants() == []
        assert listening_ports(server.proc.pid) == {server.port}
        assert not (tmp_path / "build" / "server.debug").exists()
    finally:
        server.stop()


def test_a_server_that_exits_under_delve_is_a_crash_the_engine_sees(go_lib, dlv, tmp_path):
    layout = Layout(tmp_path, go_lib)
    layout.activate(*layout.generation(1, {"handler.go": EXITS}))
    server = start(layout, {"KUBELESS_LOCAL_DEBUG_PORT": str(free_port()), "KUBELESS_LOCAL_DLV": str(dlv)})
    try:
        assert server.control(0, timeout=FIRST_BUILD) == {"event": "ready", "generation": 0}
        debugging = server.descendants()
        with pytest.raises(requests.ConnectionError):
            requests.post(server.url, data="exit", timeout=30)
        assert server.proc.wait(30) == 1  # Delve would have stayed for its clients: the launcher exits
        assert "the server of Handler exited under Delve" in server.log()
        assert wait_for(lambda: not any(Path("/proc/%d" % pid).exists() for pid in debugging))
    finally:
        server.stop()


def test_no_delve_or_a_taken_debug_port_is_one_clear_line_and_an_exit(go_lib, dlv, tmp_path):
    layout = Layout(tmp_path, go_lib)
    layout.activate(*layout.generation(1, {"handler.go": V1}))
    missing = tmp_path / "no-dlv"
    server = start(layout, {"KUBELESS_LOCAL_DEBUG_PORT": str(free_port()), "KUBELESS_LOCAL_DLV": str(missing)})
    try:
        assert server.proc.wait(60) == 1
        assert wait_for(lambda: 'cannot debug Handler: no Delve (dlv) at "%s"' % missing in server.log()), server.log()
    finally:
        server.stop()
    with taken_port() as port:
        server = start(layout, {"KUBELESS_LOCAL_DEBUG_PORT": str(port), "KUBELESS_LOCAL_DLV": str(dlv)})
        try:
            assert server.proc.wait(FIRST_BUILD) != 0
            assert wait_for(lambda: "address already in use" in server.log()), server.log()
            assert "@kubeless-local" not in server.log()  # never ready
        finally:
            server.stop()
