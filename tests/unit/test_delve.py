"""emulator/delve.py's cache of dlv, with a fake step runner in place of `go`: built once per Delve and
Go version, never half there, progress shown, one UserError line when Go or its proxy fails."""

import pytest

from kubeless_local.emulator import delve
from kubeless_local.emulator.prepare import StepFailed
from kubeless_local.errors import UserError


class FakeGo:
    """Answers `go env GOVERSION`, `go install` (writes GOBIN/dlv) and `go build` (the debug warm-up) as go
    does; records every command. `fail` names a subcommand that fails with `output`."""

    def __init__(self, version="go1.26.8", fail=None, output="", half=False):
        self.version, self.fail, self.output, self.half = version, fail, output, half
        self.calls: list[list[str]] = []

    def __call__(self, step, argv, cwd, env, on_line):
        self.calls.append(argv[1:])
        if argv[1] == self.fail:
            raise StepFailed(step, self.output)
        if argv[1:] == ["env", "GOVERSION"]:
            on_line(self.version)
        elif argv[1] == "install":
            on_line("go: downloading github.com/go-delve/delve %s" % delve.DELVE_VERSION)
            (cwd / "dlv").write_bytes(b"\x7fELF half" if self.half else b"\x7fELF whole")
            if self.half:
                raise KeyboardInterrupt  # killed while writing the binary

    def subcommands(self):
        return [call[0] for call in self.calls]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBELESS_LOCAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(delve.DLV_ENV, raising=False)  # a dlv of the user's own is its own test
    return tmp_path / "cache"


def test_built_once_into_the_cache_keyed_by_delve_and_go_version(cache):
    go, lines = FakeGo(), []
    binary = delve.dlv("go", lines.append, go)
    assert binary == cache / "delve" / ("%s-go1.26.8" % delve.DELVE_VERSION) / "dlv"
    assert binary.read_bytes() == b"\x7fELF whole"
    assert go.calls[1] == ["install", "github.com/go-delve/delve/cmd/dlv@" + delve.DELVE_VERSION]
    assert go.calls[2] == ["build", "-gcflags=all=-N -l", *delve.WARM_PACKAGES]
    assert lines[0].startswith("Building Delve") and "go: downloading" in lines[1]  # progress as it builds

    again = FakeGo()
    assert delve.dlv("go", lines.append, again) == binary
    assert again.subcommands() == ["env"]  # cached: nothing built

    newer = FakeGo(version="go1.27.0")
    assert delve.dlv("go", lines.append, newer).parent.name == "%s-go1.27.0" % delve.DELVE_VERSION
    assert "install" in newer.subcommands()
    assert sorted(p.name for p in (cache / "delve").iterdir() if p.is_dir()) == [
        "%s-go1.26.8" % delve.DELVE_VERSION,
        "%s-go1.27.0" % delve.DELVE_VERSION,
    ]  # no temporary folder left


def test_a_killed_build_leaves_no_binary_and_the_next_build_cleans_up(cache):
    with pytest.raises(KeyboardInterrupt):
        delve.dlv("go", run=FakeGo(half=True))
    entry = cache / "delve" / ("%s-go1.26.8" % delve.DELVE_VERSION)
    assert not (entry / "dlv").exists()
    # A build killed for good (SIGKILL: no cleanup ran) leaves its temporary folder and half binary.
    stale = entry.with_name(entry.name + delve.TMP_MARK + "999999")
    stale.mkdir()
    (stale / "dlv").write_bytes(b"\x7fELF half")
    assert not (entry / "dlv").exists()
    assert delve.dlv("go", run=FakeGo()).read_bytes() == b"\x7fELF whole"
    assert not stale.exists()


@pytest.mark.parametrize(
    "go, message",
    [
        (
            FakeGo(fail="env", output="cannot run go: [Errno 2] No such file or directory: 'go'"),
            "cannot debug Go functions: go does not run (cannot run go: [Errno 2] No such file or directory: 'go'):"
            " install Go or put it on PATH",
        ),
        (
            FakeGo(fail="install", output="go: downloading x\ndial tcp: lookup proxy: no such host\n"),
            "cannot build Delve (github.com/go-delve/delve/cmd/dlv@%s): dial tcp: lookup proxy: no such host;"
            " check that `go` reaches its module proxy (go env GOPROXY)" % delve.DELVE_VERSION,
        ),
        (FakeGo(version="devel"), "cannot debug Go functions: `go env GOVERSION` printed 'devel', not a Go version"),
    ],
    ids=["no-go", "no-proxy", "odd-version"],
)
def test_what_cannot_be_built_is_one_user_error_line_and_no_binary(cache, go, message):
    with pytest.raises(UserError) as raised:
        delve.dlv("go", run=go)
    assert str(raised.value) == message
    assert "\n" not in str(raised.value)
    assert not list(cache.glob("delve/*/dlv"))
    assert not list(cache.glob("delve/*" + delve.TMP_MARK + "*"))


def test_the_users_own_dlv_is_used_as_it_is(tmp_path, monkeypatch):
    own = tmp_path / "my-dlv"
    monkeypatch.setenv(delve.DLV_ENV, str(own))
    with pytest.raises(UserError) as raised:
        delve.dlv("go", run=FakeGo())
    assert str(raised.value) == "KUBELESS_LOCAL_DLV=%s: no such executable; unset it, and Delve is built for you" % own
    own.write_bytes(b"\x7fELF mine")
    own.chmod(0o755)
    go = FakeGo()
    assert delve.dlv("go", run=go) == own
    assert go.calls == []  # nothing built, not even Go asked
