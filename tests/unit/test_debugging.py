"""Which functions run under a debugger, on which ports, and what an editor is told (emulator/debugging.py)."""

from pathlib import Path

import pytest

from kubeless_local.emulator import debugging
from kubeless_local.errors import BadRequest, Conflict, NotFound
from kubeless_local.runtimes import Catalog
from kubeless_local.spec import FunctionSpec


def fn(name, runtime, image="", source=None):
    pod = {"spec": {"template": {"spec": {"containers": [{"image": image}]}}}} if image else {}
    return FunctionSpec(name=name, runtime=runtime, handler="handler.hello", origin="t", deployment=pod, source=source)


FUNCTIONS = [fn("a", "python3.11"), fn("b", "nodejs20"), fn("c", "python3.11"), fn("r", "ruby3.1")]
CATALOG = Catalog()


def plan(names, first_port=None, free=lambda port: True, functions=FUNCTIONS):
    return debugging.plan(names, functions, lambda s: CATALOG.debugger(s.runtime, s.image), first_port, free)


def test_ports_count_up_from_the_first_port_in_the_order_asked():
    targets = plan(["c", "b", "a"], first_port=7000)
    assert [(t.name, t.debugger, t.port) for t in targets.values()] == [
        ("c", "debugpy", 7000),
        ("b", "inspector", 7001),
        ("a", "debugpy", 7002),
    ]


def test_without_a_first_port_each_debugger_takes_its_own_default_then_the_next():
    targets = plan(["a", "b", "c"])
    assert {n: t.port for n, t in targets.items()} == {"a": 5678, "b": 9229, "c": 5679}


def test_a_debugged_server_gets_the_port_and_a_timeout_no_paused_call_reaches():
    env = debugging.Target("a", "debugpy", 5678).env()
    assert env == {
        "KUBELESS_LOCAL_DEBUG_PORT": "5678",
        "KUBELESS_LOCAL_DEBUG_HOST": "127.0.0.1",  # the loopback only, whatever this machine's env says
        "FUNC_TIMEOUT": debugging.UNREACHED_TIMEOUT,
    }
    seconds = float(debugging.UNREACHED_TIMEOUT)
    assert seconds > 7 * 24 * 3600  # a week paused at a breakpoint
    assert seconds * 1000 < 2**31 - 1  # Node.js fires a longer setTimeout at once


def test_reloads_keep_the_inspector_connected_and_restart_a_worker_debugger():
    assert debugging.Target("b", "inspector", 9229).reloads_in_place
    assert not debugging.Target("a", "debugpy", 5678).reloads_in_place


def test_an_unknown_function_is_refused_with_the_project_s_names():
    with pytest.raises(NotFound) as info:
        plan(["nope"])
    assert str(info.value) == "no Function 'nope' to debug; the project has: a, b, c, r"
    assert (info.value.what, info.value.name) == ("debugged function", "nope")


@pytest.mark.parametrize(
    "spec, words",
    [
        (
            fn("r", "ruby3.1"),
            "Function r (ruby3.1) cannot run under a debugger: debugging ruby is not supported yet "
            "(rdbg is a candidate)",
        ),
        (
            fn("p", "php8.2"),
            "Function p (php8.2) cannot run under a debugger: debugging php is not supported yet "
            "(Xdebug is a candidate)",
        ),
        (fn("j", "java11"), "debugging java is not supported yet"),
        (fn("i", "", image="my/server:1"), "Function i (custom image my/server:1) cannot run under a debugger"),
    ],
)
def test_a_runtime_without_a_debugger_is_refused_plainly(spec, words):
    with pytest.raises(BadRequest) as info:
        plan([spec.name], functions=[spec])
    assert words in str(info.value)
    assert "supported: python (debugpy), nodejs (V8 inspector), go (Delve)" in str(info.value)


def test_a_port_in_use_is_refused():
    with pytest.raises(Conflict) as info:
        plan(["a", "b"], first_port=7000, free=lambda port: port != 7001)
    assert str(info.value) == "debug port 7001 (for b) is in use on 127.0.0.1: stop what uses it"


def test_the_port_a_server_listens_on_in_its_container_is_refused_as_a_debug_port():
    # in the docker backend's relay and bridge modes the debugger shares the server's namespace: 8080 is taken
    # there whatever the host has free; refused on every backend, so that one command line works on each
    with pytest.raises(BadRequest) as info:
        plan(["a", "b"], first_port=8080)
    assert str(info.value) == (
        "debug port 8080 (for a) is where a function's server listens in its container (FUNC_PORT): "
        "give another first port with --debug-port"
    )
    assert [t.port for t in plan(["a", "b", "c"], first_port=8079).values()] == [8079, 8081, 8082]  # counted past


def test_the_vscode_entry_maps_the_install_folder_back_to_the_users_files():
    row = {
        "name": "a",
        "debug": {"debugger": "debugpy", "port": 5678, "local_root": "/home/u/a", "remote_root": "/p/.kl/a/kubeless"},
    }
    assert debugging.editor_config("vscode", row) == {
        "name": "kubeless-local: a",
        "type": "debugpy",
        "request": "attach",
        "connect": {"host": "127.0.0.1", "port": 5678},
        "pathMappings": [{"localRoot": "/home/u/a", "remoteRoot": "/p/.kl/a/kubeless"}],
        "justMyCode": True,
    }
    node = debugging.editor_config("vscode", {**row, "debug": {**row["debug"], "debugger": "inspector"}})
    assert (node["type"], node["port"], node["localRoot"], node["remoteRoot"]) == (
        "node",
        5678,
        "/home/u/a",
        "/p/.kl/a/kubeless",
    )


def test_the_local_root_is_the_folder_of_the_users_files(tmp_path):
    (tmp_path / "handler.py").write_text("")
    assert debugging.local_root(fn("a", "python3.11", source=tmp_path / "handler.py")) == str(tmp_path)
    assert debugging.local_root(fn("a", "python3.11", source=tmp_path)) == str(tmp_path)
    assert debugging.local_root(fn("a", "python3.11")) == ""
    assert Path(debugging.local_root(fn("a", "python3.11", source=tmp_path))).is_dir()
