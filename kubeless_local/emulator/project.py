"""A project folder under `dev`: its manifests reconciled into running functions, watched for edits."""

import functools
import hashlib
import os
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from kubeless_local import spec as specs
from kubeless_local.emulator import background
from kubeless_local.emulator.layout import code_files
from kubeless_local.errors import NotFound, UserError

if TYPE_CHECKING:
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers.api import BaseObserver

DEBOUNCE = 0.03  # editors write a file in several steps; act once they are done
# Functions started at once: a start mostly waits for its server's `ready` line (a fork of the runtime's
# template: ~10 ms of CPU), so several overlap; more threads than this cost `dev` CPU in GIL hand-offs
# (100 Python functions, BENCHMARKS.md: 4 → 1.2 s of `dev`'s CPU, 8 → 1.2–1.4, 16 → 1.7, 32 → 1.9–2.5).
STARTS_AT_ONCE = 8


class Digests:
    """sha256 of files, re-read only when a file's stat changed: a save reads the saved file, nothing else,
    and a touch that keeps the bytes does not reload."""

    def __init__(self):
        self.known = {}  # path → ((mtime_ns, size, inode), hex digest)

    def of(self, path):
        """`path`: a Path or a string."""
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                return "special"  # a FIFO would block the read; the layout skips it anyway
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
            known = self.known.get(path)
            if known is None or known[0] != key:
                digest = hashlib.sha256()
                with open(path, "rb") as file:
                    for block in iter(lambda: file.read(1 << 20), b""):
                        digest.update(block)
                known = self.known[path] = (key, digest.hexdigest())
        except OSError:
            return "missing"
        return known[1]


def fingerprint(fn, digests: Digests, ignore: specs.Ignore, root: Path):
    """What a running function depends on: its manifest and the content of its files: a folder's code
    files as the layout takes them (links inside the project followed), minus ignored names."""
    parts: list = [repr(fn.document)]
    for path in fn.watched_paths():
        files = [path]
        if path.is_dir():
            base = path.relative_to(root).as_posix() + "/" if root in path.parents else ""
            folder_ignored = functools.lru_cache(maxsize=None)(lambda rel: ignore.path(rel, is_dir=True))
            files = [
                file
                for rel, file in code_files(path, fn.project).files
                if not ignore.file(base + rel) and not ("/" in rel and folder_ignored(base + rel.rpartition("/")[0]))
            ]
        parts.extend((str(file), digests.of(file)) for file in files)
    return hash(tuple(parts))


def manifest_file(fn):
    return Path(fn.origin.split(":", 1)[0])


class Project:
    """Runs every Function found under `root` (or the given `manifests`, as `run` does); `ignore`: the
    user's gitignore-style patterns, honoured by the loader, the fingerprints and the watcher.

    An object that does not load is a ConfigError row of its own (its file in the message) and the others
    run; a function whose manifest breaks while it serves keeps serving its last good manifest.
    `deployed_only` (the session `function deploy` starts): only the manifests the Kubeless verbs wrote, as
    a cluster holds only what was applied to it, not every YAML file of the folder."""

    def __init__(self, root: Path, supervisor, manifests=None, ignore=(), allow_empty=False, deployed_only=False):
        self.root = Path(root).resolve()
        self.allow_empty = allow_empty  # `up`: functions come later (`function deploy` writes them)
        self.supervisor = supervisor
        self.logs = supervisor.logs
        self.fixed = manifests  # `run`: a Function built from flags instead of files
        self.ignore = specs.Ignore(ignore)
        only = (lambda: background.deployed_files(self.root)) if deployed_only else None
        self.loader = specs.Loader(self.root, self.ignore, only)
        self.errors: dict = {}  # key → message of the objects shown as ConfigError now
        self.digests = Digests()
        self.manifests = specs.Manifests()
        self.fingerprints: dict = {}
        self.shown: set = set()  # notices already shown: each is said once per session
        self.last_error: Optional[str] = None  # a broken manifest is reported once, not on every save
        self.observer: Optional[BaseObserver] = None  # watchdog's, made by watch()
        self.watches: dict = {}  # folder → watchdog watch (one non-recursive watch per folder we care about)
        self.handler: Optional[FileSystemEventHandler] = None  # watchdog's, for our events: made by watch()
        self.timer: Optional[threading.Timer] = None
        self.lock = threading.Lock()
        self.on_manifests: list = []  # called with the Manifests on start and on every reload (trigger delivery)

    def load(self):
        manifests = self.fixed if self.fixed is not None else self.loader.collect()
        for notice in manifests.notices:
            if notice not in self.shown:
                self.shown.add(notice)
                self.logs.emit("dev", notice, "system")
        return manifests

    def start(self):
        """Load and start everything; a bad manifest raises UserError, a bad function only logs."""
        self.manifests = self.load()
        if not self.manifests.functions and not self.allow_empty:
            self.manifests.raise_first()  # nothing would run: say what to fix, and exit
            raise NotFound(
                "%s: no Kubeless Function found in *.yaml here" % self.root, "function manifest", str(self.root)
            )
        for listener in self.on_manifests:
            listener(self.manifests)
        for trigger in self.manifests.cron_triggers:  # an HTTPTrigger's: the gateway says it (http_routes)
            if self.manifests.function(trigger.function_name) is None:
                self.logs.emit(
                    trigger.name,
                    "%s: spec.function-name %r names no Function in this project"
                    % (trigger.origin, trigger.function_name),
                    "system",
                )
        self._show_errors(self.manifests.errors)
        if len(self.manifests.functions) == 1:  # `run`'s one: started here, no pool (nor its imports, ~5 ms)
            self._start_one(self.manifests.functions[0])
            return
        from concurrent.futures import ThreadPoolExecutor  # and logging with it

        pool = ThreadPoolExecutor(max_workers=STARTS_AT_ONCE)
        try:
            list(pool.map(self._start_one, self.manifests.functions))
        finally:  # Ctrl-C: no waiting here for starts that wait for readiness; stop() wakes them
            pool.shutdown(wait=False, cancel_futures=True)

    def _keep_last_good(self, manifests, old):
        """Functions whose manifest broke (their object, or their whole file) stay in force as they were:
        they keep serving and receiving events, shown as ConfigError with the reason."""
        by_key = {error.key: error for error in manifests.errors}
        by_file = {error.path: error for error in manifests.errors if error.whole_file}
        errors, kept = list(manifests.errors), set()
        for name, fn in old.items():
            error = by_key.get(name) or by_file.get(manifest_file(fn))
            if error is None or manifests.function(name) is not None:
                continue
            manifests.functions.append(fn)
            kept.add(name)
            message = "%s (still serving its last good manifest)" % error.message
            errors = [e for e in errors if e.key != name] + [specs.ObjectError(name, error.path, message, True)]
        # a broken file whose functions are kept is shown on them, not as a row of its own
        kept_files = {manifest_file(old[name]) for name in kept}
        manifests.errors = [e for e in errors if e.key in kept or not (e.whole_file and e.path in kept_files)]

    def _show_errors(self, errors):
        """One ConfigError row per object that does not load (said once in its log); a row whose object
        loads again, or is gone, goes."""
        current = {error.key: error.message for error in errors}
        for key in self.errors.keys() - current.keys():
            if self.manifests.function(key) is None:
                self.supervisor.stop(key)
            else:
                self.fingerprints.pop(key, None)  # fixed: reloaded (or started) by apply, leaving ConfigError
        for key, message in current.items():
            if self.errors.get(key) != message:
                self.logs.emit(key, message, "system")
            self.supervisor.config_error(key, message)
        self.errors = current

    def fingerprint(self, fn):
        return fingerprint(fn, self.digests, self.ignore, self.root)

    def _start_one(self, fn):
        self.fingerprints[fn.name] = self.fingerprint(fn)
        try:
            self.supervisor.start(fn)
        except UserError as exc:
            if self.fixed is not None:
                raise  # `run`: flags cannot be edited while it runs, so a bad one ends it (exit 2)
            self.logs.emit(fn.name, self.supervisor.word(exc), "system")
            self.supervisor.fail(fn, self.supervisor.word(exc))

    # ------------------------------------------------------------ watching

    def watch(self):
        """Watch the project's folders and the functions' files, one folder at a time: ignored folders
        (node_modules, .venv, .git…) get no inotify watch at all."""
        import logging

        from watchdog.observers import Observer  # ~10 ms to import: after the functions' start, not before it

        logging.getLogger("watchdog.observers.inotify").addFilter(_quiet_stopping_race)  # once: the same function
        self.handler = _changes(self)
        self.observer = Observer()
        trees, folders = {self.root}, set()
        for fn in self.manifests.functions:
            for path in fn.watched_paths():
                if path.is_dir():
                    trees.add(path)
                else:
                    folders.add(path.parent)  # a single file (a deps file beside others): its folder only
        for tree in trees:
            if not any(other in tree.parents for other in trees):
                folders.update(self.ignore.folders(tree, self.root))
        # Started first: a watch then starts as it is made, and one whose folder went away meanwhile (a `git
        # checkout`) fails there, alone (made before the start, it failed the start, and `dev` whole).
        self.observer.start()
        for folder in folders:
            self._watch(folder)
        self._apply_soon()  # what changed after start()'s load and before the watches (`function deploy`'s file)

    def _watch(self, folder):
        if self.observer is None or self.handler is None or folder in self.watches:
            return
        try:
            self.watches[folder] = self.observer.schedule(self.handler, str(folder), recursive=False)
        except OSError:
            pass  # removed meanwhile

    def folder_created(self, folder: Path):
        if not self.ignore.path(self._rel(folder), is_dir=True):
            for sub in self.ignore.folders(folder, self.root):
                self._watch(sub)
            self.changed(folder, is_dir=True)  # files may have landed in it before its watch

    def folder_removed(self, folder: Path):
        if self.observer is None:
            return
        for watched in [f for f in self.watches if f == folder or folder in f.parents]:
            try:
                self.observer.unschedule(self.watches.pop(watched))
            except (KeyError, OSError):
                pass
        self.changed(folder, is_dir=True)

    def _rel(self, path: Path):
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.name  # a function's file outside the folder (`run --dependencies ../x`)

    def changed(self, path, is_dir=False):
        path = Path(path)
        if not self.ignore.path(self._rel(path), is_dir):
            self._apply_soon()

    def _apply_soon(self):
        """apply() once saves have settled (DEBOUNCE): an editor's burst of writes is one reload."""
        with self.lock:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = threading.Timer(DEBOUNCE, self.apply)
            self.timer.daemon = True
            self.timer.start()

    def apply(self):
        try:
            manifests = self.load()
        except UserError as exc:
            if str(exc) != self.last_error:
                self.last_error = str(exc)
                self.logs.emit("dev", "%s (keeping the running functions)" % exc, "system")
            return
        self.last_error = None
        old = {fn.name: fn for fn in self.manifests.functions}
        self._keep_last_good(manifests, old)
        new = {fn.name: fn for fn in manifests.functions}
        self.manifests = manifests
        for listener in self.on_manifests:
            listener(manifests)
        for name in old.keys() - new.keys():
            self.logs.emit(name, "removed from the manifests; stopping", "system")
            self.supervisor.stop(name)
            self.fingerprints.pop(name, None)
        self._show_errors(manifests.errors)
        for name, fn in new.items():
            print_ = self.fingerprint(fn)
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
            self.logs.emit(fn.name, self.supervisor.word(exc), "system")
            self.supervisor.fail(fn, self.supervisor.word(exc))

    def stop(self):
        if self.observer is not None and self.observer.is_alive():  # not when a Ctrl-C came before its start
            self.observer.stop()
            self.observer.join(timeout=5)
        if self.timer is not None:
            self.timer.cancel()
        self.supervisor.stop_all()


def _quiet_stopping_race(record) -> bool:
    """watchdog logs an error when a file event arrives while its observer stops (a race inside watchdog, harmless:
    we are stopping); it would print on the user's console."""
    return "called when the thread is inactive" not in record.getMessage()


def _changes(project):
    """watchdog's handler of `project`'s file events (watchdog.events is loaded with the watch, not before)."""
    from watchdog.events import FileSystemEventHandler

    class Changes(FileSystemEventHandler):
        def on_any_event(self, event):
            if event.event_type in ("opened", "closed_no_write") or (
                event.is_directory and event.event_type == "modified"
            ):
                return
            dest = getattr(event, "dest_path", "")
            if event.is_directory and event.event_type in ("deleted", "moved"):
                project.folder_removed(Path(event.src_path))
            if event.is_directory and (event.event_type == "created" or dest):
                project.folder_created(Path(dest or event.src_path))
            elif not event.is_directory:
                project.changed(event.src_path)
                if dest:
                    project.changed(dest)

    return Changes()
