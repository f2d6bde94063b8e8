"""One walker decides what of a source folder is code, for `dev` (layout) and `push` (render) alike
(issue J.7, M.6): links inside the project are followed, links leaving it refused, and what is not a
regular file or folder is skipped with a reason instead of stopping (or hanging) everything."""

import base64
import io
import os
import socket
import threading
import zipfile
from pathlib import Path

import pytest
from test_render import PY, project, round_trip
from waiting import wait_for

from kubeless_local.emulator import layout
from kubeless_local.errors import UserError


def make_socket(path: Path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))  # the socket file stays after close


@pytest.fixture
def odd_tree(tmp_path):
    """A project whose function folder holds every kind of odd entry next to its code."""
    src = tmp_path / "fn"
    (src / "pkg").mkdir(parents=True)
    (src / "handler.py").write_text("def hello(event, context):\n    return 'ok'\n")
    (src / "pkg" / "mod.py").write_text("X = 1\n")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "util.py").write_text("Y = 2\n")
    (tmp_path / "notes.txt").write_text("inside the project\n")
    os.symlink("../shared", src / "shared")  # a folder inside the project
    os.symlink("../notes.txt", src / "notes.txt")  # a file inside the project
    os.symlink("/etc/passwd", src / "passwd")  # leaves the project
    os.symlink("/etc", src / "etc")  # a folder that leaves the project
    os.symlink("missing.py", src / "dangling.py")
    os.symlink("loop", src / "loop")  # a link to itself
    os.symlink("..", src / "pkg" / "up")  # a folder link to its own parent: an endless tree
    os.mkfifo(src / "fifo")
    make_socket(src / "sock")
    return tmp_path


def test_links_inside_the_project_are_followed_and_odd_entries_skipped(odd_tree):
    found = layout.code_files(odd_tree / "fn", odd_tree)
    assert [rel for rel, _ in found.files] == [
        "handler.py",
        "notes.txt",
        "pkg/mod.py",
        "shared/util.py",
    ]
    assert dict(found.outside) == {"etc": Path("/etc"), "passwd": Path("/etc/passwd")}
    skipped = dict(found.skipped)
    assert set(skipped) == {"dangling.py", "loop", "pkg/up", "fifo", "sock"}
    assert "broken symbolic link" in skipped["dangling.py"]
    assert "loop" in skipped["loop"] and "loop" in skipped["pkg/up"]
    assert "FIFO" in skipped["fifo"] and "socket" in skipped["sock"]


def test_the_boundary_defaults_to_the_source_folder(odd_tree):
    found = layout.code_files(odd_tree / "fn")
    assert {"shared", "notes.txt", "passwd", "etc"} <= set(dict(found.outside))


def test_dev_lays_out_what_push_sends_and_says_what_it_left_out(odd_tree):
    root = odd_tree
    fn = project(root, "odd", "fn")
    lines: list = []
    target = root / "gen"
    target.mkdir()
    done = threading.Event()  # a FIFO must not block the layout: run it where a hang is seen
    worker = threading.Thread(target=lambda: (layout.layout_code(fn, PY, target, lines.append), done.set()))
    worker.daemon = True
    worker.start()
    assert done.wait(30), "layout_code hung on the folder's FIFO"
    laid_out = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert laid_out == ["handler.py", "notes.txt", "pkg/mod.py", "shared/util.py"]
    text = "\n".join(lines)
    for name in ("passwd", "etc", "dangling.py", "loop", "pkg/up", "fifo", "sock"):
        assert "fn/%s" % name in text, text
    assert "outside the project" in text


def test_push_refuses_a_link_that_leaves_the_project(odd_tree):
    root = odd_tree
    with pytest.raises(UserError, match=r"fn/etc is a symbolic link to /etc, outside the project"):
        round_trip(root, project(root, "odd", "fn"))


def test_push_and_dev_agree_on_a_symlinked_sub_folder(tmp_path):
    """The M.6 case: a symlinked sub-folder was laid out by dev and silently left out by push."""
    src = tmp_path / "fn"
    src.mkdir()
    (src / "handler.py").write_text("from lib.util import Y\n")
    (tmp_path / "libsrc").mkdir()
    (tmp_path / "libsrc" / "util.py").write_text("Y = 2\n")
    os.symlink("../libsrc", src / "lib")
    _, local, pushed = round_trip(tmp_path, project(tmp_path, "linked", "fn"))
    assert local == pushed
    assert set(pushed[0]) == {"handler.py", "lib/util.py"}


def test_function_deploy_from_a_folder_uses_the_same_walker(odd_tree):
    from kubeless_local import kubeless_objects

    with pytest.raises(UserError, match=r"fn/etc is a symbolic link to /etc, outside the project"):
        kubeless_objects.read_code(str(odd_tree / "fn"))
    for name in ("etc", "passwd", "shared", "notes.txt"):
        (odd_tree / "fn" / name).unlink()
    function, ctype, _ = kubeless_objects.read_code(str(odd_tree / "fn"))
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(function))) as archive:
        assert (ctype, sorted(archive.namelist())) == ("base64+zip", ["handler.py", "pkg/mod.py"])


def test_the_projects_secrets_and_configmaps_are_never_code_nor_pushed(tmp_path):
    """A function whose source is the project folder: its secrets/ (and configmaps/) were laid out with the code,
    and `push` zipped a secret's keys into the Function. A folder so named inside the code stays code."""
    from kubeless_local.cluster.render import zip_folder

    for rel in ("handler.py", "secrets/db/password", "configmaps/flags/level", "lib/secrets/util.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    found = layout.code_files(tmp_path, tmp_path)
    assert [rel for rel, _ in found.files] == ["handler.py", "lib/secrets/util.py"]
    assert [rel for rel, _ in found.skipped] == ["configmaps", "secrets"]
    assert "the project's secrets: not code" in "\n".join(found.notices(tmp_path))
    assert zipfile.ZipFile(io.BytesIO(zip_folder(tmp_path, tmp_path))).namelist() == [
        "handler.py",
        "lib/secrets/util.py",
    ]
    assert [rel for rel, _ in layout.code_files(tmp_path / "lib", tmp_path).files] == ["secrets/util.py"]


def test_the_file_this_process_writes_its_output_to_is_not_code(tmp_path):
    """`dev > dev.log` in the function's folder: the log is where its lines go, never code (each line would be
    a change to reload)."""
    (tmp_path / "handler.py").write_text("")
    saved = os.dup(1)
    try:
        with open(tmp_path / "dev.log", "w") as log:
            os.dup2(log.fileno(), 1)
            found = layout.code_files(tmp_path)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    assert [rel for rel, _ in found.files] == ["handler.py"]
    assert found.skipped == [("dev.log", layout.OWN_OUTPUT)]


def test_a_python_virtual_environment_by_any_name_is_not_code_nor_walked_for_manifests(tmp_path):
    """`python -m venv env` in the function's folder: 1,500 files laid out at every save and zipped by `push`,
    as venv/ and .venv/ never were; the manifest scan and the watcher walked its site-packages too."""
    from kubeless_local import spec as specs

    (tmp_path / "handler.py").write_text("")
    (tmp_path / "env" / "lib" / "site-packages" / "pkg").mkdir(parents=True)
    (tmp_path / "env" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (tmp_path / "env" / "lib" / "site-packages" / "pkg" / "data.yaml").write_text("kind: Function\n")
    (tmp_path / "environment").mkdir()  # a folder of code whose name only looks like one
    (tmp_path / "environment" / "settings.py").write_text("")
    found = layout.code_files(tmp_path)
    assert [rel for rel, _ in found.files] == ["environment/settings.py", "handler.py"]
    assert found.skipped == [("env", specs.VIRTUALENV)]
    walked = specs.Ignore().walk(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in walked] == ["environment/settings.py", "handler.py"]


def test_the_file_the_reader_of_this_process_output_writes_is_not_code(tmp_path):
    """`dev 2>&1 | tee dev.log` in the function's folder: tee writes the log, dev's output goes into a pipe."""
    import subprocess

    (tmp_path / "handler.py").write_text("")
    read_end, write_end = os.pipe()
    tee = subprocess.Popen(["tee", str(tmp_path / "dev.log")], stdin=read_end, stdout=subprocess.DEVNULL)
    os.close(read_end)
    assert wait_for(lambda: (tmp_path / "dev.log").exists(), 10)  # tee has it open
    saved = os.dup(1)
    try:
        os.dup2(write_end, 1)
        found = layout.code_files(tmp_path)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(write_end)
        tee.wait(timeout=10)
    assert [rel for rel, _ in found.files] == ["handler.py"]
    assert found.skipped == [("dev.log", layout.OWN_OUTPUT)]
