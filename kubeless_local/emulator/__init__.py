"""The emulator engine: runs Functions locally. Never imports click."""
