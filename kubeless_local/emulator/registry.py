"""The user's running sessions (`dev`, `run`, `up`), so `call NAME`, `logs` and `ls` work from any folder.

Each session writes one small file here while it runs: its project folder and where its admin.json
is (that file, mode 0600, holds the admin port and token). The folder is the user's own
(`$XDG_RUNTIME_DIR/kubeless-local/sessions`, else `<cache>/sessions`; `KUBELESS_LOCAL_REGISTRY`
overrides it), mode 0700. An entry whose process is gone is ignored and removed by whoever reads it.

A session registers as soon as it holds its project's lock, inside `claiming()`: so of two sessions
started at once, one above the other's folder, the second to claim sees the first (lock.refuse_nested).
"""

import contextlib
import fcntl
import json
import os
from pathlib import Path

from kubeless_local.paths import cache_dir


def registry_dir() -> Path:
    explicit = os.environ.get("KUBELESS_LOCAL_REGISTRY")
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if explicit:
        path = Path(explicit)
    elif runtime_dir and os.path.isdir(runtime_dir):
        path = Path(runtime_dir) / "kubeless-local" / "sessions"
    else:
        path = cache_dir() / "sessions"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


@contextlib.contextmanager
def claiming():
    """Held while a session checks that no running session nests with it and takes its project: one at a time."""
    try:
        fd = os.open(registry_dir() / "claims.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield  # no registry folder: nesting is checked through the project locks only
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def register(admin_json: Path, root: Path, kind: str):
    """Record a running session; returns its entry (pass it to `unregister`), or None when the folder
    cannot be written (the session still runs; it is found from its own folder only)."""
    entry = None
    try:
        entry = registry_dir() / ("%d-%s.json" % (os.getpid(), abs(hash(str(admin_json))) % 10**8))
        entry.write_text(json.dumps({"pid": os.getpid(), "root": str(root), "admin": str(admin_json), "kind": kind}))
    except OSError:
        return None
    return entry


def unregister(entry):
    if entry is not None:
        try:
            entry.unlink()
        except OSError:
            pass


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def answering(admin_json, pid=None):
    """True while the session that wrote `admin_json` (process `pid`, when given) runs."""
    try:
        owner = json.loads(Path(admin_json).read_text()).get("pid")
        return (pid is None or owner == pid) and _alive(int(owner))
    except (OSError, ValueError, TypeError, AttributeError):
        return False


def _entries():
    """[(entry, {pid, root, admin, kind})] of the processes registered that still run, oldest first; the
    entries of those gone are removed."""
    found = []

    def age(path):
        try:
            return path.stat().st_mtime
        except OSError:
            return 0.0  # removed meanwhile: skipped below

    try:
        entries = sorted(registry_dir().glob("*.json"), key=age)
    except OSError:
        return []
    for entry in entries:
        try:
            info = json.loads(entry.read_text())
            if _alive(int(info["pid"])):
                found.append((entry, info))
                continue
        except (OSError, ValueError, KeyError, TypeError):
            pass
        unregister(entry)
    return found


def starting_or_running():
    """[{pid, root, admin, kind}] of the sessions that hold their project, their admin API published or not."""
    return [info for _, info in _entries()]


def sessions():
    """[{pid, root, admin, kind}] of the sessions that answer now (admin API published), oldest entry first."""
    return [info for _, info in _entries() if answering(info["admin"], info["pid"])]
