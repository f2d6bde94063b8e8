"""A project folder under `dev`: its manifests reconciled into running functions, watched for edits."""
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from kubeless_local import spec as specs
from kubeless_local.errors import UserError
from kubeless_local.paths import STATE_DIRNAME
from kubeless_local.spec import SKIP_DIRS

DEBOUNCE = 0.03  # editors write a file in several steps; act once they are done


def fingerprint(fn):
    """What a running function depends on: its manifest and the bytes of its files."""
    parts = [repr(fn.document)]
    for path in fn.watched_paths():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not ignored(p, path)) if path.is_dir() else [path]
        for file in files:
            try:
                parts.append("%s:%s" % (file, file.read_bytes()))
            except OSError:
                parts.append("%s:missing" % file)
    return hash(tuple(parts))


def ignored(path: Path, root: Path):
    try:
        rel = path.relative_to(root).parts
    except ValueError:
        rel = path.parts
    return any(part in SKIP_DIRS or part.startswith(".") for part in rel) or path.suffix in (".pyc", ".swp", ".tmp") \
        or path.name.endswith("~")


class Project:
    """Runs every Function found under `root`; `functions` (names) restricts it, as `run` does."""

    def __init__(self, root: Path, supervisor, manifests=None):
        self.root = Path(root).resolve()
        self.supervisor = supervisor
        self.logs = supervisor.logs
        self.fixed = manifests  # `run`: a Function built from flags instead of files
        self.manifests = specs.Manifests()
        self.fingerprints = {}
        self.observer = None
        self.pending = set()
        self.timer = None
        self.lock = threading.Lock()

    def load(self):
        return self.fixed if self.fixed is not None else specs.load(self.root)

    def start(self):
        """Load and start everything; a bad manifest raises UserError, a bad function only logs."""
        self.manifests = self.load()
        if not self.manifests.functions:
            raise UserError("%s: no Kubeless Function found in *.yaml here; create one with `kubeless-local init`" % self.root)
        for trigger in self.manifests.http_triggers + self.manifests.cron_triggers:
            if self.manifests.function(trigger.function_name) is None:
                self.logs.emit(trigger.name, "%s: spec.function-name %r names no Function in this project"
                               % (trigger.origin, trigger.function_name), "system")
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(self._start_one, self.manifests.functions))

    def _start_one(self, fn):
        self.fingerprints[fn.name] = fingerprint(fn)
        try:
            self.supervisor.start(fn)
        except UserError as exc:
            if self.fixed is not None:
                raise  # `run`: flags cannot be edited while it runs, so a bad one ends it (exit 2)
            self.logs.emit(fn.name, str(exc), "system")
            self.supervisor.fail(fn, str(exc))

    # ------------------------------------------------------------ watching

    def watch(self):
        handler = _Changes(self)
        self.observer = Observer()
        folders = {self.root}
        for fn in self.manifests.functions:
            for path in fn.watched_paths():
                folders.add(path if path.is_dir() else path.parent)
        for folder in folders:
            if not any(folder != other and other in folder.parents for other in folders):
                self.observer.schedule(handler, str(folder), recursive=True)
        self.observer.start()

    def changed(self, path):
        path = Path(path)
        if STATE_DIRNAME in path.parts or ignored(path, self.root):
            return
        with self.lock:
            self.pending.add(path)
            if self.timer is not None:
                self.timer.cancel()
            self.timer = threading.Timer(DEBOUNCE, self.apply)
            self.timer.daemon = True
            self.timer.start()

    def apply(self):
        with self.lock:
            self.pending.clear()
        try:
            manifests = self.load()
        except UserError as exc:
            self.logs.emit("dev", "%s (keeping the running functions)" % exc, "system")
            return
        old = {fn.name: fn for fn in self.manifests.functions}
        new = {fn.name: fn for fn in manifests.functions}
        self.manifests = manifests
        for name in old.keys() - new.keys():
            self.logs.emit(name, "removed from the manifests; stopping", "system")
            self.supervisor.stop(name)
            self.fingerprints.pop(name, None)
        for name, fn in new.items():
            print_ = fingerprint(fn)
            if name not in old:
                threading.Thread(target=self._start_one, args=(fn,), daemon=True).start()
            elif self.fingerprints.get(name) != print_:
                self.fingerprints[name] = print_
                self.logs.emit(name, "change detected, reloading", "system")
                threading.Thread(target=self._reload_one, args=(fn,), daemon=True).start()

    def _reload_one(self, fn):
        try:
            self.supervisor.reload(fn)
        except UserError as exc:
            self.logs.emit(fn.name, str(exc), "system")
            self.supervisor.fail(fn, str(exc))

    def stop(self):
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)
        if self.timer is not None:
            self.timer.cancel()
        self.supervisor.stop_all()


class _Changes(FileSystemEventHandler):
    def __init__(self, project):
        self.project = project

    def on_any_event(self, event):
        if event.event_type in ("opened", "closed_no_write") or event.is_directory and event.event_type == "modified":
            return
        self.project.changed(event.src_path)
        dest = getattr(event, "dest_path", "")
        if dest:
            self.project.changed(dest)
