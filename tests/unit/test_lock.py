"""One `dev` per project, none inside a running project."""

import pytest

from kubeless_local.emulator.lock import ProjectLock, refuse_nested, running_above
from kubeless_local.errors import UserError


def test_a_second_lock_on_the_same_project_is_refused_until_released(tmp_path):
    first, second = ProjectLock(tmp_path), ProjectLock(tmp_path)
    first.acquire()
    with pytest.raises(UserError, match=r"already running for .* \(pid \d+\); stop it first"):
        second.acquire()
    first.release()
    second.acquire()
    second.release()


def test_a_stale_lock_file_does_not_block(tmp_path):
    (tmp_path / "lock").write_text("999999\n")  # left by a dev that was killed: the kernel dropped its lock
    lock = ProjectLock(tmp_path)
    lock.acquire()
    lock.release()


def test_a_folder_inside_a_running_project_is_refused(tmp_path):
    state = tmp_path / ".kubeless-local"
    state.mkdir()
    nested = tmp_path / "functions" / "one"
    nested.mkdir(parents=True)
    lock = ProjectLock(state)
    lock.acquire()
    try:
        assert running_above(nested)[0] == tmp_path
        with pytest.raises(UserError, match="is inside %s, which kubeless-local already runs" % tmp_path):
            refuse_nested(nested)
        refuse_nested(tmp_path)  # the project itself is the lock's business, not a nesting
    finally:
        lock.release()
    assert running_above(nested) is None
    refuse_nested(nested)
