"""kubeless-local: a local-first development emulator for Kubeless functions."""


def __getattr__(name):
    """`__version__`, read on first use: the version lives in pyproject.toml only, and an installed package
    reports it through its metadata. Lazily, so importing the package costs nothing (the pytest plugin is
    imported by every pytest run where kubeless-local is installed)."""
    if name != "__version__":
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("kubeless-local")
    except PackageNotFoundError:  # a checkout on sys.path that was never installed
        value = "0+unknown"
    globals()["__version__"] = value
    return value
