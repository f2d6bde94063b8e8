"""The process backend's exit handling, with a real (tiny) process standing in for a runtime server."""

import sys
import types

from kubeless_local.emulator.base import EXIT_CANNOT_LISTEN, Instance, State
from kubeless_local.emulator.logs import LogHub
from kubeless_local.emulator.process import ProcessBackend

# What a runtime that loses the race for its port does (php did report it as a load failure first).
CANNOT_LISTEN = (
    'import sys; print(\'@kubeless-local {"event": "load-failed", "generation": 0, '
    '"error": "cannot listen: Address already in use"}\', flush=True); sys.exit(4)'
)


def test_a_server_that_exits_4_crashed_on_its_port_even_after_a_load_failure(tmp_path):
    backend = ProcessBackend(LogHub())
    exited = []
    backend.on_exit = exited.append
    prepared = types.SimpleNamespace(
        runtime=types.SimpleNamespace(steps=types.SimpleNamespace(command=[sys.executable, "-c", CANNOT_LISTEN])),
        expand=lambda argv: list(argv),
        env=lambda port: {},
        install_link=tmp_path,
        root=tmp_path / "state" / "functions" / "hello",
        map_paths=lambda text: text,
    )
    instance = Instance(name="hello", runtime="php8.2", port=1)
    backend.start(instance, prepared)
    assert instance.wait_for(lambda i: i.state == State.CRASHED, 10), instance.state
    assert instance.exit_code == EXIT_CANNOT_LISTEN and exited == [instance]
