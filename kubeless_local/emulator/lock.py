"""One `dev` per project: an exclusive flock on .kubeless-local/lock, held for the session's life.

The kernel drops the lock when its holder dies (kill -9 included), so a stale lock never blocks
the next `dev`. The file holds the holder's pid, for the message only.
"""

import fcntl
import os
from pathlib import Path

from kubeless_local.emulator import registry
from kubeless_local.errors import UserError
from kubeless_local.paths import STATE_DIRNAME

LOCK_NAME = "lock"


def _holder(path):
    try:
        return int(Path(path).read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def held(path):
    """True while another open file description holds the lock at `path`."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def running_below(root):
    """(project folder, pid) of a running session whose project lies inside `root` (found through the
    registry, confirmed by its lock), or None."""
    root = Path(root).resolve()
    for info in registry.starting_or_running():
        folder = Path(info["root"])
        if root in folder.parents and held(Path(info["admin"]).parent / LOCK_NAME):
            return folder, info["pid"]
    return None


def running_above(root):
    """(project folder, pid) of a running `dev` whose project contains `root`, or None."""
    for folder in Path(root).resolve().parents:
        path = folder / STATE_DIRNAME / LOCK_NAME
        if path.is_file() and held(path):
            return folder, _holder(path)
    return None


class ProjectLock:
    def __init__(self, state_dir):
        self.path = Path(state_dir) / LOCK_NAME
        self.fd = None

    def acquire(self):
        """Take the lock, or raise UserError naming the `dev` that holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            state_dir = self.path.parent
            what, folder = "kubeless-local", state_dir.parent
            if state_dir.name != STATE_DIRNAME:  # .kubeless-local/run-NAME: one `run NAME`
                what, folder = "kubeless-local run %s" % state_dir.name[len("run-") :], state_dir.parent.parent
            raise UserError(
                "%s is already running for %s (pid %s); stop it first" % (what, folder, _holder(self.path) or "unknown")
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        self.fd = fd

    def release(self):
        """Closing the file drops the lock; the file stays (removing it would race a starting `dev`)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def refuse_nested(root):
    """UserError when `root` lies inside a project that a session runs now, or holds one: its functions
    would run twice. Call inside registry.claiming(), before taking the project's lock."""
    running = running_above(root)
    if running:
        folder, pid = running
        raise UserError(
            "%s is inside %s, which kubeless-local already runs (pid %s); stop that one or work "
            "there: it already runs every function under it" % (root, folder, pid or "unknown")
        )
    running = running_below(root)
    if running:
        folder, pid = running
        raise UserError(
            "%s holds %s, which kubeless-local already runs (pid %s); stop that one first, or work there"
            % (root, folder, pid or "unknown")
        )
