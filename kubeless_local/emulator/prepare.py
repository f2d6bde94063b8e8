"""The controller's prepare/install/compile steps (contract §4), done on the local disk.

Each prepare writes a new generation folder laid out like the pod's /kubeless and points the
function's stable `kubeless` link at it only once it is good, so a running server never sees a
half-written tree. Dependencies are installed once per sha256 of the deps file (shared cache).
"""
import base64
import binascii
import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from kubeless_local.errors import UserError
from kubeless_local.paths import cache_dir
from kubeless_local.spec import SKIP_DIRS, FunctionSpec, sha256_hex

PLAIN_CONTENT_TYPES = ("", "text", "url", "base64")  # the file keeps MOD_NAME + suffix (contract §4)


class StepFailed(Exception):
    """An install or compile step failed; `output` is what the tool printed."""

    def __init__(self, step, output):
        super().__init__("%s failed" % step)
        self.step, self.output = step, output


@dataclass
class Prepared:
    spec: FunctionSpec
    runtime: object  # runtimes.Runtime
    root: Path  # <state>/functions/<name>
    generation: int
    code_dir: Path  # this generation's folder
    deps_dir: Path
    runtime_lib: Path
    build_dir: Path = None
    deps_hash: str = ""
    placeholders: dict = field(default_factory=dict)

    @property
    def install_link(self):
        return self.root / "kubeless"

    @property
    def build_link(self):
        return self.root / "build"

    def expand(self, argv, **overrides):
        values = {**self.placeholders, **overrides}
        return [str(a).format_map(values) for a in argv]

    def env(self, port, **placeholders):
        """The runtime server's env as a local process: the host's, then the container's (contract §4);
        `placeholders` override the prepared ones in the runtime's env (e.g. {deps} while installing)."""
        env = dict(os.environ)
        env["PIP_ROOT_USER_ACTION"] = "ignore"  # install steps as root (CI, containers) are expected
        env.update(function_env(self.spec, port, str(self.install_link)))
        values = {**self.placeholders, **placeholders}
        for key, value in (self.runtime.process.get("env") or {}).items():
            env[key] = str(value).format_map(values)
        return env

    def map_paths(self, text):
        """Point paths inside the install folder back at the user's files (in errors and logs)."""
        if self.spec.source is None or str(self.root) not in text:
            return text  # the common case, checked first: this runs for every log line
        for old, new in self._path_replacements():
            text = text.replace(old, new)
        return text

    def _path_replacements(self):
        if not hasattr(self, "_replacements"):
            source = self.spec.source
            base = source if source.is_dir() else source.parent
            function_file = str(source) if source.is_file() else str(base / (self.spec.module + self.runtime.suffix))
            self._replacements = []
            for folder in (self.code_dir, self.install_link, self.build_dir):
                if folder is not None:
                    self._replacements += [(str(folder) + "/" + self.spec.module + self.runtime.suffix, function_file),
                                           (str(folder) + "/", str(base) + "/")]
        return self._replacements


def function_env(spec: FunctionSpec, port, install):
    """The runtime container's env (contract §4): the user's env first, then Kubeless' own variables
    and kubeless-local's (bind to loopback, print control lines, isolation mode)."""
    env = dict(spec.env)
    env.update({
        "FUNC_HANDLER": spec.function_name,
        "MOD_NAME": spec.module,
        "FUNC_TIMEOUT": spec.timeout,
        "FUNC_RUNTIME": spec.runtime,
        "FUNC_MEMORY_LIMIT": spec.memory_limit,
        "FUNC_PORT": str(port),
        "KUBELESS_INSTALL_VOLUME": install,
        "KUBELESS_LOCAL_BIND": "127.0.0.1",
        "KUBELESS_LOCAL_CONTROL": "1",
        "KUBELESS_LOCAL_ISOLATION": spec.isolation,
    })
    return env


def run_step(step, argv, cwd, env, on_line):
    """Run an install/compile step, streaming its output; raise StepFailed with the output."""
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, errors="replace")
    except OSError as exc:
        raise StepFailed(step, "cannot run %s: %s" % (argv[0], exc)) from None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        on_line(line.rstrip("\n"))
    if proc.wait() != 0:
        raise StepFailed(step, "".join(lines).strip() or "%s exited with code %d" % (argv[0], proc.returncode))


class Locked:
    """An exclusive lock on a cache entry, shared between processes (flock)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path.with_name(path.name + ".lock")

    def __enter__(self):
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def cached_step(folder: Path, build):
    """Run build(folder) once: a `.complete` marker says a folder is usable; a failed one is redone."""
    marker = folder / ".complete"
    if marker.exists():
        return folder
    with Locked(folder):
        if marker.exists():
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        build(folder)
        marker.touch()
    return folder


# ---------------------------------------------------------------- code layout


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.read()
    except OSError as exc:
        raise UserError("cannot download %s (%s)" % (url, exc)) from None


def inline_artifact(spec: FunctionSpec):
    """The artifact bytes of an inline Function (after base64-decode or download), checksum-verified."""
    ctype = spec.content_type or "text"
    if "url" in ctype:
        data = fetch(spec.function)
    elif "base64" in ctype:
        try:
            data = base64.b64decode(spec.function, validate=False)
        except (binascii.Error, ValueError):
            raise UserError("%s: spec.function is not valid base64 (function-content-type %s)" % (spec.origin, ctype)) from None
    else:
        data = spec.function.encode()
    if spec.checksum:
        actual = "sha256:" + sha256_hex(data)
        if actual != spec.checksum:
            raise UserError("%s: spec.checksum %s does not match the code (%s); update the checksum or the code"
                            % (spec.origin, spec.checksum, actual))
    return data


def safe_extract(data, ctype, target: Path, origin):
    try:
        if "+zip" in ctype:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for member in archive.namelist():
                    dest = (target / member).resolve()
                    if not str(dest).startswith(str(target.resolve())):
                        raise UserError("%s: archive entry %s escapes the install folder" % (origin, member))
                archive.extractall(target)
        else:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
                archive.extractall(target, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError) as exc:
        raise UserError("%s: spec.function is not a valid %s archive (%s)" % (origin, ctype, exc)) from None


def copy_tree(source: Path, target: Path):
    for item in source.iterdir():
        if item.name in SKIP_DIRS or item.name.startswith("."):
            continue
        if item.is_dir():
            shutil.copytree(item, target / item.name, ignore=shutil.ignore_patterns(*SKIP_DIRS))
        else:
            shutil.copy2(item, target / item.name)


def layout_code(spec: FunctionSpec, runtime, target: Path):
    """Fill `target` as the prepare init container fills /kubeless; returns the deps file content."""
    ctype = spec.content_type or "text"
    deps = spec.deps
    if spec.source is not None:
        if spec.source.is_dir():
            copy_tree(spec.source, target)
        else:
            shutil.copy2(spec.source, target / (spec.module + runtime.suffix))
    elif spec.function:
        data = inline_artifact(spec)
        if "+zip" in ctype or "+compressedtar" in ctype:
            safe_extract(data, ctype, target, spec.origin)
        elif ctype in PLAIN_CONTENT_TYPES:
            (target / (spec.module + runtime.suffix)).write_bytes(data)
        else:
            (target / spec.module).write_bytes(data)
    if spec.deps_file is not None:
        deps = spec.deps_file.read_text()
    if runtime.dep_name:
        dep_path = target / runtime.dep_name
        if "+deps" in ctype or (spec.source is not None and spec.source.is_dir() and spec.deps_file is None and dep_path.exists()):
            deps = dep_path.read_text() if dep_path.exists() else ""
        elif deps.strip():
            # Kubeless copies even an empty deps file; Node 20 refuses to load code beside an empty
            # package.json (and the Go image deletes an empty go.mod), so an empty one is left out.
            dep_path.write_text(deps)
    return deps


# ---------------------------------------------------------------- the pipeline


def next_generation(root: Path):
    numbers = [int(p.name[4:]) for p in root.glob("gen-*") if p.name[4:].isdigit()]
    return max(numbers, default=0) + 1


def point(link: Path, target: Path):
    """Atomically point `link` at `target` (relative symlink, so it also works inside containers)."""
    tmp = link.with_name(link.name + ".tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target.name, tmp)
    os.replace(tmp, link)


def prune(root: Path, prefix: str, keep):
    keep = {p.name for p in keep if p is not None}
    for path in root.glob(prefix + "*"):
        if path.name not in keep and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def setup_runtime_lib(runtime, on_line):
    """The runtime server's own libraries, installed once per version of its setup inputs."""
    setup = runtime.process.get("setup")
    digest = hashlib.sha256(repr(setup).encode())
    for name in runtime.process.get("setup_inputs") or []:
        digest.update((runtime.runtime_dir / name).read_bytes())
    folder = cache_dir() / "runtime-lib" / runtime.name / digest.hexdigest()[:16]
    if not setup:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    values = {"exe": runtime.executable_path(), "version": runtime.version, "runtime_dir": str(runtime.runtime_dir)}

    def build(target):
        values["runtime_lib"] = str(target)
        on_line("setting up the %s runtime (once)" % runtime.name)
        env = dict(os.environ, PIP_ROOT_USER_ACTION="ignore")
        run_step("runtime setup", [str(a).format_map(values) for a in setup], target, env, on_line)

    return cached_step(folder, build)


def install_deps(prepared: Prepared, deps: str, on_line):
    runtime = prepared.runtime
    install = runtime.process.get("install")
    if not deps.strip() or not install:
        folder = cache_dir() / "deps" / runtime.name / "none"
        folder.mkdir(parents=True, exist_ok=True)
        return folder, ""
    digest = sha256_hex(deps.encode())
    folder = cache_dir() / "deps" / runtime.name / digest

    def build(target):
        deps_file = target / runtime.dep_name
        deps_file.write_text(deps)
        on_line("installing %s (sha256 %s…)" % (runtime.dep_name, digest[:12]))
        values = {"deps": str(target), "deps_file": str(deps_file)}
        env = prepared.env(0, **values)
        env.update({"KUBELESS_DEPS_FILE": str(deps_file), "KUBELESS_INSTALL_VOLUME": str(target)})
        run_step("dependency install", prepared.expand(install, **values), target, env, on_line)

    return cached_step(folder, build), digest


def prepare(spec: FunctionSpec, runtime, state_dir: Path, on_line=lambda line: None, previous=None):
    """Lay out a new generation of `spec`'s code, install deps, compile. Raises StepFailed/UserError.

    The stable `kubeless` link is NOT switched here: call `activate` once the code is known good.
    """
    root = state_dir / "functions" / spec.name
    root.mkdir(parents=True, exist_ok=True)
    generation = next_generation(root)
    code_dir = root / ("gen-%d" % generation)
    shutil.rmtree(code_dir, ignore_errors=True)
    code_dir.mkdir()
    deps = layout_code(spec, runtime, code_dir)
    runtime_lib = setup_runtime_lib(runtime, on_line)
    prepared = Prepared(spec=spec, runtime=runtime, root=root, generation=generation, code_dir=code_dir,
                        deps_dir=runtime_lib, runtime_lib=runtime_lib)
    prepared.placeholders = {
        "exe": runtime.executable_path() or runtime.executable, "version": runtime.version,
        "runtime_dir": str(runtime.runtime_dir), "install": str(prepared.install_link),
        "deps": "", "deps_file": str(prepared.install_link / runtime.dep_name),
        "file": str(prepared.install_link / (spec.module + runtime.suffix)), "module": spec.module,
        "handler": spec.function_name, "build": str(prepared.build_link), "runtime_lib": str(runtime_lib),
    }
    if previous is not None and previous.deps_hash == sha256_hex(deps.encode()) and deps.strip():
        prepared.deps_dir, prepared.deps_hash = previous.deps_dir, previous.deps_hash
    else:
        prepared.deps_dir, prepared.deps_hash = install_deps(prepared, deps, on_line)
    prepared.placeholders["deps"] = str(prepared.deps_dir)
    # Validate and compile against this generation's own folder, before anything serves it.
    here = {"install": str(code_dir), "file": str(code_dir / (spec.module + runtime.suffix))}
    check = runtime.process.get("check")
    if check:
        run_step("check", prepared.expand(check, **here), code_dir, prepared.env(0), on_line=lambda line: None)
    compile_argv = runtime.process.get("compile")
    if compile_argv:
        prepared.build_dir = root / ("build-%d" % generation)
        shutil.rmtree(prepared.build_dir, ignore_errors=True)
        prepared.build_dir.mkdir()
        env = prepared.env(0)
        env["KUBELESS_FUNC_NAME"] = spec.function_name
        env["KUBELESS_INSTALL_VOLUME"] = str(code_dir)
        compile_cached(prepared, (compile_argv, prepared.placeholders["exe"]), lambda: run_step(
            "compile", prepared.expand(compile_argv, build=str(prepared.build_dir), **here),
            prepared.build_dir, env, on_line=lambda line: None))
    return prepared


BUILDS_KEPT = 20  # cached builds per runtime; older ones are removed


def build_key(prepared, extra):
    """sha256 of everything a compile reads: the code, the deps and runtime libraries, the toolchain."""
    spec = prepared.spec
    digest = hashlib.sha256(repr((prepared.runtime.name, extra, str(prepared.deps_dir), str(prepared.runtime_lib),
                                  spec.module, spec.function_name)).encode())
    for path in sorted(prepared.code_dir.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(prepared.code_dir)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def compile_cached(prepared, extra, compile):
    """Run compile() into prepared.build_dir once per content; the same code again (a restart of `dev`,
    an undo) gets the cached output copied in instead. Returns True when it came from the cache."""
    folder = cache_dir() / "builds" / prepared.runtime.name / build_key(prepared, extra)
    if (folder / ".complete").exists():
        shutil.copytree(folder, prepared.build_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".complete"))
        os.utime(folder)  # recently used: kept longest
        return True
    compile()
    if not folder.exists():
        tmp = folder.with_name(folder.name + ".tmp-%d" % os.getpid())
        shutil.copytree(prepared.build_dir, tmp, symlinks=True)
        (tmp / ".complete").touch()
        try:
            os.rename(tmp, folder)
        except OSError:  # another process stored the same build meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
        builds = sorted((p for p in folder.parent.iterdir() if (p / ".complete").exists()),
                        key=lambda p: p.stat().st_mtime)
        for old in builds[:-BUILDS_KEPT]:
            shutil.rmtree(old, ignore_errors=True)
    return False


def activate(prepared: Prepared):
    """Point the stable links at this generation; remove generations older than the previous one."""
    point(prepared.install_link, prepared.code_dir)
    if prepared.build_dir is not None:
        point(prepared.build_link, prepared.build_dir)


def discard(prepared: Prepared):
    shutil.rmtree(prepared.code_dir, ignore_errors=True)
    if prepared.build_dir is not None:
        shutil.rmtree(prepared.build_dir, ignore_errors=True)


def prune_generations(current: Prepared):
    """Keep only the generation that serves now."""
    prune(current.root, "gen-", [current.code_dir])
    prune(current.root, "build-", [current.build_dir])
