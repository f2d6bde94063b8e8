"""kubeless-local: a local-first development emulator for Kubeless functions."""

from importlib.metadata import PackageNotFoundError, version

# The version lives in pyproject.toml only; an installed package reports it through its metadata.
try:
    __version__ = version("kubeless-local")
except PackageNotFoundError:  # a checkout on sys.path that was never installed
    __version__ = "0+unknown"
