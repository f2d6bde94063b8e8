"""A Docker engine with a bridge network, for the tests of the docker backend's bridge mode: a second
`dockerd` (with a `containerd` of its own) in a named network namespace the test made itself
(`ip netns add`), so that its bridge's private addresses (docker0, 172.17.0.0/16) exist and are used only
inside that namespace, never from the host's. The host's engine (`--bridge=none`) is not touched.

Guarantees:
- Nothing outside temp folders: data root, exec root, pid files, sockets, logs and the daemon's config file
  live in one folder under the temp dir (no /etc/docker/daemon.json, no /var/lib/docker, nothing in the repo).
- The daemons run in the host's mount namespace and only in the private network namespace (`nsenter --net`;
  `ip netns exec` would give each a mount namespace of its own, and containerd must see the overlay mounts
  dockerd makes). `--iptables=false --ip-masq=false --ip-forward=false`: no rule and no sysctl changes;
  `-p 127.0.0.1:P:8080` is published by the userland proxy inside the namespace.
- Processes that talk to it (`kubeless-local dev`, the test's HTTP calls) run inside the namespace too, since
  127.0.0.1 there is not the host's: `prefix` for a command, `inside(fn)` for a call made by this process.
- `stop()` removes the containers, stops dockerd then containerd (SIGTERM, bounded wait, then SIGKILL),
  kills what is left in the namespace with its descendants (the containers' processes), unmounts what is
  left under the folder, deletes the namespace and the folder; every wait is bounded. A run killed before
  its stop is cleaned by the next start (namespace and folder carry the dead pid in their names).

    with private_engine(["kubeless-local/python:3.11"]) as engine:
        subprocess.run([*engine.prefix, "curl", ...], env=engine.env())
"""

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable, Optional

from waiting import wait_for

PREFIX = "kl-engine-"  # the namespace's and the folder's name: PREFIX + the pid of the process that made them
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
PREREQUISITES = {"ip": "iproute2", "nsenter": "util-linux", "dockerd": "docker.io", "containerd": "containerd"}

CONTAINERD_CONFIG = """\
version = 2
root = "{folder}/containerd/root"
state = "{folder}/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{folder}/containerd.sock"
[ttrpc]
  address = "{folder}/containerd/ttrpc.sock"
[debug]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{folder}/containerd/opt"
"""


def missing() -> Optional[str]:
    """One line naming the first missing prerequisite, or None."""
    if os.geteuid() != 0:
        return "a private Docker engine needs root (a network namespace, a second dockerd)"
    for tool, package in PREREQUISITES.items():
        if not shutil.which(tool):
            return "a private Docker engine needs %s (Debian package %s)" % (tool, package)
    return None


class PrivateEngine:
    """A dockerd in the network namespace `name`; `start()` returns once it answers."""

    def __init__(self, name: str, folder: Path) -> None:
        self.name = name
        self.folder = folder
        self.netns = NETNS_DIR / name
        self.docker_host = "unix://%s" % (folder / "docker.sock")
        self.prefix = ["nsenter", "--net=%s" % self.netns]  # runs a command inside the namespace
        self.daemons: dict[str, subprocess.Popen] = {}

    # ---- for the tests
    def env(self, **more: str) -> dict:
        """This process's env with DOCKER_HOST set to this engine (and `more`)."""
        return {**os.environ, "DOCKER_HOST": self.docker_host, **more}

    def run(self, argv: Sequence[str], timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess:
        """Run `argv` inside the namespace, against this engine, to completion (text output captured)."""
        kwargs.setdefault("env", self.env())
        return subprocess.run([*self.prefix, *argv], capture_output=True, text=True, timeout=timeout, **kwargs)

    def inside(self, fn: Callable[..., Any], *args: Any, timeout: float = 60, **kwargs: Any) -> Any:
        """fn(*args, **kwargs) in a thread of this process that joined the namespace (a thread's network
        namespace is its own): the sockets it opens are the namespace's. Its result, or its exception."""
        outcome: dict = {}

        def body() -> None:
            try:
                with open(self.netns) as ns:
                    if _libc().setns(ns.fileno(), CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns %s" % self.netns)
                outcome["value"] = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                outcome["error"] = exc

        thread = threading.Thread(target=body, daemon=True)
        thread.start()
        thread.join(timeout)
        assert not thread.is_alive(), "%r did not return within %ss inside %s" % (fn, timeout, self.name)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.docker_host, timeout=120)

    def load(self, images: Sequence[str]) -> None:
        """Copy images from the host's engine into this one (`docker save | docker load`)."""
        for image in images:
            save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            done = subprocess.run(
                ["docker", "load", "-q"], stdin=save.stdout, capture_output=True, text=True, env=self.env(), timeout=600
            )
            if save.stdout:
                save.stdout.close()
            saved = save.wait(60)
            if saved != 0 or done.returncode != 0:
                said = save.stderr.read().decode() if save.stderr else ""
                raise RuntimeError("copying %s into the private engine failed: %s%s" % (image, said, done.stderr))

    def log_tail(self, daemon: str, lines: int = 20) -> str:
        path = self.folder / ("%s.log" % daemon)
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return "%s:\n%s" % (path, "\n".join(text.splitlines()[-lines:]))

    # ---- start
    def start(self) -> "PrivateEngine":
        self.folder.mkdir(parents=True)
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True, timeout=30)
        subprocess.run([*self.prefix, "ip", "link", "set", "lo", "up"], check=True, capture_output=True, timeout=30)
        (self.folder / "containerd.toml").write_text(CONTAINERD_CONFIG.format(folder=self.folder))
        (self.folder / "daemon.json").write_text("{}\n")  # never the host's /etc/docker/daemon.json
        self._daemon("containerd", ["containerd", "--config", str(self.folder / "containerd.toml")])
        self._wait(lambda: (self.folder / "containerd.sock").exists(), "containerd")
        f = self.folder
        own = {"--config-file": "daemon.json", "--containerd": "containerd.sock", "--data-root": "data"}
        own.update({"--exec-root": "exec", "--pidfile": "dockerd.pid"})
        argv = ["dockerd", *(part for flag, path in own.items() for part in (flag, str(f / path)))]
        argv += ["-H", self.docker_host, "--iptables=false", "--ip-masq=false", "--ip-forward=false"]
        self._daemon("dockerd", argv)
        self._wait(self._answers, "dockerd")
        return self

    def _daemon(self, name: str, argv: list[str]) -> None:
        with open(self.folder / ("%s.log" % name), "wb") as log:
            self.daemons[name] = subprocess.Popen(
                [*self.prefix, *argv], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def _answers(self) -> bool:
        return subprocess.run(["docker", "info"], capture_output=True, env=self.env(), timeout=30).returncode == 0

    def _wait(self, predicate: Callable[[], bool], daemon: str) -> None:
        def up_or_gone() -> bool:
            return self.daemons[daemon].poll() is not None or predicate()

        if not wait_for(up_or_gone, START_TIMEOUT, interval=0.1) or self.daemons[daemon].poll() is not None:
            raise RuntimeError("%s of the private engine did not start: %s" % (daemon, self.log_tail(daemon)))

    # ---- stop
    def stop(self) -> None:
        """Containers, dockerd, containerd, what is left in the namespace, mounts, namespace, folder."""
        if "dockerd" in self.daemons and self.daemons["dockerd"].poll() is None:
            with contextlib.suppress(Exception):  # the daemons go anyway below
                ids = self.run(["docker", "ps", "-aq"], timeout=30).stdout.split()
                if ids:
                    self.run(["docker", "rm", "-f", *ids], timeout=60)
        for name in ("dockerd", "containerd"):
            process = self.daemons.get(name)
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(STOP_TIMEOUT)
        clean(self.name, self.folder)


# ------------------------------------------------------------------------------------ cleaning up
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _parents() -> dict[int, int]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    found[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    return found


def _in_namespace(netns: Path) -> set[int]:
    """Pids whose network namespace is `netns`."""
    try:
        target = os.stat(netns)
    except OSError:
        return set()
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ns = os.stat("/proc/%s/ns/net" % entry)
            except OSError:
                continue
            if (ns.st_dev, ns.st_ino) == (target.st_dev, target.st_ino):
                pids.add(int(entry))
    return pids


def kill_namespace(netns: Path) -> None:
    """SIGKILL every process in the namespace and every descendant of one (a container's processes have a
    namespace of their own, under a shim that is in this one); bounded wait until they are gone."""
    parents = _parents()
    tree = _in_namespace(netns)
    grew = True
    while grew:
        below = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= below
        grew = bool(below)
    tree.discard(os.getpid())
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(_alive(pid) for pid in tree), STOP_TIMEOUT, interval=0.05)


def _alive(pid: int) -> bool:
    """The process exists and is no zombie (a zombie of ours is gone for this purpose: its parent reaps it)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def unmount_below(folder: Path) -> None:
    """Lazily unmount every mount point under `folder`, deepest first (overlays, shm, the containers'
    namespace files), so that the folder can be removed."""
    root = str(folder.resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].replace("\\040", " ") for line in f]
    for point in sorted({p for p in points if p.startswith(root)}, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)


def remove_container_cgroups(folder: Path) -> None:
    """The cgroups (cgroupfs driver: /docker/<id> in each hierarchy) of containers killed with their engine;
    a container removed through the engine has none left."""
    ids = [p.name for p in (folder / "data" / "containers").glob("*")]
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        for container in ids:
            with contextlib.suppress(OSError):
                (hierarchy / "docker" / container).rmdir()


def clean(name: str, folder: Path) -> None:
    """Everything an engine named `name` in `folder` may have left."""
    netns = NETNS_DIR / name
    kill_namespace(netns)
    if folder.exists():
        unmount_below(folder)
        remove_container_cgroups(folder)
        shutil.rmtree(folder, ignore_errors=True)
    if netns.exists():
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


def clean_leftovers() -> None:
    """Namespaces and folders of engines whose test process was killed before it stopped them."""
    names = {p.name for p in NETNS_DIR.glob(PREFIX + "*")} | {
        p.name for p in Path(tempfile.gettempdir()).glob(PREFIX + "*")
    }
    for name in names:
        pid = name[len(PREFIX) :].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not Path("/proc", pid).exists():
            clean(name, Path(tempfile.gettempdir()) / name)


_count = iter(range(1, 10**6))


@contextlib.contextmanager
def private_engine(images: Sequence[str] = ()) -> Iterator[PrivateEngine]:
    """A started PrivateEngine holding `images` (copied from the host's engine), stopped afterwards."""
    problem = missing()
    if problem:
        raise RuntimeError(problem)  # CI installs everything: a missing tool fails the test, never skips it
    clean_leftovers()
    name = "%s%d-%d" % (PREFIX, os.getpid(), next(_count))
    engine = PrivateEngine(name, Path(tempfile.gettempdir()) / name)
    try:
        engine.start()
        engine.load(images)
        yield engine
    finally:
        engine.stop()


if __name__ == "__main__":  # a manual check: start one, print how to reach it, stop on Enter
    with private_engine() as started:
        print("DOCKER_HOST=%s %s docker ..." % (started.docker_host, " ".join(started.prefix)))
        input("Enter stops it ")
