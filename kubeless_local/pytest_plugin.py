"""pytest fixtures that run a project's functions in-process and assert on what they receive.

Registered as a pytest11 entry point (pyproject.toml), so installing kubeless-local makes them available.
Importing this module loads nothing but pytest and this file: the engine is imported when a test first asks
for a `kubeless…` fixture, so a project whose tests use none pays nothing.

- `kubeless`: the project's functions, started once per (project, backend, env) for the whole run and
  shared by the tests that use it (kubeless_local/testing.py's Emulator); `kubeless_isolated`: the same,
  reset before the test (topics, dead letters, faults, what was observed).
- `kubeless_fn(source, runtime=…, handler=…)`: an ad-hoc function from a string, in a project of its own.
- `kubeless_snapshot.match(name, response)`: golden answers, redacted; `--kubeless-snapshot-update` rewrites.
- `@pytest.mark.kubeless(project=…, backend=…, env={…})`; `--kubeless-backend NAME`; ini `kubeless_project`
  (default: the rootdir) and `kubeless_backends = "process,docker"` (every kubeless test runs on each; a
  docker variant is skipped with the reason where no Docker engine answers).
- A failing test's report gains the functions' log lines during the test and its last request/response.
"""

from __future__ import annotations

import time
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
    """The running emulators of this pytest run, one per (project, backend, env); all stopped at its end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.running: dict[tuple, Any] = {}
        self.failed: dict[tuple, BaseException] = {}

    def get(self, project: Path, backend: str, env: dict[str, str], state_dir: Path) -> Any:
        from kubeless_local import testing
        from kubeless_local.errors import UserError

        key = (str(project), backend, tuple(sorted(env.items())))
        if key not in self.running:
            why = testing.backend_available(backend)
            if why:
                pytest.skip("backend %s: %s" % (backend, why))
            emulator = testing.Emulator(project, state_dir, backend, env)
            try:
                emulator.start()
            except UserError as exc:  # a function that does not start, a manifest that does not load
                emulator.stop()
                self.failed[key] = exc
            else:
                self.running[key] = emulator
        if key in self.failed:
            pytest.fail(str(self.failed[key]), pytrace=False)
        return self.running[key]

    def stop(self, emulator: Any) -> None:
        for key, running in list(self.running.items()):
            if running is emulator:
                del self.running[key]
        emulator.stop()

    def stop_all(self) -> None:
        while self.running:
            _, emulator = self.running.popitem()
            emulator.stop()


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
    state_dir = tmp_path_factory.mktemp("kubeless-%s" % kubeless_backend)
    return _use(request, pool.get(_project(request), kubeless_backend, env, state_dir))


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
