"""Kept so that console scripts installed before `commands/` (`kubeless_local.cli:main`) still start."""

from kubeless_local.commands.root import main as main
