"""Which image runs a runtime, first match wins (as the Kubeless controller picks it, contract §3):
1. env `<ID><version>_RUNTIME` in upper case, e.g. `PYTHON3.11_RUNTIME=kubeless/python:3.8`;
2. a kubeless-config style `runtime-images` file: `$KUBELESS_LOCAL_RUNTIME_IMAGES`, else
   `~/.config/kubeless-local/runtime-images.json`; either the JSON list itself or a kubeless-config
   ConfigMap (YAML/JSON) whose `data.runtime-images` holds it; the `runtime` phase image of the
   matching ID + version (an `installation` phase image, if any, runs the install step);
3. the catalog's `image` (built from `runtimes/<lang>/Dockerfile` by `kubeless-local runtime build`).
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from kubeless_local.errors import UserError

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
    image: str  # "" when nothing offers one (a process-only runtime version)
    source: str  # "catalog", "env PYTHON3.11_RUNTIME", "<file>", "custom"
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
    """The image, or None when the engine does not have it."""
    from docker.errors import ImageNotFound

    if not image:
        return None
    try:
        return client.images.get(image)
    except ImageNotFound:
        return None
