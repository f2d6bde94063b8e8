"""What `dev` and `run` run for one project folder: backend, supervisor, file watcher and admin API."""
import json
import os
from pathlib import Path

from kubeless_local import spec as specs
from kubeless_local.emulator import backends
from kubeless_local.emulator.admin import AdminServer
from kubeless_local.emulator.logs import LogHub
from kubeless_local.emulator.project import Project
from kubeless_local.emulator.supervisor import Supervisor
from kubeless_local.errors import UserError
from kubeless_local.paths import STATE_DIRNAME


def running_elsewhere(state_dir):
    """The pid of another live kubeless-local serving this project, or None."""
    try:
        info = json.loads((state_dir / "admin.json").read_text())
        os.kill(info["pid"], 0)
    except (OSError, ValueError, KeyError):
        return None
    return info["pid"] if info["pid"] != os.getpid() else None


class DevSession:
    """Create, then `start()`; `logs` exists from the beginning so start-up output can be shown."""

    def __init__(self, root, backend_name=None, manifests=None, say=print, ignore=()):
        self.root = Path(root).resolve()
        self.ignore = ignore  # gitignore-style patterns (`dev --ignore`)
        self.state_dir = self.root / STATE_DIRNAME
        self.backend_name, self.manifests, self.say = backend_name, manifests, say
        self.logs = LogHub()
        self.supervisor = self.project = self.admin = None

    def start(self):
        """Start every function and watch the folder. UserError for what the user must fix first."""
        self.state_dir.mkdir(exist_ok=True)
        ignore = self.state_dir / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# kubeless-local's working state (generations, ports, admin API); not source\n*\n")
        other = running_elsewhere(self.state_dir)
        if other:
            raise UserError("kubeless-local is already running for %s (pid %d); stop it first" % (self.root, other))
        name = self.backend_name or backends.project_default(self.root) or "process"
        if name == "auto":
            functions = (self.manifests if self.manifests is not None else specs.load(self.root, self.ignore)).functions
            name = backends.choose("auto", functions, self.say)
        self.supervisor = Supervisor(self.state_dir, backends.create(name, self.logs), self.logs)
        self.project = Project(self.root, self.supervisor, self.manifests, self.ignore)
        self.admin = AdminServer(self.supervisor, self.state_dir, self.root)
        self.project.start()
        self.admin.start()
        self.project.watch()

    def status(self):
        return self.supervisor.status()

    def stop(self):
        """Stop the functions and the admin API; safe after a failed start."""
        if self.project is not None:
            self.project.stop()
        if self.admin is not None:
            self.admin.stop()
