"""kubeless-local: a local-first development emulator for Kubeless functions."""

__version__ = "0.1.0"
