"""Sessions in the background: `kubeless-local up -d` (and the first `function deploy` of a folder no
session runs) start one that outlives the command; `down` stops it. Found through the registry."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kubeless_local.emulator import registry
from kubeless_local.errors import UserError
from kubeless_local.paths import STATE_DIRNAME

UP_TIMEOUT = 60.0
DOWN_TIMEOUT = 30.0


def _running(entries, folder):
    """The entry of the `dev`/`up` among registry `entries` that runs `folder` (or a folder above it), or None."""
    folder = Path(folder).resolve()
    for entry in entries:
        root = Path(entry["root"])
        if entry.get("kind") == "dev" and (root == folder or root in folder.parents):
            return entry
    return None


def project_session(folder):
    """The state folder of the `dev`/`up` that runs `folder` (or a folder above it), or None."""
    entry = _running(registry.sessions(), folder)
    return None if entry is None else Path(entry["admin"]).parent


def _registered(pid):
    """Whether the session `pid` is in the registry (it leaves it as it ends)."""
    return any(int(entry["pid"]) == pid for entry in registry.starting_or_running())


def start(folder, deployed_only=False, options=()):
    """A session (`up`) for `folder` in the background (its output in .kubeless-local/up.log); returns
    its state folder once it answers. `deployed_only` (`function deploy`): it runs only what the Kubeless
    verbs deployed there (deployed_files), not every manifest in the folder; `options`: more `up` flags."""
    state = Path(folder) / STATE_DIRNAME
    state.mkdir(exist_ok=True)
    argv = [sys.executable, "-m", "kubeless_local", "up", *(["--deployed-only"] * deployed_only), *options, str(folder)]
    with open(state / "up.log", "ab") as log:
        proc = subprocess.Popen(
            argv,
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # outlives this command and its terminal
        )
    deadline = time.monotonic() + UP_TIMEOUT
    while time.monotonic() < deadline:
        found = project_session(folder)
        if found is not None:
            return found
        if proc.poll() is not None:
            tail = (state / "up.log").read_text(errors="replace").strip().splitlines()[-1:]
            raise UserError("the background session for %s ended: %s" % (folder, tail[0] if tail else "no output"))
        time.sleep(0.1)
    proc.terminate()  # never leave a session behind that the user was told did not start
    raise UserError(
        "the background session for %s did not answer within %ds; see %s" % (folder, UP_TIMEOUT, state / "up.log")
    )


def session_pid(folder):
    """The pid of the `dev`/`up` that runs `folder` (or a folder above it), or None: by the registry, which names
    the folder the session started in even once it is gone (deleted, its admin file with it), else by the admin file
    in the folder or one above it (renamed since: the registry names the old path)."""
    entry = _running(registry.starting_or_running(), folder)
    if entry is not None:
        return int(entry["pid"])
    resolved = Path(folder).resolve()
    for place in (resolved, *resolved.parents):
        admin = place / STATE_DIRNAME / "admin.json"
        if registry.answering(admin):
            pid = json.loads(admin.read_text())["pid"]
            if _registered(pid):
                return pid
    return None


def stop(folder):
    """Stop the session that runs `folder` (SIGTERM: it stops its functions first) and wait until it has (it leaves
    the registry as it ends)."""
    pid = session_pid(folder)
    if pid is None:
        raise UserError("no kubeless-local session runs %s" % folder)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + DOWN_TIMEOUT
    while _registered(pid):
        if time.monotonic() > deadline:
            raise UserError("the session for %s (pid %d) did not stop within %d s" % (folder, pid, DOWN_TIMEOUT))
        time.sleep(0.1)


# ---------------------------------------------------------------- what the Kubeless verbs deployed here

DEPLOYED_LIST = "deployed.txt"  # in the state folder: the manifests the verbs wrote, one path a line


def deployed_files(root) -> list:
    """The manifests `function deploy` / `trigger … create` wrote for the session of `root`: all the
    session `function deploy` starts loads (a cluster holds what was applied to it, not the folder's YAML)."""
    root = Path(root)
    try:
        lines = (root / STATE_DIRNAME / DEPLOYED_LIST).read_text().splitlines()
    except OSError:
        return []
    return [root / line for line in lines if line.strip()]


def record_deployed(path, present=True):
    """Add (or remove) a manifest the verbs wrote to the list of the session that runs its folder (of the
    folder itself when none runs yet: the session `function deploy` starts there reads it)."""
    path = Path(path).resolve()
    state_dir = project_session(path.parent) or path.parent / STATE_DIRNAME
    state_dir.mkdir(exist_ok=True)
    root = state_dir.parent
    listed = [p.relative_to(root).as_posix() for p in deployed_files(root)]
    entry = path.relative_to(root).as_posix()
    listed = [line for line in listed if line != entry] + ([entry] if present else [])
    tmp = state_dir / (".%s.tmp" % DEPLOYED_LIST)
    tmp.write_text("".join(line + "\n" for line in listed))
    os.replace(tmp, state_dir / DEPLOYED_LIST)
