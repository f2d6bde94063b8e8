"""The runtime catalog (`runtimes/catalog.yaml`): which runtime strings exist and how to run them.

The file is loaded into typed models and checked key by key (an unknown key is a UserError naming
the file and the key); every key is documented in runtimes/README.md.
"""

import dataclasses
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from kubeless_local.errors import BadRequest, NotFound, UserError
from kubeless_local.paths import RUNTIMES_DIR, keep_cached, read_cached
from kubeless_local.spec import ISOLATIONS, yaml_loader

RUNTIME_RE = re.compile(r"^([a-zA-Z_-]+)([0-9.]*)$")
RELOADS = ("signal", "restart")  # signal: SIGHUP reloads code in place; restart: the engine restarts the server
DEBUGGERS = ("debugpy", "inspector", "delve")  # `debug:` values; how each behaves: emulator/debugging.py


# ---------------------------------------------------------------- the models


@dataclass(frozen=True)
class BackendBlock:
    """A `process:` or `docker:` block of the catalog: the steps with which one backend installs, compiles
    and runs the server, as data (prepare's HostSteps and DockerSteps are what runs them).
    Argv lists hold placeholders ({exe}, {install}, {deps}, … see runtimes/README.md)."""

    command: tuple = ()  # starts the runtime server
    template: tuple = ()  # process: starts a process that forks `command`'s servers (emulator/forkserver.py)
    held: tuple = ()  # process: `command` started before its env is known, released with it (emulator/headstart.py)
    setup: tuple = ()  # installs the server's own libraries into {runtime_lib}, once
    setup_inputs: tuple = ()  # files of runtimes/<server> whose content keys the setup (process)
    install: tuple = ()  # installs the deps file into {deps}
    check: tuple = ()  # validates edited code before a reload
    compile: tuple = ()  # builds {build} from the code; a failure is a CompileError
    init: tuple = ()  # process: after `init` wrote the template, in its folder: what an editor needs (Java's)
    env: dict = field(default_factory=dict, hash=False)  # extra env of the server and every step
    reload: str = "restart"
    build_args: dict = field(default_factory=dict, hash=False)  # docker: build args of the image
    debug: str = ""  # process: the debugger `dev --debug` runs the server under (DEBUGGERS); "": none yet


BLOCK_KEYS = {
    "process": {
        "command",
        "template",
        "held",
        "setup",
        "setup_inputs",
        "install",
        "check",
        "compile",
        "init",
        "env",
        "reload",
        "debug",
    },
    "docker": {"command", "setup", "install", "check", "compile", "env", "reload", "build_args"},
}


@dataclass(frozen=True)
class Version:
    """One entry of a runtime's `versions:`."""

    version: str  # "3.11", or "auto": read off the toolchain (the `expect` regex's first group)
    executable: tuple  # candidates: names on PATH, globs on PATH, absolute or ~ paths and globs
    probe: tuple = ()  # argv run to check a toolchain; default `{exe} --version`
    expect: str = ""  # regex on the probe's output
    resolve: tuple = ()  # argv printing the real executable (skips version-manager shims such as pyenv's)
    image: str = ""  # docker backend image ({version} placeholder); none: process backend only
    default: str = ""  # auto: the version when no toolchain is found (the image brings it)


@dataclass(frozen=True)
class Entry:
    """One runtime ID (Kubeless `ID`, e.g. python)."""

    id: str
    server: str
    dep_name: str = ""
    suffix: str = ""
    versions: tuple = ()
    legacy: tuple = ()
    process: BackendBlock = BackendBlock()
    docker: BackendBlock = BackendBlock()
    isolation: tuple = ("warm",)  # the isolations (spec.ISOLATIONS) its server applies


@dataclass(frozen=True)
class Runtime:
    """One runtime version, e.g. python3.11, as one backend runs it."""

    id: str  # python
    version: str  # 3.11
    server: str  # folder under runtimes/
    dep_name: str
    suffix: str
    executable: str  # the toolchain found for this version (or the first candidate when none is)
    probe: tuple
    expect: str
    image: str
    process: BackendBlock = field(hash=False, compare=False, default_factory=BackendBlock)
    resolve: tuple = ()
    docker: BackendBlock = field(hash=False, compare=False, default_factory=BackendBlock)
    backend: str = "process"  # whose block `steps` and `reload` read
    # the isolations its server applies (the catalog's); an image of the user's is told and left to it
    isolations: tuple = ISOLATIONS

    @property
    def name(self):
        return self.id + self.version

    @property
    def runtime_dir(self) -> Path:
        return RUNTIMES_DIR / self.server

    @property
    def steps(self) -> BackendBlock:
        """The catalog block of the backend this runtime was resolved for."""
        return self.docker if self.backend == "docker" else self.process

    @property
    def reload(self):
        return self.steps.reload

    def for_backend(self, backend):
        return dataclasses.replace(self, backend=backend)

    def executable_path(self):
        return _real_executable(self.executable, self.resolve)

    def available(self):
        """True when this machine has the toolchain for the process backend."""
        return self.executable_path() is not None and _probe(self.executable, self.probe, self.expect) is not None


def _declared(runtime_id, version, require_local):
    """A runtime declared only in the runtime-images file (images/choice.py), or None; it has no local
    server: refused where one is needed (the process backend)."""
    from kubeless_local.emulator.images.choice import declared_runtime  # reads the user's file, not the catalog

    found = declared_runtime(runtime_id, version)
    if found is None:
        return None
    runtime, path = found
    if require_local:
        raise BadRequest(
            "runtime %s is declared only in %s (runtime-images): it runs in its image %s, not as a local process"
            % (runtime.name, path, runtime.image),
            "image-only runtime",
            runtime.name,
        )
    return runtime


# ---------------------------------------------------------------- loading and checking


ENTRY_KEYS = {"server", "depName", "fileNameSuffix", "versions", "legacy", "process", "docker", "isolation"}
VERSION_KEYS = {"version", "executable", "probe", "expect", "resolve", "image", "default"}
# the keys whose value is an argv: the process block's commands, and a version's probe and resolve
ARGV_KEYS = (BLOCK_KEYS["process"] - {"env", "reload", "debug"}) | {"probe", "resolve"}


class _Checker:
    """Reads one YAML mapping against its known keys; errors name the file and the key path."""

    def __init__(self, path):
        self.path = path

    def fail(self, where, message):
        raise UserError("%s: %s: %s" % (self.path, where, message))

    def mapping(self, value, where, known):
        if not isinstance(value, dict):
            self.fail(where, "must be a mapping, got %r" % (value,))
        for key in value:
            if key not in known:
                self.fail("%s.%s" % (where, key), "unknown key; known: %s" % ", ".join(sorted(known)))
        return value

    def argv(self, value, where):
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(a, (str, int, float)) for a in value):
            self.fail(where, "must be a list of strings (an argv)")
        return tuple(str(a) for a in value)

    def strings(self, value, where):
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(where, "must be a mapping of names to strings")
        return {str(k): str(v) for k, v in value.items()}

    def block(self, value, where, backend):
        data = self.mapping(value or {}, where, BLOCK_KEYS[backend])
        reload = data.get("reload", "restart")
        if reload not in RELOADS:
            self.fail(where + ".reload", "must be one of %s, got %r" % (", ".join(RELOADS), reload))
        debug = str(data.get("debug") or "")
        if debug and debug not in DEBUGGERS:
            self.fail(where + ".debug", "must be one of %s, got %r" % (", ".join(DEBUGGERS), debug))
        return BackendBlock(
            **{key: self.argv(data.get(key), "%s.%s" % (where, key)) for key in ARGV_KEYS & set(data)},
            env=self.strings(data.get("env"), where + ".env"),
            build_args=self.strings(data.get("build_args"), where + ".build_args"),
            reload=reload,
            debug=debug,
        )

    def version(self, value, where):
        data = self.mapping(value, where, VERSION_KEYS)
        if "version" not in data or "executable" not in data:
            self.fail(where, "needs `version` and `executable`")
        executable = data["executable"]
        candidates = (executable,) if isinstance(executable, str) else self.argv(executable, where + ".executable")
        return Version(
            version=str(data["version"]),
            executable=candidates,
            probe=self.argv(data.get("probe"), where + ".probe"),
            expect=str(data.get("expect") or ""),
            resolve=self.argv(data.get("resolve"), where + ".resolve"),
            image=str(data.get("image") or ""),
            default=str(data.get("default") or ""),
        )

    def isolation(self, value, where):
        if value is None:
            return ("warm",)
        if not isinstance(value, list) or "warm" not in value or any(v not in ISOLATIONS for v in value):
            self.fail(where, "must be a list of %s, warm among them; got %r" % (", ".join(ISOLATIONS), value))
        return tuple(value)

    def entry(self, runtime_id, value, where):
        data = self.mapping(value, where, ENTRY_KEYS)
        versions = data.get("versions") or []
        if not isinstance(versions, list):
            self.fail(where + ".versions", "must be a list")
        return Entry(
            id=runtime_id,
            server=str(data.get("server") or runtime_id),
            dep_name=str(data.get("depName") or ""),
            suffix=str(data.get("fileNameSuffix") or ""),
            versions=tuple(self.version(v, "%s.versions[%d]" % (where, i)) for i, v in enumerate(versions)),
            legacy=tuple(str(v) for v in data.get("legacy") or ()),
            isolation=self.isolation(data.get("isolation"), where + ".isolation"),
            process=self.block(data.get("process"), where + ".process", "process"),
            docker=self.block(data.get("docker"), where + ".docker", "docker"),
        )


def load(path):
    """{runtime ID: Entry} from a catalog file; UserError naming the file and key when it is wrong."""
    data = _catalog_data(Path(path))
    check = _Checker(path)
    check.mapping(data, "top level", {"runtimes"})
    runtimes = data.get("runtimes") or {}
    if not isinstance(runtimes, dict):
        check.fail("runtimes", "must be a mapping of runtime IDs")
    return {str(rid): check.entry(str(rid), value, "runtimes.%s" % rid) for rid, value in runtimes.items()}


# in the user's cache, one file per catalog path (each install and checkout has its own; one file of them all grew
# with every checkout, and was read whole on every start): {"path", "sha256": of its text, "data": as read}
CATALOG_CACHE = "catalog-%s.json"


def _catalog_data(path):
    """A catalog file's YAML as read, from the user's cache while the file's text is the same: the catalog is read
    on every start, and PyYAML alone takes ~15 ms to import. Kept only when JSON holds it exactly."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise UserError("%s: cannot load the runtime catalog (%s)" % (path, exc.strerror or exc)) from None
    digest = hashlib.sha256(text).hexdigest()
    cache = CATALOG_CACHE % hashlib.sha256(str(path).encode()).hexdigest()[:16]
    found = read_cached(cache)
    if found.get("path") == str(path) and found.get("sha256") == digest and isinstance(found.get("data"), dict):
        return found["data"]
    import yaml

    try:
        data = yaml.load(text.decode("utf-8"), Loader=yaml_loader()) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError("%s: cannot load the runtime catalog (%s)" % (path, exc)) from None
    try:
        exact = isinstance(data, dict) and json.loads(json.dumps(data)) == data
    except (TypeError, ValueError):  # a date, a non-string key: read from the YAML each time
        exact = False
    if exact:
        keep_cached(cache, {"path": str(path), "sha256": digest, "data": data})
    return data


# ---------------------------------------------------------------- toolchains on this machine


def _expand(value, values):
    return value.format_map(values) if isinstance(value, str) else value


def candidates(patterns):
    """Executables matching the patterns, in order: a bare name is looked up on PATH (a glob in it is
    matched in each PATH folder), a path (absolute or ~) may be a glob (pyenv, nvm, Homebrew folders)."""
    found, real = [], set()
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        if os.sep in pattern:
            matches = sorted(glob.glob(pattern))
        elif glob.has_magic(pattern):
            matches = [
                m
                for d in os.environ.get("PATH", "").split(os.pathsep)
                if d
                for m in sorted(glob.glob(os.path.join(d, pattern)))
            ]
        else:
            matches = [shutil.which(pattern)] if shutil.which(pattern) else []
        for match in matches:
            # the same file under two names (nodejs -> node) is probed once
            if os.path.realpath(match) not in real and os.path.isfile(match) and os.access(match, os.X_OK):
                real.add(os.path.realpath(match))
                found.append(match)
    return found


PROBES_FILE = "probes.json"  # in the user's cache: what toolchain probes printed, by the file each one ran
PROBES_KEPT = 64  # entries; the oldest go (a toolchain upgraded leaves its old entry behind)
_probes_lock = threading.Lock()
_probes: list = []  # [the file's entries], read once per process


def _file_identity(exe):
    """What a probe of `exe` answers by: the file that runs (real path, size, mtime, inode). None for a script:
    a version manager's shim (pyenv's) answers by the folder it runs in and the environment."""
    real = os.path.realpath(exe)
    try:
        with open(real, "rb") as executable:
            if executable.read(2) == b"#!":
                return None
            stat = os.fstat(executable.fileno())
    except OSError:
        return None
    return [real, stat.st_size, stat.st_mtime_ns, stat.st_ino]


def _probed(argv, exe):
    """(exit code, stdout, stderr) of probe `argv` of toolchain `exe`; run once per identity of the file `exe`
    is (kept in the user's cache: each probe was a process started before every `run`), every time for a
    script. None when it cannot run or times out."""
    identity = _file_identity(exe)
    key = json.dumps([argv, identity])
    if identity is not None:
        with _probes_lock:
            found = _stored_probes().get(key)
        if isinstance(found, list) and len(found) == 3:
            return tuple(found)
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if identity is not None:
        with _probes_lock:
            stored = _stored_probes()
            stored[key] = [out.returncode, out.stdout, out.stderr]
            keep_cached(PROBES_FILE, dict(list(stored.items())[-PROBES_KEPT:]))  # unwritable: probed next time
    return out.returncode, out.stdout, out.stderr


def _stored_probes() -> dict:
    """The probes kept in the user's cache (read on first use; _probes_lock held)."""
    if not _probes:
        _probes.append(read_cached(PROBES_FILE))
    return _probes[0]


@cache
def _real_executable(executable, resolve):
    exe = shutil.which(executable)
    if exe is None or not resolve:
        return exe
    out = _probed([_expand(a, {"exe": exe}) for a in resolve], exe)
    if out is None:
        return exe
    code, stdout, _ = out
    real = stdout.strip()
    return real if code == 0 and real and shutil.which(real) else exe


@cache
def _probe(executable, probe, expect):
    """The probe's regex match on the toolchain's version output, or None."""
    exe = shutil.which(executable)
    if exe is None:
        return None
    out = _probed([_expand(a, {"exe": exe}) for a in probe] or [exe, "--version"], exe)
    if out is None:
        return None
    _, stdout, stderr = out
    return re.search(expect, stdout + stderr) if expect else re.match("", "")


def _version_order(rt):
    return [int(p) if p.isdigit() else 0 for p in rt.version.split(".")]


# ---------------------------------------------------------------- the catalog


class Catalog:
    def __init__(self, path=None):
        self.path = Path(path or RUNTIMES_DIR / "catalog.yaml")
        self.entries = load(self.path)
        self._versions = {}  # runtime ID -> its Runtimes (probing toolchains is slow)

    def ids(self):
        return list(self.entries)

    def _runtime(self, entry, v, version, executable, expect):
        return Runtime(
            id=entry.id,
            version=version,
            server=entry.server,
            dep_name=entry.dep_name,
            suffix=entry.suffix,
            executable=executable,
            probe=v.probe,
            expect=expect,
            image=_expand(v.image, {"version": version}),
            resolve=v.resolve,
            process=entry.process,
            docker=entry.docker,
            isolations=entry.isolation,
        )

    def versions(self, runtime_id):
        """The catalog's versions of one ID. A fixed version takes the first candidate executable whose
        probe matches; an `auto` version adds one runtime per version the candidates report (versions
        listed explicitly win), or its `default` when none is found (the image brings that version)."""
        if runtime_id not in self._versions:
            self._versions[runtime_id] = self._find_versions(self.entries[runtime_id])
        return self._versions[runtime_id]

    def _find_versions(self, entry):
        fixed = {v.version for v in entry.versions if v.version != "auto"}
        found = []
        for v in entry.versions:
            if v.version != "auto":
                found.append(self._fixed(entry, v))
                continue
            tools = candidates(v.executable)
            seen: list[str] = []
            for tool in tools:
                match = _probe(tool, v.probe, v.expect)
                if match is None or not match.groups() or match.group(1) in fixed | set(seen):
                    continue
                seen.append(match.group(1))
                found.append(self._runtime(entry, v, match.group(1), tool, re.escape(match.group(0))))
            if not seen and v.default and v.default not in fixed:
                found.append(self._runtime(entry, v, v.default, v.executable[0], v.expect))
        return sorted(found, key=_version_order)

    def images(self, runtime_id):
        """The Runtimes of the versions the catalog lists for `runtime_id` with an image, oldest first: what the
        docker backend runs of it, known without probing this machine's toolchains (`versions` probes every
        candidate: a pyenv shim's probe is ~0.2 s, on every start)."""
        entry = self.entries[runtime_id]
        listed = [v for v in entry.versions if v.version != "auto" and v.image]
        found = [self._runtime(entry, v, v.version, v.executable[0], v.expect) for v in listed]
        return sorted(found, key=_version_order)

    def _fixed(self, entry, v):
        """The Runtime of a version the catalog lists: its first candidate executable whose probe matches."""
        exe = next((t for t in candidates(v.executable) if _probe(t, v.probe, v.expect) is not None), None)
        return self._runtime(entry, v, v.version, exe or v.executable[0], v.expect)

    def all(self):
        self._probe_all_at_once()
        return [rt for runtime_id in self.ids() for rt in self.versions(runtime_id)]

    def _probe_all_at_once(self):
        """Run every toolchain probe not made yet concurrently (each is a child process that mostly waits:
        ~1 s one after another for the whole catalog, a third of that at once); the results are cached,
        so versions() then reads them."""
        probes = {
            (tool, v.probe, v.expect)
            for runtime_id, entry in self.entries.items()
            if runtime_id not in self._versions
            for v in entry.versions
            for tool in candidates(v.executable)
        }
        if len(probes) > 1:
            from concurrent.futures import ThreadPoolExecutor  # (and logging): `runtime list`'s, not `run`'s

            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda args: _probe(*args), probes))

    def legacy(self, runtime_id):
        return list(self.entries[runtime_id].legacy)

    def debugger(self, runtime, image=""):
        """The debugger (`process.debug:`) that a Function with `runtime` (and its own `image`, if any) runs
        under with `dev --debug`; "" when it has none (a custom image's server is not known)."""
        match = RUNTIME_RE.match(runtime or "")
        if match is None or image or match.group(1) not in self.entries:
            return ""
        return self.entries[match.group(1)].process.debug

    def serves_metrics(self, runtime, image=""):
        """Whether the server of a Function with `runtime` (and its own `image`, if any) is known to answer
        /metrics: a runtime of this catalog in one of its images (ours, or Kubeless' own for that ID). A
        custom image's server is not known: it may route every path to the function, where asking for
        /metrics would be a call."""
        match = RUNTIME_RE.match(runtime or "")
        return match is not None and match.group(1) in self.entries and not image

    def resolve(self, runtime, *, require_local=True):
        """(Runtime, notice) for a runtime string; legacy versions map to the newest available one
        that both backends offer (one with an image), so a legacy string means the same everywhere."""
        match = RUNTIME_RE.match(runtime or "")
        if match and match.group(1) not in self.entries:
            declared = _declared(match.group(1), match.group(2), require_local)
            if declared is not None:
                return declared, None
        if not match or match.group(1) not in self.entries:
            raise NotFound(
                "unknown runtime %r; available: %s" % (runtime, ", ".join(rt.name for rt in self.all()) or "none"),
                "runtime",
                runtime,
            )
        runtime_id, version = match.groups()
        listed = next((v for v in self.entries[runtime_id].versions if v.version == version), None)
        if listed is not None and runtime_id not in self._versions:
            # A version the catalog lists is that entry's whatever else is installed (listed versions win over
            # `auto`): its own probe decides, not those of every other candidate (pyenv shims: ~0.5 s).
            rt = self._fixed(self.entries[runtime_id], listed)
            if not require_local or rt.available():
                return rt, None
        versions = self.versions(runtime_id)
        usable = [rt for rt in versions if rt.available()] if require_local else versions
        for rt in usable:
            if rt.version == version:
                return rt, None
        exact = [rt for rt in versions if rt.version == version]
        if exact:
            rt = exact[0]
            why = "not found" if not rt.executable_path() else "wrong version"
            others = ", ".join(r.name for r in usable) or "another runtime"
            if rt.image:
                instead = ", use %s, or run it with --backend docker (its image %s has it)" % (others, rt.image)
            else:
                instead = " or use %s" % others
            raise UserError("runtime %s needs `%s` on PATH (%s); install it%s" % (runtime, rt.executable, why, instead))
        if usable and (version in self.legacy(runtime_id) or not version):
            newest = ([rt for rt in usable if rt.image] or usable)[-1]
            return newest, "%s is a legacy Kubeless runtime; running it as %s" % (runtime, newest.name)
        raise UserError(
            "runtime %r is not available; %s versions here: %s"
            % (runtime, runtime_id, ", ".join(rt.name for rt in usable) or "none (toolchain missing)")
        )
