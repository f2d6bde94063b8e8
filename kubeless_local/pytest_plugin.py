"""pytest fixtures that run a project's functions in-process and assert on what they receive.

Registered as a pytest11 entry point (pyproject.toml), so installing kubeless-local makes them available.
Importing this module loads nothing but pytest and this file: the engine is imported when a test first asks
for a `kubeless…` fixture, so a project whose tests use none pays nothing.

- `kubeless`: the project's functions, started once per (project, backend, env) for the whole run and
  shared by the tests that use it (kubeless_local/testing.py's Emulator); the fixture itself is per test,
  so a marker or the backend parameter can choose the session, and `kubeless_session` is the default one
  for fixtures of session scope; `kubeless_isolated`: `kubeless` reset before the test (topics, dead
  letters, faults, what was observed).
- `kubeless_fn(source, runtime=…, handler=…)`: an ad-hoc function from a string, in a project of its own.
- `kubeless_snapshot.match(name, response)`: golden answers, redacted; `--kubeless-snapshot-update` rewrites.
- `@pytest.mark.kubeless(project=…, backend=…, env={…})`; `--kubeless-backend NAME`; ini `kubeless_project`
  (default: the rootdir) and `kubeless_backends = "process,docker"` (every kubeless test runs on each; a
  docker variant is skipped with the reason where no Docker engine answers).
- A failing test's report gains the functions' log lines during the test and its last request/response.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

FIXTURES = ("kubeless", "kubeless_isolated", "kubeless_fn")
MARKER = "kubeless(project=None, backend=None, env=None): run this test's kubeless fixtures on that project/backend"
SNAPSHOTS = "__snapshots__"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kubeless", "kubeless-local: functions under test")
    group.addoption("--kubeless-backend", help="run the kubeless fixtures on this backend (process, docker)")
    group.addoption(
        "--kubeless-shared",
        action="store_true",
        help="with pytest-xdist: one session per project for every worker, started by the first that needs it"
        " (deliveries, no_deliveries, fail_next, replay_dead_letter and reset need it in-process: refused there)",
    )
    group.addoption(
        "--kubeless-snapshot-update",
        action="store_true",
        help="rewrite the kubeless_snapshot files instead of comparing with them",
    )
    parser.addini("kubeless_project", "the folder of the Function manifests the kubeless fixture runs (rootdir)")
    parser.addini("kubeless_backends", "comma-separated backends every kubeless test runs on (default: process)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)
    config.stash[POOL] = Pool(config)


def backends_of(config: pytest.Config) -> list[str]:
    """The backends kubeless tests run on: --kubeless-backend, else the ini's list, else process."""
    chosen = config.getoption("kubeless_backend") or config.getini("kubeless_backends") or "process"
    return [name.strip() for name in str(chosen).split(",") if name.strip()]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not set(FIXTURES) & set(metafunc.fixturenames):
        return
    marker = metafunc.definition.get_closest_marker("kubeless")
    fixed = marker.kwargs.get("backend") if marker is not None else None
    names = [fixed] if fixed else backends_of(metafunc.config)
    if len(names) > 1:
        metafunc.parametrize("kubeless_backend", names, ids=names, indirect=True)


@pytest.fixture
def kubeless_backend(request: pytest.FixtureRequest) -> str:
    """The backend this test's kubeless fixtures run on (parametrised over `kubeless_backends`)."""
    name = getattr(request, "param", None) or backends_of(request.config)[0]
    marker = request.node.get_closest_marker("kubeless")
    return (marker.kwargs.get("backend") if marker is not None else None) or name


class Pool:
    """The running emulators of this pytest run, one per (project, backend, env); all stopped at its end.

    With --kubeless-shared under pytest-xdist, the first worker that needs a session starts it and the
    others attach to it (testing.Attached), each under a file lock in the folder every worker's temporary
    folder lies in; the worker that started it stops it once no other worker uses it."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.running: dict[tuple, Any] = {}
        self.failed: dict[tuple, BaseException] = {}
        self.shared: dict[tuple, Path] = {}  # key → its shared folder's stem (--kubeless-shared)

    def get(self, project: Path, backend: str, env: dict[str, str], factory: pytest.TempPathFactory) -> Any:
        from kubeless_local import testing
        from kubeless_local.errors import UserError

        key = (str(project), backend, tuple(sorted(env.items())))
        if key not in self.running and key not in self.failed:
            why = testing.backend_available(backend)
            if why:
                pytest.skip("backend %s: %s" % (backend, why))
            try:
                if self.config.getoption("kubeless_shared") and hasattr(self.config, "workerinput"):
                    self.running[key] = self._shared(key, factory)
                else:
                    self.running[key] = self._start(key, factory.mktemp("kubeless-%s" % backend))
            except UserError as exc:  # a function that does not start, a manifest that does not load
                self.failed[key] = exc
        if key in self.failed:
            pytest.fail(str(self.failed[key]), pytrace=False)
        return self.running[key]

    @staticmethod
    def _start(key: tuple, state_dir: Path) -> Any:
        from kubeless_local import testing

        project, backend, env = key
        emulator = testing.Emulator(Path(project), state_dir, backend, dict(env))
        try:
            return emulator.start()
        except BaseException:
            emulator.stop()
            raise

    def _shared(self, key: tuple, factory: pytest.TempPathFactory) -> Any:
        """The session of `key` another worker started, or one started here (see the class docstring)."""
        import hashlib

        from kubeless_local import testing
        from kubeless_local.emulator import registry

        root = factory.getbasetemp().parent  # every worker's basetemp (popen-gwN) lies in this run's folder
        stem = root / ("kubeless-shared-%s" % hashlib.sha1(repr(key).encode()).hexdigest()[:12])
        with file_lock(stem.with_suffix(".lock")):
            info = _read_json(stem.with_suffix(".json"))
            if info and registry.answering(Path(info["state_dir"]) / "admin.json", info["pid"]):
                emulator = testing.Attached(Path(info["state_dir"]))
            else:
                emulator = self._start(key, stem.with_name(stem.name + "-state"))
                stem.with_suffix(".json").write_text(
                    json.dumps({"state_dir": str(emulator.state_dir), "pid": os.getpid()})
                )
            users = stem.with_suffix(".users")
            users.write_text(json.dumps([*(_read_json(users) or []), os.getpid()]))
        self.shared[key] = stem
        return emulator

    def _leave(self, key: tuple, emulator: Any) -> None:
        """A shared session: this worker is done with it; the one that started it waits for the others."""
        stem = self.shared.pop(key)
        users = stem.with_suffix(".users")
        with file_lock(stem.with_suffix(".lock")):
            users.write_text(json.dumps([pid for pid in _read_json(users) or [] if pid != os.getpid()]))
        if isinstance(emulator, _attached()):
            return
        deadline = time.monotonic() + SHARED_PATIENCE
        while True:
            with file_lock(stem.with_suffix(".lock")):
                others = [pid for pid in _read_json(users) or [] if _alive(pid)]
                if not others or time.monotonic() > deadline:
                    stem.with_suffix(".json").unlink(missing_ok=True)  # a late worker starts its own
                    break
            time.sleep(0.1)
        emulator.stop()

    def stop(self, emulator: Any) -> None:
        for key, running in list(self.running.items()):
            if running is emulator:
                del self.running[key]
        emulator.stop()

    def stop_all(self) -> None:
        while self.running:
            key, emulator = self.running.popitem()
            if key in self.shared:
                self._leave(key, emulator)
            else:
                emulator.stop()


SHARED_PATIENCE = 3600.0  # seconds the worker that started a shared session waits for the others to finish


def _attached() -> type:
    from kubeless_local.testing import Attached

    return Attached


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on `path`, held for the block (released by the kernel if the holder dies)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


POOL = pytest.StashKey[Pool]()
USED = pytest.StashKey[list]()  # (emulator, time.time() when the test took it) of one test


def pytest_unconfigure(config: pytest.Config) -> None:
    pool = config.stash.get(POOL, None)
    if pool is not None:
        pool.stop_all()


def _project(request: pytest.FixtureRequest) -> Path:
    marker = request.node.get_closest_marker("kubeless")
    given = marker.kwargs.get("project") if marker is not None else None
    if given is None:
        given = request.config.getini("kubeless_project") or None
    root = Path(request.config.rootpath)
    return (root / given).resolve() if given else root


def _use(request: pytest.FixtureRequest, emulator: Any) -> Any:
    request.node.stash.setdefault(USED, []).append((emulator, time.time()))
    return emulator


@pytest.fixture
def kubeless(request: pytest.FixtureRequest, kubeless_backend: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The project's functions, Ready (started once for the run; see the module docstring)."""
    marker = request.node.get_closest_marker("kubeless")
    env = dict(marker.kwargs.get("env") or {}) if marker is not None else {}
    pool = request.config.stash[POOL]
    return _use(request, pool.get(_project(request), kubeless_backend, env, tmp_path_factory))


@pytest.fixture(scope="session")
def kubeless_session(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The same running functions as `kubeless` on the default project and backend, for fixtures of a wider
    scope (a session-scoped fixture that seeds a topic once). No marker applies; no parametrisation."""
    pool = request.config.stash[POOL]
    return pool.get(_project(request), backends_of(request.config)[0], {}, tmp_path_factory)


@pytest.fixture
def kubeless_isolated(kubeless: Any) -> Any:
    """`kubeless`, reset before the test: no event, dead letter, fault or observation of earlier tests."""
    kubeless.reset()
    return kubeless


@pytest.fixture
def kubeless_fn(request: pytest.FixtureRequest, kubeless_backend: str, tmp_path: Path) -> Any:
    """kubeless_fn(source, runtime="python3.11", handler="handler.handler", deps=None, name=None, timeout=None)
    → a running function made from `source` (its code as a string), with `.call(...)` as kubeless.call;
    stopped after the test."""
    from kubeless_local import testing
    from kubeless_local.errors import UserError

    pool = request.config.stash[POOL]
    started: list[Any] = []

    def make(source: str, **options: Any) -> Any:
        folder = tmp_path / ("fn-%d" % len(started))
        project = testing.write_function(folder / "project", source, **options)
        why = testing.backend_available(kubeless_backend)
        if why:
            pytest.skip("backend %s: %s" % (kubeless_backend, why))
        emulator = testing.Emulator(project, folder / "state", kubeless_backend)
        started.append(emulator)
        try:
            emulator.start()
        except UserError as exc:
            pytest.fail(str(exc), pytrace=False)
        _use(request, emulator)
        return testing.OneFunction(emulator, project.name)

    yield make
    for emulator in started:
        pool.stop(emulator)


@pytest.fixture
def kubeless_snapshot(request: pytest.FixtureRequest) -> Any:
    """match(name, response): the response (status, content type, body; event ids, times and durations
    redacted) equals `__snapshots__/<test file>/<name>.json`; written when missing or with
    --kubeless-snapshot-update."""
    from kubeless_local import testing

    folder = Path(request.node.path).parent / SNAPSHOTS / Path(request.node.path).stem
    return testing.Snapshots(folder, update=request.config.getoption("kubeless_snapshot_update"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    used = item.stash.get(USED, None)
    if used and report.failed:
        from kubeless_local import testing

        for title, text in testing.report_sections(used):
            report.sections.append(("kubeless: " + title, text))
    return report
