"""Runtime images for the docker backend: which image a runtime uses, the engine, and building them.

Image of a runtime, first match wins (as the Kubeless controller picks it, contract §3):
  1. env `<ID><version>_RUNTIME` in upper case, e.g. `PYTHON3.11_RUNTIME=kubeless/python:3.8`;
  2. a kubeless-config style `runtime-images` file: `$KUBELESS_LOCAL_RUNTIME_IMAGES`, else
     `~/.config/kubeless-local/runtime-images.json`; either the JSON list itself or a kubeless-config
     ConfigMap (YAML/JSON) whose `data.runtime-images` holds it; the `runtime` phase image of the
     matching ID + version (an `installation` phase image, if any, runs the install step);
  3. the catalog's `image` (built from `runtimes/<lang>/Dockerfile` by `kubeless-local runtime build`).
"""
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from kubeless_local.errors import UserError
from kubeless_local.paths import RUNTIMES_DIR

BASE_IMAGE = "debian:bookworm-slim"
OWN_LABEL = "io.kubeless-local.runtime"  # our images carry it: /kubeless follows the current generation
CA_NAME = "kubeless-local-ca.crt"
CA_CANDIDATES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")
FIX = "use --backend process"


# ---------------------------------------------------------------- the engine


def docker_context_host(config_dir=None):
    """DOCKER_HOST of the current docker context (`docker context use`), or None."""
    config_dir = Path(config_dir or os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    name = os.environ.get("DOCKER_CONTEXT")
    if not name:
        try:
            name = json.loads((config_dir / "config.json").read_text()).get("currentContext")
        except (OSError, ValueError):
            name = None
    if not name or name == "default":
        return None
    meta = config_dir / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest() / "meta.json"
    try:
        return json.loads(meta.read_text())["Endpoints"]["docker"]["Host"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def engine_candidates():
    """Where to look for an engine, in order: DOCKER_HOST, the docker context, the default socket, Podman."""
    if os.environ.get("DOCKER_HOST"):
        return [os.environ["DOCKER_HOST"]]
    found = []
    context = docker_context_host()
    if context:
        found.append(context)
    found.append("unix:///var/run/docker.sock")
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or "/run/user/%d" % os.getuid()
    for sock in (os.path.join(runtime_dir, "podman", "podman.sock"), "/run/podman/podman.sock"):
        if os.path.exists(sock):
            found.append("unix://" + sock)
    return found


_clients = {}


def docker_client(required=True):
    """A connected docker SDK client, or UserError (None when not required) with the fix."""
    import docker
    from docker.errors import DockerException

    tried = []
    for url in engine_candidates():
        if url in _clients:
            return _clients[url]
        try:
            client = docker.DockerClient(base_url=url, timeout=120)
            client.ping()
        except (DockerException, OSError) as exc:
            tried.append("%s (%s)" % (url, str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__))
            continue
        _clients[url] = client
        return client
    if not required:
        return None
    raise UserError("no Docker engine answers (tried %s); start Docker (or set DOCKER_HOST) or %s"
                    % ("; ".join(tried), FIX))


# ---------------------------------------------------------------- which image


def runtime_images_file():
    path = os.environ.get("KUBELESS_LOCAL_RUNTIME_IMAGES")
    if path:
        if not Path(path).is_file():
            raise UserError("KUBELESS_LOCAL_RUNTIME_IMAGES=%s: no such file" % path)
        return Path(path)
    default = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kubeless-local" / "runtime-images.json"
    return default if default.is_file() else None


def load_runtime_images(path):
    """The `runtime-images` list from a JSON file or a kubeless-config ConfigMap."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError("%s: cannot read runtime-images (%s)" % (path, exc)) from None
    if isinstance(data, dict) and isinstance(data.get("data"), dict) and "runtime-images" in data["data"]:
        try:
            data = json.loads(data["data"]["runtime-images"])
        except ValueError as exc:
            raise UserError("%s: data.runtime-images is not JSON (%s)" % (path, exc)) from None
    if not isinstance(data, list):
        raise UserError("%s: runtime-images must be a JSON list of runtimes (kubeless-config format)" % path)
    return data


def configured_images(runtime_id, version, entries):
    """{phase: image} for ID + version from runtime-images entries (keys matched case-insensitively, as
    the controller's ghodss/yaml parse does)."""
    def get(obj, key):
        for k, v in (obj or {}).items():
            if isinstance(k, str) and k.lower() == key.lower():
                return v
        return None

    for entry in entries:
        if not isinstance(entry, dict) or str(get(entry, "ID") or "").lower() != runtime_id.lower():
            continue
        for v in get(entry, "versions") or []:
            if str(get(v, "version")) != version:
                continue
            phases = {}
            for image in get(v, "images") or []:
                if get(image, "phase") and get(image, "image"):
                    phases[str(get(image, "phase"))] = str(get(image, "image"))
            return phases
    return {}


@dataclass(frozen=True)
class ImageChoice:
    image: str
    source: str  # "catalog", "env PYTHON3.11_RUNTIME", "<file>"
    install_image: str = ""  # an `installation` phase image from runtime-images, else the runtime image

    @property
    def overridden(self):
        return self.source != "catalog"


def env_name(runtime):
    return "%s%s_RUNTIME" % (runtime.id.upper(), runtime.version)


def image_for(runtime):
    """Which image runs `runtime` (a runtimes.Runtime), with where that choice came from."""
    name = env_name(runtime)
    if os.environ.get(name):
        return ImageChoice(os.environ[name], "env " + name)
    path = runtime_images_file()
    if path is not None:
        phases = configured_images(runtime.id, runtime.version, load_runtime_images(path))
        if phases.get("runtime"):
            return ImageChoice(phases["runtime"], str(path), phases.get("installation", ""))
    return ImageChoice(runtime.image, "catalog")


def image_present(client, image):
    from docker.errors import ImageNotFound

    try:
        return client.images.get(image)
    except ImageNotFound:
        return None


# ---------------------------------------------------------------- building


def docker_settings(runtime, catalog):
    """The runtime's `docker:` block of the catalog ({} when it has none)."""
    return (catalog.entries.get(runtime.id) or {}).get("docker") or {}


def host_ca_bundle():
    """The host's CA bundle (what lets HTTPS through a TLS-intercepting proxy), or None."""
    for candidate in (os.environ.get("KUBELESS_LOCAL_CA_BUNDLE"), os.environ.get("SSL_CERT_FILE"), *CA_CANDIDATES):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def build_context(runtime, target: Path):
    """A temporary build context: runtimes/<server> (without installed modules) + the host CA bundle.
    The CA only ever lives in this temp folder and the Dockerfiles' fetch stages."""
    source = RUNTIMES_DIR / runtime.server
    if not (source / "Dockerfile").is_file():
        raise UserError("no Dockerfile for %s (%s); %s" % (runtime.name, source / "Dockerfile", FIX))
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("node_modules", ".git", "__pycache__", "*.pyc"),
                    dirs_exist_ok=True)
    ca = host_ca_bundle()
    (target / CA_NAME).write_bytes(Path(ca).read_bytes() if ca else b"")
    return target


SOURCE_LABEL = OWN_LABEL + ".source"  # sha256 of the runtime folder the image was built from
SOURCE_IGNORED = ("node_modules", ".git", "__pycache__")


def source_hash(runtime, catalog):
    """sha256 of what an image of `runtime` is built from: its runtime folder and build args."""
    digest = hashlib.sha256(repr(sorted(build_args(runtime, catalog).items())).encode())
    folder = RUNTIMES_DIR / runtime.server
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part in SOURCE_IGNORED for part in rel.parts) and path.suffix != ".pyc":
            digest.update(str(rel).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def is_stale(image, runtime, catalog):
    """True when one of our images was built from other runtime files than these (an upgrade, an edit)."""
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    return SOURCE_LABEL in labels and labels[SOURCE_LABEL] != source_hash(runtime, catalog)


def build_args(runtime, catalog):
    values = {"version": runtime.version}
    args = {k: str(v).format_map(values) for k, v in (docker_settings(runtime, catalog).get("build_args") or {}).items()}
    args["BASE"] = os.environ.get("KUBELESS_LOCAL_BASE_IMAGE", BASE_IMAGE)
    return args


def build_image(client, runtime, catalog, on_line=lambda line: None):
    """Build the runtime's catalog image; returns the image. Raises UserError with the failing step."""
    from docker.errors import APIError, BuildError

    tag = runtime.image
    base = build_args(runtime, catalog)["BASE"]
    if image_present(client, base) is None:
        raise UserError("the base image %s is missing and cannot be pulled here; create it (.ci/docker-setup.sh "
                        "does: debootstrap + docker import) or %s" % (base, FIX))
    with tempfile.TemporaryDirectory(prefix="kubeless-local-build-") as tmp:
        context = build_context(runtime, Path(tmp) / "context")
        lines = []
        try:
            stream = client.api.build(path=str(context), tag=tag, buildargs=build_args(runtime, catalog), rm=True,
                                      forcerm=True, network_mode="host", decode=True, pull=False,
                                      labels={OWN_LABEL + ".built": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                              SOURCE_LABEL: source_hash(runtime, catalog)})
            for chunk in stream:
                if "error" in chunk:
                    raise BuildError(chunk["error"].strip(), lines)
                text = chunk.get("stream") or chunk.get("status") or ""
                for line in text.splitlines():
                    if line.strip():
                        lines.append(line)
                        on_line(line)
        except BuildError as exc:
            tail = [line for line in lines[-15:]]
            raise UserError("building %s failed: %s\n%s\n(fix the Dockerfile / network, or %s)"
                            % (tag, str(exc.msg).splitlines()[-1] if str(exc.msg) else "error", "\n".join(tail), FIX)) from None
        except APIError as exc:
            raise UserError("building %s failed: %s; %s" % (tag, exc.explanation or exc, FIX)) from None
    return client.images.get(tag)


def build_images(runtimes, catalog, client=None, console=None):
    """Build several runtime images with a live progress display; returns [(runtime, seconds)]."""
    from rich.console import Console
    from rich.live import Live
    from rich.spinner import Spinner
    from rich.table import Table

    client = client or docker_client()
    console = console or Console()
    status = {rt.name: ("waiting", "") for rt in runtimes}
    started = {}

    def render():
        table = Table(box=None, show_header=False)
        for rt in runtimes:
            state, last = status[rt.name]
            icon = Spinner("dots") if state == "building" else {"done": "[green]✓", "failed": "[red]✗"}.get(state, " ")
            took = ""
            if rt.name in started:
                took = "%.0fs" % ((started[rt.name][1] or time.monotonic()) - started[rt.name][0])
            table.add_row(icon, rt.image, state, took, "[dim]" + last[:70])
        return table

    results = []
    with Live(render(), console=console, refresh_per_second=8, transient=not console.is_terminal) as live:
        for rt in runtimes:
            started[rt.name] = [time.monotonic(), None]
            status[rt.name] = ("building", "")

            def on_line(line, rt=rt):
                status[rt.name] = ("building", line.strip())
                live.update(render())

            try:
                build_image(client, rt, catalog, on_line)
            except UserError:
                status[rt.name] = ("failed", "")
                started[rt.name][1] = time.monotonic()
                live.update(render())
                raise
            started[rt.name][1] = time.monotonic()
            status[rt.name] = ("done", "")
            results.append((rt, started[rt.name][1] - started[rt.name][0]))
            live.update(render())
    return results


def image_rows(catalog, client=None):
    """What `runtime ls` shows: one row per catalog runtime."""
    rows = []
    for rt in catalog.all():
        choice = image_for(rt)
        image = image_present(client, choice.image) if client is not None else None
        rows.append({
            "runtime": rt.name, "image": choice.image, "source": choice.source, "present": image is not None,
            "stale": image is not None and not choice.overridden and is_stale(image, rt, catalog),
            "id": image.short_id.split(":")[-1] if image is not None else "",
            "size_mb": round(image.attrs.get("Size", 0) / 1e6) if image is not None else None,
            "created": (image.attrs.get("Created") or "")[:19] if image is not None else "",
        })
    return rows
