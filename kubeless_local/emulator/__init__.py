"""The emulator engine: runs Functions locally. Never imports click or rich.

This is the engine's one import surface, for the CLI, a dashboard or a pytest plugin:

    from kubeless_local.emulator import DevSession, scaffold, backends, AdminClient, call_function

Names are imported on first use (PEP 562), so `kubeless-local --help` does not load watchdog or docker.
"""

import importlib

EXPORTS = {  # name → (module, attribute; None: the module itself)
    "DevSession": ("kubeless_local.emulator.session", "DevSession"),
    "Project": ("kubeless_local.emulator.project", "Project"),
    "Supervisor": ("kubeless_local.emulator.supervisor", "Supervisor"),
    "LogHub": ("kubeless_local.emulator.logs", "LogHub"),
    "scaffold": ("kubeless_local.emulator.scaffolding", "scaffold"),
    "backends": ("kubeless_local.emulator.backends", None),
    "images": ("kubeless_local.emulator.images", None),
    "Catalog": ("kubeless_local.runtimes", "Catalog"),
    "specs": ("kubeless_local.spec", None),
    "AdminClient": ("kubeless_local.client", "AdminClient"),  # talks to a running `dev`
    "call_function": ("kubeless_local.client", "call"),  # one event to a function, as Kubeless sends it
}
__all__ = sorted(EXPORTS)


def __getattr__(name):
    try:
        module, attribute = EXPORTS[name]
    except KeyError:
        raise AttributeError("module %r has no attribute %r" % (__name__, name)) from None
    value = importlib.import_module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(EXPORTS))
