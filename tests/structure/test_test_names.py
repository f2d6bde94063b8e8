"""Every test module has a file name of its own across tests/: pytest imports them by base name (rootdir
conftest style, no __init__.py), so two test_java.py in two folders stop the whole run at collection
("import file mismatch") — which only the full suite shows, never a run of one folder."""

import collections
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_file_name():
    places = collections.defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        if "fixtures" not in path.relative_to(TESTS).parts:  # inner projects' tests run in their own pytest
            places[path.name].append(str(path.relative_to(TESTS)))
    assert {name: where for name, where in places.items() if len(where) > 1} == {}
