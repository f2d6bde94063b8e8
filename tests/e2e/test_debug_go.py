"""`dev --debug` of a Go function (Delve): a DAP client attaches with what `debug-config` prints, a breakpoint in
the user's handler.go stops a `call` past its timeout, a local is read, the call answers once continued; a save
binds the new lines on the same port. Real Go, real dlv, both backends (on docker: dlv built by the image's Go,
reached through the function's debug door, docker/debugger.py)."""

import time

import pytest
from dap import DapClient
from sockets import free_port
from test_debugging_e2e import Call, debug_config

FUNCTION = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: gofn
  annotations:
    local.kubeless.io/source: handler.go
spec:
  runtime: go1.26
  handler: handler.Hello
  timeout: "1"
"""

HANDLER = """\
package kubeless

import "github.com/kubeless/kubeless/pkg/functions"

func Hello(event functions.Event, context functions.Context) (string, error) {
	greeting := "hello " + event.Data
	return greeting, nil
}
"""
SAVED = HANDLER.replace("func Hello", "// two lines more:\n// every line below moved\nfunc Hello").replace(
    "hello ", "bye "
)


def line_of(source):
    return next(n for n, line in enumerate(source.splitlines(), 1) if "return greeting" in line)


def stop_a_call(config, folder, source, expected_local):
    dap = DapClient.connect(config["port"], timeout=60)
    with dap:
        dap.initialize()
        dap.request("attach", {"mode": "remote", "substitutePath": config["substitutePath"]})
        dap.wait_event("initialized")
        [bp] = dap.set_breakpoints(str(folder / "handler.go"), [line_of(source)])
        assert bp["verified"], bp
        dap.request("configurationDone")
        call = Call("gofn", folder)
        stopped = dap.wait_event("stopped", timeout=60)
        frame = dap.stack(stopped["threadId"])[0]
        assert (frame["source"]["path"], frame["line"]) == (str(folder / "handler.go"), line_of(source))
        assert dap.top_locals(stopped["threadId"])["greeting"] == expected_local
        time.sleep(2)  # past the function's 1 s timeout: time passing is what is tested here
        assert call.is_alive()
        dap.set_breakpoints(str(folder / "handler.go"), [])
        dap.request("continue", {"threadId": stopped["threadId"]})
        answer = call.answer()
        dap.request("disconnect", {"terminateDebuggee": False})
        return answer


@pytest.mark.parametrize("backend", ["process", "docker"])
def test_a_breakpoint_in_the_users_go_file_stops_a_call_and_binds_again_after_a_save(tmp_path, start_dev, backend):
    folder = tmp_path / "gofn"
    folder.mkdir()
    (folder / "function.yaml").write_text(FUNCTION)
    (folder / "handler.go").write_text(HANDLER)
    port = free_port()
    dev = start_dev("dev", "--backend", backend, "--debug", "gofn", "--debug-port", str(port), cwd=folder)
    # on docker the first debugged start builds dlv and the debug standard library in the image (once per image)
    dev.wait_for_output("Watching", timeout=600)
    config = debug_config("gofn", folder)
    print(config)
    assert config["port"] == port
    answer = stop_a_call(config, folder, HANDLER, '"hello "')
    assert (answer.returncode, answer.stdout.strip()) == (0, "hello"), answer.stderr

    (folder / "handler.go").write_text(SAVED)
    dev.wait_for_output("reloaded in", timeout=300)
    answer = stop_a_call(debug_config("gofn", folder), folder, SAVED, '"bye "')
    assert answer.stdout.strip() == "bye"
