"""Every test module has a file name of its own across tests/: pytest imports them by base name (rootdir
conftest style, no __init__.py), so two test_java.py in two folders stop the whole run at collection
("import file mismatch") — which only the full suite shows, never a run of one folder. For the same reason
a test imports tests/support's modules by their own names (tests/conftest.py puts the folder on sys.path):
`tests.support.x` is found only where the checkout itself is on sys.path, not in CI's tox environments."""

import collections
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_file_name():
    places = collections.defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        if "fixtures" not in path.relative_to(TESTS).parts:  # inner projects' tests run in their own pytest
            places[path.name].append(str(path.relative_to(TESTS)))
    assert {name: where for name, where in places.items() if len(where) > 1} == {}


def test_support_modules_are_imported_by_their_own_names():
    through_package = re.compile(r"^\s*(from|import)\s+tests[.\s]", re.M)
    found = [
        str(path.relative_to(TESTS))
        for path in TESTS.rglob("*.py")
        if "fixtures" not in path.relative_to(TESTS).parts and through_package.search(path.read_text())
    ]
    assert found == []
