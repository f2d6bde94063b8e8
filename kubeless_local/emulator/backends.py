"""The backends by name, so the CLI can offer them without importing their dependencies up front."""
import importlib

BACKENDS = {
    "process": ("kubeless_local.emulator.process", "ProcessBackend"),
    "docker": ("kubeless_local.emulator.docker", "DockerBackend"),
}


def create(name, logs):
    module, cls = BACKENDS[name]
    backend = getattr(importlib.import_module(module), cls)(logs)
    backend.check()
    return backend
