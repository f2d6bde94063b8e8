"""A function folder as real projects have them (issue J.7): symbolic links, FIFOs, sockets. `dev`
keeps serving and says what it left out; `push` sends what `dev` lays out and never a file from
outside the project."""

import base64
import io
import json
import os
import socket
import time
import zipfile

import pytest
from conftest import cli, wait_for_answer
from test_cli import read_ls

MANIFEST = """\
apiVersion: kubeless.io/v1beta1
kind: Function
metadata:
  name: odd
  annotations: {local.kubeless.io/source: fn}
spec: {runtime: python3.11, handler: handler.hello}
"""

HANDLER = """\
import os

from shared.util import WORD


def hello(event, context):
    return "%s %s:" % (WORD, MARK) + ",".join(sorted(os.listdir(".")))
"""


def odd_project(tmp_path):
    project = tmp_path / "p"
    (project / "fn").mkdir(parents=True)
    (project / "shared").mkdir()
    (project / "shared" / "util.py").write_text("WORD = 'linked'\n")
    (project / "function.yaml").write_text(MANIFEST)
    fn = project / "fn"
    (fn / "handler.py").write_text(HANDLER.replace("MARK", "'v1'"))
    os.symlink("../shared", fn / "shared")  # inside the project: followed by dev and push
    os.symlink("/etc/passwd", fn / "passwd")  # leaves the project: refused
    os.symlink("nowhere.py", fn / "dangling.py")
    os.symlink("loop", fn / "loop")
    os.mkfifo(fn / "fifo")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(fn / "sock"))
    return project


@pytest.mark.parametrize("backend", os.environ.get("KUBELESS_LOCAL_TEST_BACKENDS", "process").split(","))
def test_dev_serves_a_folder_with_links_a_fifo_and_a_socket_and_push_sends_the_same(tmp_path, start_dev, backend):
    project = odd_project(tmp_path)
    dev = start_dev("dev", "--backend", backend, cwd=project)
    dev.wait_for_output("Watching", timeout=120)
    url = read_ls(project)["odd"]["url"]
    wait_for_answer(url, "linked v1:handler.py,shared")
    for name in ("passwd", "dangling.py", "loop", "fifo", "sock"):
        assert "fn/%s" % name in dev.output(), dev.output()
    assert "/etc/passwd, outside the project" in dev.output()

    # Every later save reloads (a FIFO once hung each one); the notices are not repeated.
    (project / "fn" / "handler.py").write_text(HANDLER.replace("MARK", "'v2'"))
    wait_for_answer(url, "linked v2:handler.py,shared", timeout=30)
    assert dev.output().count("fn/fifo") == 1
    # A file reached through a link inside the project is watched as the function's own.
    (project / "shared" / "util.py").write_text("WORD = 'relinked'\n")
    wait_for_answer(url, "relinked v2:handler.py,shared", timeout=30)
    assert dev.proc.poll() is None

    refused = cli("push", "--dry-run", cwd=project)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "fn/passwd is a symbolic link to /etc/passwd, outside the project" in refused.stderr
    assert "Traceback" not in refused.stderr

    (project / "fn" / "passwd").unlink()
    pushed = cli("push", "--dry-run", "-o", "json", cwd=project, check=True)
    function = json.loads(pushed.stdout)["items"][0]["spec"]["function"]
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(function))) as archive:
        assert sorted(archive.namelist()) == ["handler.py", "shared/util.py"]


def test_dev_whose_output_goes_to_a_file_in_its_folder_source_does_not_reload_at_each_line(tmp_path, start_dev):
    """`kubeless-local dev > dev.log 2>&1` in a project whose function's source is the folder: each line written
    to dev.log was a change of the code, its reload wrote a line, and so on without end."""
    (tmp_path / "handler.py").write_text("def hello(event, context):\n    return 'hello'\n")
    (tmp_path / "function.yaml").write_text(MANIFEST.replace("source: fn", "source: ."))
    dev = start_dev("dev", cwd=tmp_path, output="dev.log")
    dev.wait_for_output("Watching", timeout=120)
    wait_for_answer(read_ls(tmp_path)["odd"]["url"], "hello")
    assert "dev.log: where this kubeless-local writes its output: not code" in dev.output()
    for _ in range(3):  # lines written to dev.log meanwhile (the calls' access lines)
        assert cli("call", "odd", cwd=tmp_path, check=True).stdout.strip() == "hello"
    dev.wait_until(lambda: "127.0.0.1" in dev.output().rpartition("not code")[2], "the calls' access lines logged")
    time.sleep(1.0)  # DEBOUNCE is 0.03 s: a reload for the lines above would have started by then
    assert "change detected" not in dev.output(), dev.output()
