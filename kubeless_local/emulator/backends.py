"""The backends by name, so the CLI can offer them without importing their dependencies up front."""

import importlib
from typing import TYPE_CHECKING, Any, Callable, Optional

from kubeless_local import config
from kubeless_local.emulator.base import Backend, BackendFactory, OnExit, ignore_exit

if TYPE_CHECKING:
    from kubeless_local.emulator.guardian import Guardian
    from kubeless_local.emulator.logs import LogHub
    from kubeless_local.emulator.recorder import Recorder

BACKENDS = {
    "process": ("kubeless_local.emulator.process", "ProcessBackend"),
    "docker": ("kubeless_local.emulator.docker", "DockerBackend"),
}
# the settings a backend is built with, as keyword arguments (its section of .kubeless-local.yaml)
SETTINGS: dict[str, Callable[[config.Settings], dict[str, Any]]] = {
    "docker": lambda settings: {"network": settings.docker.network},
}
CHOICES = list(config.BACKENDS)  # the names above and auto (see `choose`), as `backend:` in the settings takes them


def factory(name: str, settings: Optional[config.Settings] = None) -> BackendFactory:
    """The backend `name` as a BackendFactory, built with its part of `settings` (None: the defaults): what
    it builds is checked at once (UserError when it cannot run here, e.g. no Docker engine answers)."""
    module, cls = BACKENDS[name]
    backend_class = getattr(importlib.import_module(module), cls)
    options = SETTINGS[name](settings) if settings is not None and name in SETTINGS else {}

    def create(
        logs: "LogHub",
        *,
        on_exit: OnExit = ignore_exit,
        guardian: Optional["Guardian"] = None,
        recorder: Optional["Recorder"] = None,
    ) -> Backend:
        backend: Backend = backend_class(logs, on_exit=on_exit, guardian=guardian, recorder=recorder, **options)
        backend.check()
        return backend

    return create


def needed_images(functions):
    """(images, runtimes without one): the images a set of FunctionSpecs runs in under the docker
    backend, and the runtime versions that have none (found only on this machine). Unknown runtimes
    are skipped."""
    from kubeless_local.emulator import images
    from kubeless_local.errors import UserError
    from kubeless_local.runtimes import Catalog

    catalog, needed, without = Catalog(), set(), set()
    for fn in functions:
        if fn.image:
            needed.add(fn.image)
            continue
        try:
            runtime, _ = catalog.resolve(fn.runtime, require_local=False)
        except UserError:
            continue
        image = images.image_for(runtime).image
        if image:
            needed.add(image)
        else:
            without.add(runtime.name)
    return sorted(needed), sorted(without)


def choose(name, functions, say):
    """`auto` → docker when an engine answers and every image the functions need exists, else process;
    says which and why. Other names are returned as they are."""
    if name != "auto":
        return name
    from kubeless_local.emulator import images

    needed, without = needed_images(functions)
    if without:
        say("backend: process (%s has no runtime image)" % ", ".join(without))
        return "process"
    client = images.docker_client(required=False)
    if client is None:
        say("backend: process (no Docker engine answers)")
        return "process"
    missing = [image for image in needed if images.image_present(client, image) is None]
    if missing:
        say("backend: process (image %s not present; `kubeless-local runtime build` makes it)" % ", ".join(missing))
        return "process"
    say("backend: docker (engine %s, images present)" % client.api.base_url)
    return "docker"


def server_config(catalog, client=None):
    """What `get-server-config` shows: per runtime of the catalog, whether this machine runs it as a
    process (its toolchain is here), whether its image is present (docker; client None: no engine),
    which image, and the legacy versions it also accepts."""
    from kubeless_local.emulator import images

    images_by_runtime = {row["runtime"]: row for row in images.image_rows(catalog, client)}
    # legacy versions run as the newest version that has an image (see Catalog.resolve)
    legacy_target = {
        rid: ([rt for rt in catalog.versions(rid) if rt.image] or catalog.versions(rid))[-1].name
        for rid in catalog.ids()
        if catalog.versions(rid)
    }
    return [
        {
            "runtime": rt.name,
            "process": rt.available(),
            "docker": images_by_runtime[rt.name]["present"],
            "image": images_by_runtime[rt.name]["image"],
            "legacy": ", ".join(rt.id + v for v in catalog.legacy(rt.id)) if legacy_target[rt.id] == rt.name else "",
        }
        for rt in catalog.all()
    ]
