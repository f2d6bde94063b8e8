"""kubeless-local: a local-first development emulator for Kubeless functions."""

# The one place the version is written: the package build reads it from here (pyproject.toml, tool.hatch.version),
# and `--version` prints it without reading the installed package's metadata (~30 ms).
__version__ = "0.1.0"
