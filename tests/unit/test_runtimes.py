import pytest

from kubeless_local.errors import UserError
from kubeless_local.runtimes import Catalog


def test_resolves_an_available_runtime():
    runtime, notice = Catalog().resolve("python3.11")
    assert (runtime.name, runtime.dep_name, runtime.suffix, notice) == ("python3.11", "requirements.txt", ".py", None)


def test_legacy_versions_map_to_the_newest_with_a_notice():
    runtime, notice = Catalog().resolve("python3.7")
    assert runtime.name == "python3.11"
    assert notice == "python3.7 is a legacy Kubeless runtime; running it as python3.11"


def test_unknown_runtime_is_a_user_error():
    with pytest.raises(UserError, match="unknown runtime 'cobol1'.*get-server-config"):
        Catalog().resolve("cobol1")


def test_unknown_version_names_the_available_ones():
    with pytest.raises(UserError, match="python versions here: python3.11"):
        Catalog().resolve("python9.9")


def test_auto_version_falls_back_to_the_default_without_a_toolchain(tmp_path):
    (tmp_path / "catalog.yaml").write_text("""
runtimes:
  go:
    server: go
    versions:
      - {version: auto, default: "1.26", executable: no-such-go-here, probe: ["{exe}", "version"], expect: "go(1\\\\.[0-9]+)"}
""")
    [runtime] = Catalog(tmp_path / "catalog.yaml").versions("go")
    assert runtime.name == "go1.26" and not runtime.available()  # the docker image brings it
    assert Catalog(tmp_path / "catalog.yaml").resolve("go1.26", require_local=False)[0].name == "go1.26"
    with pytest.raises(UserError, match="needs `no-such-go-here` on PATH"):
        Catalog(tmp_path / "catalog.yaml").resolve("go1.26")
