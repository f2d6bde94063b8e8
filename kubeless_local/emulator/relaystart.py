"""The docker backend's head start (relay mode): a plain `run`'s relay container, sent to the engine from the hint the
last `run` of that function left, while the rest of `run` is imported.

A relay container (docker/network.py) owns the network namespace its function's container joins; starting it was
the longest wait of a docker `run` (~170 ms: the engine makes a namespace), and it came after ~250 ms of imports (the
CLI, the engine, the docker SDK). `run`'s first step (commands/entry.py) reads the hint (`expect`); the session sends
it (`send`) as soon as it holds the state folder and its guardian runs (~100 ms after exec), over the engine's unix
socket with `_socket` alone, from a thread; docker/backend.py takes it (`take`) where it would create one, if it is
the relay it would create now (the same engine, name and config), and removes it otherwise.

Guarantee: no relay sent here outlives its `run`. The guardian is told to remove the project's containers before it
is sent (a `kill -9` of `run` included: a container created and never started is not auto-removed, so nothing short
of that would do); one that nobody takes is removed when `run` ends (`atexit`), and a relay's connector exits, its
container with it, when `run` no longer holds its lifeline (connector.py).

A hint is a small text file (NUL-separated) per `run` state folder, in the user's cache beside prestart.py's; it is
read only if it is the user's own and no one else can write it (what it holds is sent to the engine).
"""

from __future__ import annotations  # annotations unevaluated: typing is not imported

import _socket
import _thread
import atexit
import os
import zlib
from _collections_abc import Callable  # loaded with os already; collections.abc would load collections

from kubeless_local.emulator.prestart import HINTS, installation, read_fields, write_fields
from kubeless_local.places import cache_root

KIND = "relay"
FOLDER = "/{door}"  # in a hint's config: where the relay's socket folder goes
DOORS = "doors"  # <state>/doors/<function>.<random>/: a relay's socket folder (0700)
TIMEOUT = 30.0  # seconds an engine request may take
RUN_PREFIX = "run-"  # `run`'s state folders (prestart.run_folders): the only ones a hint is kept for
HINTS_KEPT = 100  # relay hints kept (a file per function folder run in docker): the oldest go beyond

_early: Early | None = None  # the relay `expect` read (and `send` sent), until taken


class Early:
    """A relay container for the engine (`expect`), sent by `send`: once `wait` returns, `id` and `folder` (its
    socket folder) when it was created and started, or `error` (a line) when not."""

    def __init__(self, state_dir: str, url: str, prefix: str, config: str) -> None:
        self.state_dir, self.url, self.prefix, self.config = state_dir, url, prefix, config
        self.name = prefix + os.urandom(4).hex()  # as a spare relay's (no generation is known yet)
        self.id = self.folder = self.error = ""
        self.sending = False
        self._done = _thread.allocate_lock()
        self._done.acquire()

    def wait(self) -> None:
        """Until its requests are answered (each within TIMEOUT); at once if it was not sent."""
        if self.sending:
            with self._done:
                pass

    def send(self) -> None:
        try:
            self.folder = _socket_folder(self.state_dir)
            import json  # not at the first step, which only reads the hint

            config = self.config.replace(json.dumps(FOLDER)[1:-1], json.dumps(self.folder)[1:-1])
            status, body = _request(self.url, "/containers/create?name=" + self.name, config.encode())
            if status != 201:
                raise OSError("create: %d %s" % (status, body[:200].decode(errors="replace")))
            self.id = json.loads(body)["Id"]
            status, body = _request(self.url, "/containers/%s/start" % self.id)
            if status not in (204, 304):
                raise OSError("start: %d %s" % (status, body[:200].decode(errors="replace")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.error = str(exc) or type(exc).__name__
        finally:
            self._done.release()

    def remove(self) -> None:
        """Remove its container and socket folder (it was not taken, or not wanted)."""
        self.wait()
        if self.id:
            try:
                _request(self.url, "/containers/%s?force=1" % self.id, method="DELETE")
            except OSError:
                pass  # its connector exits within a minute without a lifeline all the same
        if self.folder:
            import shutil

            shutil.rmtree(self.folder, ignore_errors=True)


def expect(state_dir: str) -> None:
    """At `run`'s first step: read the hint of the relay the last `run` with the resolved state folder `state_dir`
    created (for this engine); `send` sends it once the session holds the folder."""
    global _early
    hint = read_hint(state_dir)
    if hint is None or _early is not None:
        return
    url, prefix, config = hint
    _early = Early(state_dir, url, prefix, config)


def send(state_dir: str, before: Callable[[], object]) -> None:
    """Send the relay `expect` read for `state_dir`, created and started in a thread of its own, after `before()`
    (the session's guardian told to remove the project's containers if it dies: kill -9 included). Once."""
    early = _early
    if early is None or early.state_dir != state_dir or early.sending:
        return
    before()
    early.sending = True
    atexit.register(drop)
    _thread.start_new_thread(early.send, ())


def take(state_dir: str) -> Early | None:
    """The relay `send` sent for `state_dir`, once its requests are answered, now the caller's; or None."""
    global _early
    early = _early
    if early is None or early.state_dir != state_dir or not early.sending:
        return None
    _early = None
    early.wait()
    return early


def sent(state_dir: str) -> Early | None:
    """The relay `send` sent for `state_dir`, once its requests are answered, still to be taken; or None."""
    early = _early
    if early is None or early.state_dir != state_dir or not early.sending:
        return None
    early.wait()
    return early


def drop() -> None:
    """Remove the relay `send` sent, if no one took it."""
    early = take(_early.state_dir) if _early is not None else None
    if early is not None:
        early.remove()


def hint_path(state_dir: str) -> str:
    key = zlib.crc32(os.fsencode("%s\0%s\0%s" % (KIND, state_dir, installation())))
    return os.path.join(cache_root(), HINTS, "%s-%08x" % (KIND, key))


def read_hint(state_dir: str) -> tuple[str, str, str] | None:
    """(engine URL, relay name without its random part, config) of the relay the last `run` of `state_dir` created,
    unless DOCKER_HOST changed since; None without one (or one someone else could have written)."""
    fields = read_fields(hint_path(state_dir), private=True)
    if fields is None or len(fields) != 7:
        return None
    if fields[:4] != [KIND, installation(), state_dir, os.environ.get("DOCKER_HOST", "")]:
        return None
    url, prefix, config = fields[4:]
    if not url.startswith("unix://") or not prefix or not all(c.isalnum() or c in "-_." for c in prefix):
        return None
    return url, prefix, config


def kept_for(state_dir: str) -> bool:
    """Whether a hint is kept for the session of `state_dir`: a `run`'s (only `run`'s first step reads them)."""
    return os.path.basename(state_dir).startswith(RUN_PREFIX)


def write_hint(state_dir: str, url: str, prefix: str, config: str) -> None:
    """Keep the relay a `run` created (its config with FOLDER for its socket folder), for the next `run`'s
    head start; atomically, private to the user. Nothing for another session's state folder (`dev`)."""
    if not kept_for(state_dir) or not url.startswith("unix://"):
        return
    path = hint_path(state_dir)
    fields = [KIND, installation(), state_dir, os.environ.get("DOCKER_HOST", ""), url, prefix, config]
    if write_fields(path, fields, 0o600):  # unwritable: no head start then
        _prune(os.path.dirname(path))


def _prune(folder: str) -> None:
    """Keep the HINTS_KEPT newest relay hints in `folder` (a file per function folder ever run in docker)."""
    try:
        hints = [entry for entry in os.scandir(folder) if entry.name.startswith(KIND + "-")]
        hints.sort(key=lambda entry: entry.stat().st_mtime, reverse=True)
        for entry in hints[HINTS_KEPT:]:
            os.unlink(entry.path)
    except OSError:  # removed meanwhile (another `run` pruning too)
        pass


def _socket_folder(state_dir: str) -> str:
    """A fresh private folder for the relay's sockets, as the backend makes one (tempfile's mkdtemp, without it)."""
    doors = os.path.join(state_dir, DOORS)
    os.makedirs(doors, mode=0o700, exist_ok=True)
    for _ in range(10):
        folder = os.path.join(
            doors, "%s.%s" % (os.path.basename(state_dir)[len(RUN_PREFIX) :][:20], os.urandom(4).hex())
        )
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            continue
        return folder
    raise FileExistsError("no free name for a socket folder in %s" % doors)


def _request(url: str, target: str, body: bytes = b"", method: str = "POST") -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.0 request to the engine at `url` (unix://PATH). OSError when it cannot be sent
    or read."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(TIMEOUT)
        sock.connect(url[len("unix://") :])
        head = "%s %s HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        sock.sendall((head % (method, target, len(body))).encode() + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    finally:
        sock.close()
    status_line, _, rest = b"".join(chunks).partition(b"\r\n")
    try:
        return int(status_line.split(b" ", 2)[1]), rest.partition(b"\r\n\r\n")[2]
    except (IndexError, ValueError):
        raise OSError("not an HTTP answer from the engine at %s" % url) from None
