"""Which image runs a runtime, first match wins (as the Kubeless controller picks it, contract §3):
1. env `<ID><version>_RUNTIME` in upper case, e.g. `PYTHON3.11_RUNTIME=kubeless/python:3.8` (or, for
   shells, `PYTHON3_11_RUNTIME`);
2. a kubeless-config style `runtime-images` file: `$KUBELESS_LOCAL_RUNTIME_IMAGES`, else
   `~/.config/kubeless-local/runtime-images.json`; either the JSON list itself or a kubeless-config
   ConfigMap (YAML/JSON) whose `data.runtime-images` holds it; the `runtime` phase image of the
   matching ID + version, with that phase's env (an `installation` phase, if any, runs the install
   step: its image, command and env);
3. the catalog's `image` (built from `runtimes/<lang>/Dockerfile` by `kubeless-local runtime build`).
1 and 2 are looked up by the Function's own runtime ID and version (`python3.8`), before a legacy
version is mapped to our substitute (see override_for).
A runtime ID the catalog does not know may be declared in the runtime-images file alone (the Kubeless
docs' "use a custom runtime": `nodejsWithLodash` with its depName, fileNameSuffix and images): it runs in
the image of its runtime phase (declared_runtime).
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from kubeless_local.errors import UserError
from kubeless_local.runtimes import BackendBlock, Runtime

OWN_LABEL = "io.kubeless-local.runtime"  # our images carry it: /kubeless follows the current generation


def runtime_images_file():
    path = os.environ.get("KUBELESS_LOCAL_RUNTIME_IMAGES")
    if path:
        if not Path(path).is_file():
            raise UserError("KUBELESS_LOCAL_RUNTIME_IMAGES=%s: no such file" % path)
        return Path(path)
    default = (
        Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kubeless-local" / "runtime-images.json"
    )
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


@dataclass(frozen=True)
class Phase:
    """One `images` item of a runtime-images version: what the controller runs in that phase."""

    image: str
    command: str = ""  # run with `sh -c` (installation, compilation); "" for the runtime phase
    env: dict = field(default_factory=dict, hash=False)


def _get(obj, key):
    """obj[key] with keys matched case-insensitively, as the controller's ghodss/yaml parse does."""
    for k, v in (obj if isinstance(obj, dict) else {}).items():
        if isinstance(k, str) and k.lower() == key.lower():
            return v
    return None


def configured_phases(runtime_id, version, entries):
    """{phase: Phase} for ID + version from runtime-images entries."""
    for entry in entries:
        if not isinstance(entry, dict) or str(_get(entry, "ID") or "").lower() != runtime_id.lower():
            continue
        for v in _get(entry, "versions") or []:
            if str(_get(v, "version")) != version:
                continue
            phases = {}
            for item in _get(v, "images") or []:
                if _get(item, "phase") and _get(item, "image"):
                    env = _get(item, "env") or {}
                    phases[str(_get(item, "phase"))] = Phase(
                        str(_get(item, "image")),
                        str(_get(item, "command") or ""),
                        {str(k): str(val) for k, val in env.items()} if isinstance(env, dict) else {},
                    )
            return phases
    return {}


def configured_images(runtime_id, version, entries):
    """{phase: image} for ID + version from runtime-images entries."""
    return {name: phase.image for name, phase in configured_phases(runtime_id, version, entries).items()}


def declared_runtime(runtime_id, version):
    """(Runtime, the file declaring it) for an ID + version of the runtime-images file that has a runtime
    phase, run in that image as any image of another's (restarted on every change); None when the file
    declares none. The catalog asks this of an ID it does not know."""
    path = runtime_images_file()
    if path is None:
        return None
    entries = load_runtime_images(path)
    runtime = configured_phases(runtime_id, version, entries).get("runtime")
    if runtime is None:
        return None
    entry = next(e for e in entries if isinstance(e, dict) and str(_get(e, "ID") or "").lower() == runtime_id.lower())
    declared = Runtime(
        id=runtime_id,
        version=version,
        server="",
        dep_name=str(_get(entry, "depName") or ""),
        suffix=str(_get(entry, "fileNameSuffix") or ""),
        executable="",
        probe=(),
        expect="",
        image=runtime.image,
        docker=BackendBlock(reload="restart"),
        backend="docker",
    )
    return declared, path


@dataclass(frozen=True)
class ImageChoice:
    image: str  # "" when nothing offers one (a process-only runtime version)
    source: str  # "catalog", "env PYTHON3.11_RUNTIME", "<file>", "custom"
    install_image: str = ""  # an `installation` phase image from runtime-images, else the runtime image
    env: dict = field(default_factory=dict, hash=False)  # the runtime phase's env (runtime-images)
    install: Optional[Phase] = None  # the installation phase of the runtime-images entry in force

    @property
    def overridden(self):
        return self.source != "catalog"


def env_name(runtime):
    return override_env_name(runtime.id, runtime.version)


def override_env_name(runtime_id, version):
    return "%s%s_RUNTIME" % (runtime_id.upper(), version)


def override_for(runtime_id, version):
    """The image the user chose for ID + version (env, then the runtime-images file), or None. The env
    name has a dot (PYTHON3.11_RUNTIME), which bash and zsh cannot set (`env NAME=… cmd` can): the same
    name with `_` for `.` (PYTHON3_11_RUNTIME) works too; the controller's spelling wins."""
    name = override_env_name(runtime_id, version)
    for spelling in (name, name.replace(".", "_")):
        if os.environ.get(spelling):
            return ImageChoice(os.environ[spelling], "env " + spelling)
    path = runtime_images_file()
    if path is not None:
        phases = configured_phases(runtime_id, version, load_runtime_images(path))
        if "runtime" in phases:
            install = phases.get("installation")
            return ImageChoice(
                phases["runtime"].image, str(path), install.image if install else "", phases["runtime"].env, install
            )
    return None


def image_for(runtime):
    """Which image runs `runtime` (a runtimes.Runtime), with where that choice came from."""
    return override_for(runtime.id, runtime.version) or ImageChoice(runtime.image, "catalog")


def image_present(client, image):
    """The image, or None when the engine does not have it."""
    from docker.errors import ImageNotFound

    if not image:
        return None
    try:
        return client.images.get(image)
    except ImageNotFound:
        return None
