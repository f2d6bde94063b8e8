"""The gateway's ports (emulator/gateway.py): the default one in use (another project's `dev` holds it) moves to a
free one above it, said in a line; a port the user chose is that port or one line saying it is in use."""

import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from sockets import taken_port

from kubeless_local.emulator import gateway as gateways
from kubeless_local.emulator.logs import LogHub
from kubeless_local.errors import Conflict


def made(monkeypatch, port=None, default=None):
    logs = LogHub()
    if default is not None:
        monkeypatch.setattr(gateways, "DEFAULT_PORT", default)
    return gateways.Gateway(SimpleNamespace(recorder=None), logs, Path("."), port=port), logs


def said(logs):
    return [line.text for line in logs.tail(gateways.LOG_NAME)]


def test_the_default_port_in_use_moves_to_a_free_one_above_it(monkeypatch):
    with taken_port() as port:
        gateway, logs = made(monkeypatch, default=port)
        gateway.start()
        try:
            assert port < gateway.port <= port + gateways.MOVE_UP_TO
            (line,) = said(logs)
            assert re.fullmatch(
                r"127\.0\.0\.1:%d is in use by `.*` \(pid %d\): the HTTP routes are on port %d \(--gateway-port"
                r" chooses one\)" % (port, os.getpid(), gateway.port),
                line,
            ), line
        finally:
            gateway.stop()


def test_a_port_the_user_chose_is_that_port_or_a_conflict(monkeypatch):
    with taken_port() as port:
        gateway, logs = made(monkeypatch, port=port)
        with pytest.raises(Conflict, match="the HTTPTrigger gateway cannot listen on 127.0.0.1:%d" % port):
            gateway.start()
        gateway.stop()
        assert said(logs) == []
