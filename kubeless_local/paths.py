"""Where things live: the project's state folder, the user cache, the shipped data folders."""

import json
import os
from pathlib import Path

from kubeless_local.errors import UserError
from kubeless_local.places import STATE_DIRNAME, cache_root

SETTINGS_FILE = ".kubeless-local.yaml"  # a project's settings (config.py reads it)
_PACKAGE = Path(__file__).resolve().parent


def _data_dir(name):
    # Installed wheels carry runtimes/ and templates/ inside the package; a checkout has them beside it.
    inside = _PACKAGE / name
    return inside if inside.is_dir() else _PACKAGE.parent / name


RUNTIMES_DIR = _data_dir("runtimes")
TEMPLATES_DIR = _data_dir("templates")


def project_folder(path) -> Path:
    """The project a PATH argument names: the folder itself, or the folder of the manifest file it names."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def cache_dir():
    """Per-user cache shared by projects (deps keyed by sha256, runtime libraries)."""
    path = Path(cache_root())
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a HOME that is not there or not the user's (a container's user, a service account)
        raise UserError(
            "cannot make the cache folder %s (%s): set KUBELESS_LOCAL_CACHE or XDG_CACHE_HOME to a folder you can "
            "write to" % (path, exc.strerror)
        ) from None
    return path


def read_cached(name):
    """The JSON object kept in the user's cache as `name`; {} when it is missing, unreadable or not an object."""
    try:
        found = json.loads((cache_dir() / name).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def keep_cached(name, data):
    """Keep `data` (a JSON object) in the user's cache as `name`, atomically: another process reads the old one or
    the new one. A cache that cannot be written is left as it was (the next read finds the old one, or none)."""
    path = cache_dir() / name
    tmp = path.with_name("%s.%d" % (name, os.getpid()))
    try:
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError:
        pass


def find_state_dir(start=None):
    """The nearest .kubeless-local folder at or above `start` (like git finds .git), or None."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / STATE_DIRNAME
        if (candidate / "admin.json").is_file():
            return candidate
    return None
