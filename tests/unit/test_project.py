"""Project: manifests → functions, fingerprints, the watcher; with a supervisor that only records calls."""

import threading
from pathlib import Path

import pytest
from waiting import wait_until

from kubeless_local import spec as specs
from kubeless_local.emulator import background
from kubeless_local.emulator import project as projects
from kubeless_local.emulator.logs import LogHub
from kubeless_local.emulator.project import Project

MANIFEST = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: {name}
  annotations: {{local.kubeless.io/source: {source}}}
spec: {{runtime: nodejs20, handler: handler.hello}}
"""


class RecordingSupervisor:
    """What Project asks of the supervisor, recorded (no backend, no processes)."""

    def __init__(self):
        self.logs = LogHub()
        self.calls = []
        self.changed = threading.Condition()

    def _record(self, *call):
        with self.changed:
            self.calls.append(call)
            self.changed.notify_all()

    def start(self, fn):
        self._record("start", fn.name)

    def reload(self, fn):
        self._record("reload", fn.name)

    def stop(self, name):
        self._record("stop", name)

    def fail(self, fn, message):
        self._record("fail", fn.name)

    def config_error(self, name, message):
        self._record("config_error", name, message)

    def stop_all(self):
        pass

    def wait_for_call(self, call, timeout=10):
        with self.changed:
            assert self.changed.wait_for(lambda: call in self.calls, timeout), self.calls

    def system_lines(self, name="dev"):
        return [line.text for line in self.logs.tail(name)]


def make_project(tmp_path, name="fn", **kwargs):
    src = tmp_path / name
    src.mkdir(parents=True, exist_ok=True)
    (src / "handler.js").write_text("module.exports = {hello: () => 'v1'};\n")
    (src / "package.json").write_text("{}\n")
    modules = src / "node_modules" / "left-pad"
    modules.mkdir(parents=True, exist_ok=True)
    (modules / "index.js").write_text("module.exports = 1;\n")
    (tmp_path / ("%s.yaml" % name)).write_text(MANIFEST.format(name=name, source=name))
    supervisor = RecordingSupervisor()
    return Project(tmp_path, supervisor, **kwargs), supervisor


def test_fingerprint_skips_ignored_folders_and_reads_only_changed_files(tmp_path, monkeypatch):
    project, _ = make_project(tmp_path)
    project.start()
    fn = project.manifests.function("fn")
    read = []
    real_open = open
    monkeypatch.setattr(
        projects, "open", lambda path, *a: read.append(Path(path).name) or real_open(path, *a), raising=False
    )
    first = project.fingerprint(fn)
    assert read == []  # nothing changed since start: stat only
    (tmp_path / "fn" / "node_modules" / "left-pad" / "index.js").write_text("changed\n")
    assert project.fingerprint(fn) == first and read == []
    (tmp_path / "fn" / "handler.js").write_text("module.exports = {hello: () => 'v2'};\n")
    assert project.fingerprint(fn) != first and read == ["handler.js"]
    # Same bytes written again (an editor's save without changes): no reload.
    second = project.fingerprint(fn)
    (tmp_path / "fn" / "handler.js").write_text("module.exports = {hello: () => 'v2'};\n")
    assert project.fingerprint(fn) == second


def test_a_stop_while_the_watch_is_being_set_up_stops_cleanly(tmp_path, monkeypatch):
    """Ctrl-C while the watch walks the folders (`run` answers its first call before its watch is up): the stop in
    `serve`'s finally met an observer made but not started, and ended in a traceback (exit 1, not 130)."""
    project, _ = make_project(tmp_path)
    project.start()

    def interrupted(folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(project, "_watch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        project.watch()
    project.stop()  # raised RuntimeError: cannot join thread before it is started
    assert project.observer is not None and not project.observer.is_alive()


def test_user_ignore_patterns_do_not_reach_the_fingerprint(tmp_path):
    project, _ = make_project(tmp_path, ignore=["*.log"])
    project.start()
    fn = project.manifests.function("fn")
    first = project.fingerprint(fn)
    (tmp_path / "fn" / "debug.log").write_text("noise\n")
    assert project.fingerprint(fn) == first


def test_changed_ignores_deps_state_and_patterns(tmp_path):
    project, _ = make_project(tmp_path, ignore=["tmp/"])
    for path in ("fn/node_modules/x/y.js", ".kubeless-local/ports.json", ".git/index", "tmp/a.txt", "fn/x.pyc"):
        project.changed(tmp_path / path)
        assert project.timer is None, path
    project.changed(tmp_path / "fn" / "node_modules", is_dir=True)
    assert project.timer is None
    project.changed(tmp_path / "fn" / "handler.js")
    assert project.timer is not None
    project.timer.cancel()


def test_a_save_reparses_only_the_changed_manifest(tmp_path, monkeypatch):
    project, supervisor = make_project(tmp_path)
    make_project(tmp_path, "other")
    project.start()
    assert sorted(c for c in supervisor.calls) == [("start", "fn"), ("start", "other")]
    parsed = []
    real = specs.load_documents
    monkeypatch.setattr(specs, "load_documents", lambda path, text=None: parsed.append(path.name) or real(path, text))
    manifest = tmp_path / "other.yaml"
    manifest.write_text(manifest.read_text().replace("handler.hello", "handler.other"))
    project.apply()
    assert parsed == ["other.yaml"]
    supervisor.wait_for_call(("reload", "other"))
    assert ("reload", "fn") not in supervisor.calls


def test_a_broken_manifest_is_reported_once_and_notices_once(tmp_path):
    project, supervisor = make_project(tmp_path)
    (tmp_path / "chart").mkdir()
    (tmp_path / "chart" / "fn.yaml").write_text(MANIFEST.format(name="{{ .Values.name }}", source="x"))
    project.start()
    manifest = tmp_path / "fn.yaml"
    good = manifest.read_text()
    manifest.write_text(good + "  timeout: [unclosed\n")
    project.apply()
    project.apply()  # a second event for the same save
    lines = supervisor.system_lines("fn")
    assert sum("malformed YAML" in line and "still serving its last good manifest" in line for line in lines) == 1
    assert sum("a template" in line for line in supervisor.system_lines()) == 1
    assert ("stop", "fn") not in supervisor.calls  # it keeps serving
    manifest.write_text(good)
    project.apply()
    manifest.write_text(good + "  timeout: [unclosed\n")
    project.apply()
    assert sum("malformed YAML" in line for line in supervisor.system_lines("fn")) == 2  # a new breakage is said again
    assert sum("a template" in line for line in supervisor.system_lines()) == 1


def test_the_watcher_skips_ignored_folders_and_reloads_on_save(tmp_path):
    project, supervisor = make_project(tmp_path, ignore=["build/"])
    (tmp_path / "build" / "deep").mkdir(parents=True)
    project.start()
    project.watch()
    try:
        watched = {p.relative_to(tmp_path).as_posix() for p in project.watches}
        assert watched == {".", "fn"}
        (tmp_path / "fn" / "lib").mkdir()
        wait_until(lambda: tmp_path / "fn" / "lib" in project.watches, "fn/lib watched", timeout=10, interval=0.01)
        (tmp_path / "fn" / "lib" / "util.js").write_text("module.exports = 2;\n")
        supervisor.wait_for_call(("reload", "fn"))
        project.folder_created(tmp_path / "fn" / "node_modules")  # as `npm install` makes it
        project.folder_created(tmp_path / "build" / "deep")
        assert {p.relative_to(tmp_path).as_posix() for p in project.watches} == {".", "fn", "fn/lib"}
    finally:
        project.stop()


@pytest.mark.parametrize("source", ["/etc", "../elsewhere"])
def test_a_source_outside_the_project_is_never_watched(tmp_path, source):
    root = tmp_path / "p"
    project, _ = make_project(root)
    (tmp_path / "elsewhere").mkdir()
    (root / "fn.yaml").write_text(MANIFEST.format(name="fn", source=source))
    with pytest.raises(specs.UserError, match="outside the project folder"):
        project.start()


OLD_MANIFEST = "apiVersion: k8s.io/v1\nkind: Function\nmetadata: {name: function}\nspec: {handler: a.b, runtime: x}\n"


def test_one_bad_manifest_is_a_config_error_of_its_own_and_the_others_run(tmp_path):
    project, supervisor = make_project(tmp_path)
    (tmp_path / "python").mkdir()
    (tmp_path / "python" / "function.yaml").write_text(OLD_MANIFEST)
    project.start()
    assert ("start", "fn") in supervisor.calls
    [(_, key, message)] = [c for c in supervisor.calls if c[0] == "config_error"]
    assert key == "function" and str(tmp_path / "python" / "function.yaml") in message
    assert any("apiVersion 'k8s.io/v1'" in line for line in supervisor.system_lines("function"))
    (tmp_path / "python" / "function.yaml").unlink()  # gone: its row goes
    project.apply()
    assert ("stop", "function") in supervisor.calls and ("stop", "fn") not in supervisor.calls


def test_only_bad_manifests_is_exit_2_with_the_first_error(tmp_path):
    (tmp_path / "function.yaml").write_text(OLD_MANIFEST)
    with pytest.raises(specs.UserError, match="k8s.io/v1"):
        Project(tmp_path, RecordingSupervisor()).start()


def test_a_function_whose_manifest_breaks_keeps_serving_until_fixed(tmp_path):
    project, supervisor = make_project(tmp_path)
    project.start()
    manifest = tmp_path / "fn.yaml"
    good = manifest.read_text()
    manifest.write_text(good.replace("handler.hello", "nodot"))
    project.apply()
    assert ("stop", "fn") not in supervisor.calls
    assert project.manifests.function("fn").handler == "handler.hello"  # events still reach the last good one
    [(_, key, message)] = [c for c in supervisor.calls if c[0] == "config_error"]
    assert key == "fn" and "spec.handler 'nodot'" in message and "still serving its last good manifest" in message
    manifest.write_text(good)  # fixed back to the very same manifest: still reloaded, to leave ConfigError
    project.apply()
    supervisor.wait_for_call(("reload", "fn"))


def test_the_session_function_deploy_starts_loads_only_what_the_verbs_wrote(tmp_path):
    project, supervisor = make_project(tmp_path, deployed_only=True, allow_empty=True)
    (tmp_path / "python").mkdir()
    (tmp_path / "python" / "function.yaml").write_text(OLD_MANIFEST)
    project.start()
    assert supervisor.calls == []
    background.record_deployed(tmp_path / "fn.yaml")
    project.apply()
    supervisor.wait_for_call(("start", "fn"))
    assert not [c for c in supervisor.calls if c[0] == "config_error"]
    assert background.deployed_files(tmp_path) == [tmp_path / "fn.yaml"]
    background.record_deployed(tmp_path / "fn.yaml", present=False)
    assert background.deployed_files(tmp_path) == []


def test_what_changes_between_the_first_load_and_the_watch_is_still_seen(tmp_path):
    """`function deploy` writes its manifest as soon as the session answers, which can be before the
    watcher runs: the watcher looks once more when it starts, so that manifest is not missed."""
    project, supervisor = make_project(tmp_path)
    project.start()
    (tmp_path / "late").mkdir()
    (tmp_path / "late" / "handler.js").write_text("module.exports = {hello: () => 'late'};\n")
    (tmp_path / "late.yaml").write_text(MANIFEST.format(name="late", source="late"))
    project.watch()
    try:
        supervisor.wait_for_call(("start", "late"))
        assert ("reload", "fn") not in supervisor.calls  # the look again restarts nothing unchanged
    finally:
        project.stop()
