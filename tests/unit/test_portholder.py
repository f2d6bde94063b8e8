"""A "port in use" error names the process that listens there (Linux: /proc)."""

import json
import socket
import subprocess
import sys

from kubeless_local.emulator.portholder import held_by

HOLDER = """
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""


def test_the_process_listening_on_a_port_is_named():
    proc = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        said = held_by(port)
        assert said.startswith(" by `") and "python" in said and said.endswith("(pid %d)" % proc.pid), said
        assert "\n" not in said  # its script's lines: one line in the error
    finally:
        proc.communicate("", timeout=10)


def test_a_port_nobody_listens_on_names_nobody():
    with socket.socket() as sock:  # bound, not listening: a port no one holds for connections
        sock.bind(("127.0.0.1", 0))
        assert held_by(sock.getsockname()[1]) == ""


def test_a_long_command_line_is_cut():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        said = held_by(sock.getsockname()[1])  # this very process: pytest's long command line
    assert said.endswith("(pid %d)" % __import__("os").getpid()) and len(said) < 120, said


def test_a_kubeless_local_session_is_named_by_its_project(tmp_path, monkeypatch):
    # most often what holds a port a session wants: another project's `dev` (its gateway's, a function's)
    monkeypatch.setenv("KUBELESS_LOCAL_REGISTRY", str(tmp_path / "sessions"))
    proc = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        (tmp_path / "sessions").mkdir()
        entry = {"pid": proc.pid, "root": "/work/shop", "admin": "/work/shop/.kubeless-local/admin.json"}
        for kind, named in (("dev", "dev"), ("run-hello", "run hello")):
            (tmp_path / "sessions" / ("%d-1.json" % proc.pid)).write_text(json.dumps({**entry, "kind": kind}))
            assert held_by(port) == " by the kubeless-local %s of /work/shop (pid %d)" % (named, proc.pid)
    finally:
        proc.communicate("", timeout=10)
