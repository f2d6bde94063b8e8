"""The runtime catalog (`runtimes/catalog.yaml`): which runtime strings exist and how to run them."""
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from kubeless_local.errors import UserError
from kubeless_local.paths import RUNTIMES_DIR

RUNTIME_RE = re.compile(r"^([a-zA-Z_-]+)([0-9.]*)$")


@dataclass(frozen=True)
class Runtime:
    """One runtime version, e.g. python3.11."""

    id: str  # python
    version: str  # 3.11
    server: str  # folder under runtimes/
    dep_name: str
    suffix: str
    executable: str
    probe: tuple
    expect: str
    image: str
    process: dict = field(hash=False, compare=False, default_factory=dict)
    resolve: tuple = ()  # argv printing the real executable (skips version-manager shims such as pyenv's)

    @property
    def name(self):
        return self.id + self.version

    @property
    def runtime_dir(self) -> Path:
        return RUNTIMES_DIR / self.server

    @property
    def reload(self):
        return self.process.get("reload", "restart")

    def executable_path(self):
        return _real_executable(self.executable, self.resolve)

    def available(self):
        """True when this machine has the toolchain for the process backend."""
        return self.executable_path() is not None and _probe(self.executable, self.probe, self.expect) is not None


def _expand(value, values):
    return value.format_map(values) if isinstance(value, str) else value


@lru_cache(maxsize=None)
def _real_executable(executable, resolve):
    exe = shutil.which(executable)
    if exe is None or not resolve:
        return exe
    try:
        out = subprocess.run([_expand(a, {"exe": exe}) for a in resolve], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return exe
    real = out.stdout.strip()
    return real if out.returncode == 0 and real and shutil.which(real) else exe


@lru_cache(maxsize=None)
def _probe(executable, probe, expect):
    """The probe's regex match on the toolchain's version output, or None."""
    exe = shutil.which(executable)
    if exe is None:
        return None
    argv = [_expand(a, {"exe": exe}) for a in probe] or [exe, "--version"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return re.search(expect, out.stdout + out.stderr) if expect else re.match("", "")


class Catalog:
    def __init__(self, path=None):
        self.path = Path(path or RUNTIMES_DIR / "catalog.yaml")
        try:
            data = yaml.safe_load(self.path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UserError("%s: cannot load the runtime catalog (%s)" % (self.path, exc)) from None
        self.entries = data.get("runtimes") or {}

    def ids(self):
        return list(self.entries)

    @lru_cache(maxsize=None)
    def versions(self, runtime_id):
        """The catalog's versions of one ID; an `auto` version is read off the toolchain."""
        entry = self.entries[runtime_id]
        found = []
        for v in entry.get("versions") or []:
            version = str(v["version"])
            probe, expect = tuple(v.get("probe") or ()), v.get("expect") or ""
            if version == "auto":
                match = _probe(v["executable"], probe, expect)
                if match is not None and match.groups():
                    version = match.group(1)
                    expect = re.escape(match.group(0))
                elif v.get("default"):
                    version = str(v["default"])  # no toolchain here: the runtime image brings this version
                else:
                    continue
            found.append(Runtime(
                id=runtime_id, version=version, server=entry.get("server", runtime_id),
                dep_name=entry.get("depName", ""), suffix=entry.get("fileNameSuffix", ""),
                executable=v.get("executable", ""), probe=probe, expect=expect,
                image=_expand(v.get("image", ""), {"version": version}), resolve=tuple(v.get("resolve") or ()),
                process=entry.get("process") or {}))
        return found

    def all(self):
        return [rt for runtime_id in self.ids() for rt in self.versions(runtime_id)]

    def legacy(self, runtime_id):
        return [str(v) for v in self.entries[runtime_id].get("legacy") or []]

    def resolve(self, runtime, *, require_local=True):
        """(Runtime, notice) for a runtime string; legacy versions map to the newest available one."""
        match = RUNTIME_RE.match(runtime or "")
        if not match or match.group(1) not in self.entries:
            raise UserError("unknown runtime %r; available: %s (see `kubeless-local get-server-config`)"
                            % (runtime, ", ".join(rt.name for rt in self.all()) or "none"))
        runtime_id, version = match.groups()
        versions = self.versions(runtime_id)
        usable = [rt for rt in versions if rt.available()] if require_local else versions
        for rt in usable:
            if rt.version == version:
                return rt, None
        exact = [rt for rt in versions if rt.version == version]
        if exact:
            rt = exact[0]
            raise UserError("runtime %s needs `%s` on PATH (%s); install it or use %s"
                            % (runtime, rt.executable, "not found" if not rt.executable_path() else "wrong version",
                               ", ".join(r.name for r in usable) or "another runtime"))
        if usable and (version in self.legacy(runtime_id) or not version):
            newest = usable[-1]
            return newest, "%s is a legacy Kubeless runtime; running it as %s" % (runtime, newest.name)
        raise UserError("runtime %r is not available; %s versions here: %s"
                        % (runtime, runtime_id, ", ".join(rt.name for rt in usable) or "none (toolchain missing)"))
