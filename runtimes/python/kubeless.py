"""Kubeless Python runtime server (contract §5), built for a fast local loop.

Legacy Kubeless ran every call in a freshly forked process (~100 req/s). Here an asyncio front
process keeps /healthz and /metrics and a pool of warm worker processes forked from it. A worker
imports the user's module once and runs calls through a real bottle app, so
`event['extensions']['request']` is a bottle request and return values/exceptions become responses
exactly as bottle renders them.

A client connection goes to an idle worker (its descriptor passed over a unix socket), which reads,
calls and answers on it itself: one process hop per call, as in a bare server. The server keeps a
copy of the connection and a shared-memory slot per worker (the call that runs, since when), and a
worker that overruns FUNC_TIMEOUT is killed (SIGKILL: no CPU burnt afterwards) and replaced; the
server answers the caller 408 on its copy. When more connections are busy than there are cores, or
no worker is idle, the server reads the connection itself and hands each call to a worker in a frame.
The pool keeps MIN_WORKERS warm, grows to CHERRYPY_NUMTHREADS under load and shrinks back after
IDLE_SECONDS; a call takes the idle worker that served last (its module state is warm).

Working folder: KUBELESS_INSTALL_VOLUME (as /kubeless in the pod), entered again by every worker
before it loads the code, since the engine swaps the folder behind that path on each reload.

Module state: a warm worker keeps module globals between calls (as AWS Lambda does); with
KUBELESS_LOCAL_ISOLATION=per-call every call runs in a worker that has just imported the module,
so changes made during a call are lost, as in legacy Kubeless.

SIGHUP reloads the module: a probe worker imports the new code; on success the pool is replaced,
on failure the error is printed and the last good code keeps serving.
"""

import array
import asyncio
import bisect
import collections
import ctypes
import functools
import gc
import io
import json
import mmap
import os
import pickle
import select
import signal
import socket
import struct
import sys
import time
import traceback
from urllib.parse import unquote_to_bytes

import bottle
import httptools

INSTALL_DIR = os.environ.get("KUBELESS_INSTALL_VOLUME", "/kubeless")
MOD_NAME = os.environ.get("MOD_NAME", "")
FUNC_HANDLER = os.environ.get("FUNC_HANDLER", "")
TIMEOUT = float(os.environ.get("FUNC_TIMEOUT", "180") or "180")
PORT = int(os.environ.get("FUNC_PORT", "8080"))
BIND = os.environ.get("KUBELESS_LOCAL_BIND", "0.0.0.0")
MEMFILE_MAX = int(os.environ.get("FUNC_MEMFILE_MAX", str(100 * 1024 * 1024)))
CONTROL = os.environ.get("KUBELESS_LOCAL_CONTROL") == "1"
PER_CALL = os.environ.get("KUBELESS_LOCAL_ISOLATION", "warm") == "per-call"
# Warm workers kept ready: one. A worker answers a connection itself (no hand-off to keep busy), the pool
# grows within GROW_AFTER for calls that wait, and an idle function costs two processes, not five.
MIN_WORKERS = int(os.environ.get("KUBELESS_LOCAL_WORKERS") or 1)
MAX_WORKERS = int(os.environ.get("CHERRYPY_NUMTHREADS", "10"))  # Kubeless' concurrency knob
MIN_WORKERS = min(MIN_WORKERS, MAX_WORKERS)
# dev --debug: debugpy listens on 127.0.0.1:DEBUG_PORT in the one worker that serves the calls, so the next
# call stops at a breakpoint (a second call waits for it); module state stays warm between calls.
DEBUG_PORT = int(os.environ.get("KUBELESS_LOCAL_DEBUG_PORT") or 0)
if DEBUG_PORT:
    MIN_WORKERS = MAX_WORKERS = 1
    if PER_CALL:  # a fresh worker per call would drop the debugger's connection after every call
        print("isolation per-call is not applied while debugging: module state stays warm", file=sys.stderr)
        PER_CALL = False
GROW_AFTER = 0.02  # seconds a call waits for a worker before the pool grows
IDLE_SECONDS = 10.0  # a worker idle this long retires (down to MIN_WORKERS)
FUNCTION_METHODS = ("GET", "POST", "PATCH", "DELETE")  # as the legacy bottle route; HEAD follows GET
BIG_BODY = 8 << 20  # after a call with a request body this big, memory goes back to the OS (release_memory)

FRAME = struct.Struct("!I")
# A client connection goes to an idle worker that reads and answers it itself (one process hop per call,
# as a bare server); not with per-call isolation or a debugger, whose calls go through the server.
DIRECT = not PER_CALL and not DEBUG_PORT
# Workers answering connections themselves, at most: one per core. Past that many busy connections a worker
# per connection costs more wake-ups than the server's loop, which reads many requests per turn and answers
# many per turn, with calls in frames to the workers.
DIRECT_WORKERS = os.cpu_count() or 1
BUSY_SECONDS = 1.0  # a connection read by the server with a call this recent keeps the others read there too
LABELS = FUNCTION_METHODS  # a call's metrics label (HEAD counts as GET)
# The code generation that serves, shared by the server with every worker it forks: a worker of another
# generation gives its client connections back before it reads another request from them.
SERVING = mmap.mmap(-1, mmap.PAGESIZE)
GENERATION = struct.Struct("=Q")

CONTEXT = {
    "function-name": None,  # filled with func.__name__ once loaded
    "timeout": TIMEOUT,
    "runtime": os.environ.get("FUNC_RUNTIME"),
    "memory-limit": os.environ.get("FUNC_MEMORY_LIMIT"),
}


def enter_install_dir():
    """Make the code folder the working folder, as /kubeless is in the pod. The engine swaps the
    folder behind this path on reload (and deletes old ones), and a cwd is resolved when entered:
    so enter it again before each load."""
    try:
        os.chdir(INSTALL_DIR)
    except OSError:
        os.chdir("/")


def control(event, **fields):
    if CONTROL:
        print("@kubeless-local " + json.dumps({"event": event, **fields}), flush=True)


def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc: freed memory is returned as that allocator does


MALLOC_TRIM = _malloc_trim()


def release_memory():
    """Give freed memory back to the OS. A big body is read in many chunks: once freed, glibc keeps
    the holes they leave in its heap, so a process stays as big as its biggest request until told."""
    gc.collect()
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


def report_load_failure(generation, error):
    """Under kubeless-local the engine shows the error (once); standalone it goes to stderr."""
    if CONTROL:
        control("load-failed", generation=generation, error=error)
    else:
        print(error, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- worker process


CO_ASYNC = 0x80 | 0x200  # a code object's flags: CO_COROUTINE (async def), CO_ASYNC_GENERATOR
CO_GENERATOR = 0x20


class LoadError(Exception):
    """The module loaded but does not fit spec.handler: the message says it all (no traceback)."""


def load_function():
    if MOD_NAME == "_kubeless":
        raise ImportError("MOD_NAME may not be _kubeless")
    # The pod's runtime is /_kubeless.py, alone in its folder; this one's folder holds kubeless.py and template.py,
    # which a function's own module of that name must not be (it is first on sys.path, as a script's folder is).
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [entry for entry in sys.path if not entry or os.path.abspath(entry) != here]
    if INSTALL_DIR not in sys.path:
        sys.path.append(INSTALL_DIR)
    import importlib

    if "/" in MOD_NAME:  # a file in a folder of the function (handler src/handler.hello): Kubeless loads it by path
        module = load_file(MOD_NAME.rpartition("/")[2], os.path.join(INSTALL_DIR, MOD_NAME + ".py"))
    else:
        module = importlib.import_module(MOD_NAME)
    where = getattr(module, "__file__", MOD_NAME)
    try:
        func = getattr(module, FUNC_HANDLER)
    except AttributeError:
        raise LoadError(
            "%s has no function %r (spec.handler is %s.%s)" % (where, FUNC_HANDLER, MOD_NAME, FUNC_HANDLER)
        ) from None
    # Kubeless runs a call in a process of its own and sends its result back pickled: a coroutine or a generator
    # cannot be, so every call of such a handler times out in the pod (here bottle would answer it: said at load)
    flags = getattr(getattr(func, "__code__", None), "co_flags", 0)
    if flags & CO_ASYNC:
        raise LoadError(
            "%s: %s is an async def, which Kubeless' Python runtime calls without awaiting: make it a plain def"
            " (asyncio.run() inside it runs async work)" % (where, FUNC_HANDLER)
        )
    if flags & CO_GENERATOR:
        raise LoadError(
            "%s: %s is a generator (it yields), whose result Kubeless' Python runtime cannot send back from the"
            " process that ran the call: return the whole body" % (where, FUNC_HANDLER)
        )
    return func


def load_file(name, path):
    """The module of a Python file, imported as `name` (its file name); ModuleNotFoundError when there is none."""
    import importlib.util

    if not os.path.isfile(path):
        raise ModuleNotFoundError("No module named %r: there is no %s" % (MOD_NAME, path), name=MOD_NAME)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def start_debugger():
    """debugpy's adapter in this process: its port closes with the worker (a new server listens on it again)."""
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # its warning about frozen stdlib modules
    import debugpy  # noqa: T100 - the debugger `dev --debug` asked for, not a leftover breakpoint

    host = os.environ.get("KUBELESS_LOCAL_DEBUG_HOST") or "127.0.0.1"  # 0.0.0.0: a bridge-mode container's own
    try:
        debugpy.listen((host, DEBUG_PORT), in_process_debug_adapter=True)  # noqa: T100 - as above
    except Exception as exc:  # noqa: BLE001 - whatever debugpy raises, the function cannot be debugged
        raise LoadError("the debugger cannot listen on %s:%d: %s" % (host, DEBUG_PORT, exc)) from None


def load_error_text():
    """The last exception as the user should see it: a headline with file:line and the exception
    line (what `ls` shows), then the traceback."""
    etype, value, tb = sys.exc_info()
    # A file that cannot be read as source (null bytes: an archive copied as the module) has no file
    # name; Python < 3.11.4 raises ValueError for it, later versions SyntaxError.
    unreadable = isinstance(value, ValueError) and "null bytes" in str(value)
    if isinstance(value, SyntaxError) or unreadable:
        filename = getattr(value, "filename", None) or os.path.join(INSTALL_DIR, MOD_NAME + ".py")
        lineno = getattr(value, "lineno", None)
        where = "%s:%s" % (filename, lineno) if lineno else filename
        detail = "".join(traceback.format_exception_only(etype, value)).rstrip()
        return "%s: %s\n%s" % (where, getattr(value, "msg", None) or str(value), detail)
    if isinstance(value, LoadError):
        return str(value)
    frames = [f for f in traceback.extract_tb(tb) if f.filename.startswith(INSTALL_DIR)]
    where = "%s:%s: " % (frames[-1].filename, frames[-1].lineno) if frames else ""
    headline = traceback.format_exception_only(etype, value)[-1].rstrip()
    return where + headline + "\n" + "".join(traceback.format_exception(etype, value, tb)).rstrip()


def build_app(func):
    """A bottle app that calls `func` as legacy Kubeless did; records whether the call counted."""
    app = bottle.Bottle(catchall=True)
    outcome = {}

    @app.route("/<:re:.*>", method=list(FUNCTION_METHODS))
    def function():
        req = bottle.request
        data = req.body.read()
        environ = req.environ
        if header(environ, "CONTENT_TYPE") == "application/json":
            try:
                data = json.loads(data) if data else None
            except ValueError:  # the caller's mistake, not the function's: 400, not counted
                return bottle.HTTPError(400, "Invalid JSON in the request body")
        event = {
            "data": data,
            "event-id": header(environ, "HTTP_EVENT_ID"),
            "event-type": header(environ, "HTTP_EVENT_TYPE"),
            "event-time": header(environ, "HTTP_EVENT_TIME"),
            "event-namespace": header(environ, "HTTP_EVENT_NAMESPACE"),
            "extensions": {"request": bottle.BaseRequest(environ)},
        }
        outcome["counted"] = True
        try:
            result = func(event, CONTEXT)
        except bottle.HTTPResponse:
            raise
        except Exception:
            outcome["failed"] = True
            raise
        return to_bottle(result)

    return app, outcome


def header(environ, key):
    """A request header by its environ key, as bottle's `request.get_header` gives it (read as UTF-8), without
    bottle's five lookups per header."""
    value = environ.get(key)
    return None if value is None else value.encode("latin1").decode("utf8")


def to_bottle(result):
    """(body, status[, headers]) tuples set the status, as Flask-era Kubeless handlers did."""
    if isinstance(result, tuple) and 2 <= len(result) <= 3 and isinstance(result[1], int):
        body, status = result[0], result[1]
        headers = result[2] if len(result) == 3 else None
        if isinstance(body, dict):
            body, headers = json.dumps(body), {"Content-Type": "application/json", **(headers or {})}
        return bottle.HTTPResponse(body, status=status, headers=headers)
    return result


def environ_for(method, url, headers, body, version, peer):
    path, _, query = url.partition(b"?")
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "SERVER_NAME": "localhost",
        "SERVER_PORT": str(PORT),
        "SERVER_PROTOCOL": "HTTP/" + version,
        "REMOTE_ADDR": peer,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    keys = ENVIRON_KEYS
    for name, value in headers:
        key = keys.get(name)
        if key is None:
            key = environ_key(name)
        if not key:
            continue
        value = value.decode("latin-1")
        if key == "CONTENT_TYPE" or key not in environ:
            environ[key] = value
        else:
            environ[key] += "," + value
    return environ


ENVIRON_KEYS = {}  # header name as received -> its environ key ("": not passed on); names seen again cost a lookup
MAX_ENVIRON_KEYS = 4096  # names remembered, at most (a client inventing names costs memory no further)


def environ_key(name):
    """The WSGI environ key of a header name (bytes), "" for one bottle must not see: the body is whole (httptools
    de-chunked it), so its length and transfer coding are not passed on."""
    key = name.decode("latin-1").upper().replace("-", "_")
    if key in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
        key = ""
    elif key != "CONTENT_TYPE":
        key = "HTTP_" + key
    if len(ENVIRON_KEYS) < MAX_ENVIRON_KEYS:
        ENVIRON_KEYS[name] = key
    return key


def call_app(app, outcome, request):
    outcome.clear()
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"], captured["headers"] = status, headers

    chunks = app(environ_for(*request), start_response)
    try:
        body = b"".join(chunks)
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
    return (
        "response",
        captured["status"],
        captured["headers"],
        body,
        outcome.get("counted", False),
        outcome.get("failed", False),
    )


def send_frame(sock, message):
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(FRAME.pack(len(payload)) + payload)


def read_exact(sock, size):
    """`size` bytes from a blocking socket, or fewer when it closes first."""
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(size - len(data), 1 << 20))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def failed_call(outcome):
    """The reply for a function that raised past bottle (it lives on; the caller gets a 500)."""
    traceback.print_exc()
    return (
        "response",
        "500 Internal Server Error",
        [("Content-Type", "text/plain")],
        b"Internal Server Error",
        outcome.get("counted", False),
        True,
    )


def run_call(app, outcome, request):
    try:
        reply = call_app(app, outcome, request)
    except BaseException:  # noqa: BLE001 - the function's failure becomes a 500, the worker lives on
        reply = failed_call(outcome)
    sys.stdout.flush()
    sys.stderr.flush()
    return reply


def after_big_call():
    """After a call with a big body (the caller dropped its own references to it)."""
    bottle.request.bind({})  # bottle keeps the last request's environ (and body) bound
    release_memory()


def worker_main(sock, ctl, slot, generation):
    """Runs in a forked child: load the function, then serve calls until the server goes."""
    try:  # die with the server even if it is SIGKILLed
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    enter_install_dir()  # relative reads see the code this worker loads
    try:
        func = load_function()
        if DEBUG_PORT:
            start_debugger()
    except BaseException:  # noqa: BLE001 - any failure to load (SystemExit too) is a load error to report
        send_frame(sock, ("load-failed", load_error_text()))
        return
    CONTEXT["function-name"] = getattr(func, "__name__", FUNC_HANDLER)
    app, outcome = build_app(func)
    if DIRECT:
        sys.stdout = OrderedOutput(sys.stdout, slot)
    send_frame(sock, ("ready", generation))
    WorkerLoop(sock, ctl, slot, app, outcome, generation).run()


# prometheus_client's Histogram.DEFAULT_BUCKETS (tests/conformance/test_python.py checks a call lands in its bucket):
# the workers count calls per bucket before prometheus_client is loaded
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, float("inf"))


def prometheus():
    """prometheus_client, loaded by the first /metrics (or call) that needs it: a server's start does not wait
    ~15 ms for it. The template loads it once it has forked its first server, for the servers it forks next."""
    import prometheus_client

    return prometheus_client


class Slot:
    """Memory the server shares with one worker, written by the worker, so that a call it reads itself costs
    no message to the server: whether a call runs, since when (or when the last one ended), and what the server
    needs to answer it 408 (connection, method, URL, version, peer, keep-alive, label); the calls it answered
    (counts the server adds to its metrics); its access-log lines not written yet (the server writes them if
    it kills the worker)."""

    CALL = struct.Struct("=QdI")  # calls begun + ended (odd: one runs), its start or the last end, size of the line
    LOG_SIZE = struct.Struct("=I")  # bytes of log lines waiting, at LOG_SIZE_AT
    LOG_SIZE_AT, COUNTS_AT, LINE_AT, LOG_AT = 20, 64, 1024, 64 << 10
    SIZE = 1 << 20
    PER_LABEL = 3 + len(BUCKETS)  # calls, failures, seconds, then a count per bucket

    def __init__(self):
        self.map = mmap.mmap(-1, self.SIZE)  # shared: the forked worker writes these same pages
        self.counts = memoryview(self.map)[self.COUNTS_AT : self.COUNTS_AT + 8 * self.PER_LABEL * len(LABELS)]
        self.counts = self.counts.cast("d")
        self.count = 0
        self.log_size = 0
        self.log_since = 0.0

    # the worker's side

    def begin(self, line):
        data = pickle.dumps(line, protocol=pickle.HIGHEST_PROTOCOL)
        self.map[self.LINE_AT : self.LINE_AT + len(data)] = data
        self.count += 1
        self.CALL.pack_into(self.map, 0, self.count, time.monotonic(), len(data))

    def end(self, label, counted, failed, seconds):
        if counted:
            base = LABELS.index(label) * self.PER_LABEL
            counts = self.counts
            counts[base] += 1
            counts[base + 1] += failed
            counts[base + 2] += seconds
            counts[base + 3 + bisect.bisect_left(BUCKETS, seconds)] += 1
        self.count += 1
        self.CALL.pack_into(self.map, 0, self.count, time.monotonic(), 0)

    def log(self, text):
        """An access-log line, written with the next ones within LOG_DELAY (flush_log)."""
        data = text.encode("utf-8", "backslashreplace")
        if self.log_size + len(data) > self.SIZE - self.LOG_AT:
            self.flush_log()
        if len(data) > self.SIZE - self.LOG_AT:
            write_out(data)
            return
        if not self.log_size:
            self.log_since = time.monotonic()
        self.map[self.LOG_AT + self.log_size : self.LOG_AT + self.log_size + len(data)] = data
        self.log_size += len(data)
        self.LOG_SIZE.pack_into(self.map, self.LOG_SIZE_AT, self.log_size)

    def flush_log(self):
        if self.log_size:
            write_out(self.map[self.LOG_AT : self.LOG_AT + self.log_size])
            self.log_size = 0
            self.LOG_SIZE.pack_into(self.map, self.LOG_SIZE_AT, 0)

    # the server's side

    def running(self):
        """(start, line) of the call that runs now, or None."""
        count, start, size = self.CALL.unpack_from(self.map)
        if count % 2 == 0:
            return None
        try:
            return start, pickle.loads(self.map[self.LINE_AT : self.LINE_AT + size])
        except Exception:  # noqa: BLE001 - read while the worker wrote it: that call has only just begun
            return None

    def last_end(self):
        """When its last call ended (0.0 before the first), or None while one runs."""
        count, when, _ = self.CALL.unpack_from(self.map)
        return None if count % 2 else when

    def pending_log(self):
        size = self.LOG_SIZE.unpack_from(self.map, self.LOG_SIZE_AT)[0]
        return self.map[self.LOG_AT : self.LOG_AT + size]


LOG_DELAY = 0.05  # seconds a worker's access-log line may wait to go out with the next ones


def write_out(data):
    """Bytes to stdout after whatever the text layer holds."""
    sys.stdout.flush()
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


class OrderedOutput:
    """A worker's sys.stdout: what the function prints goes out after the access lines of the calls before."""

    def __init__(self, stream, slot):
        self.stream, self.slot = stream, slot

    def write(self, text):
        if self.slot.log_size:
            self.slot.flush_log()
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


MAX_URL_KEPT = 32 << 10  # of a URL, for the 408 page (a longer one is cut there)
MAX_LOGGED_KEPT = 8 << 10  # of each LOGGED_HEADERS value: with the URL, within the Slot's line
LOGGED_HEADERS = (b"user-agent", b"referer", b"host")  # in the access line; Host in a 408 page's URL


class WorkerLoop:
    """A worker's calls: in frames from the server (a call the server read), or read by the worker itself
    from client connections the server handed over (the direct hand-off: no second process hop per call).
    A handed connection stays until the client closes it or the server asks for it back (`r`), which it
    gets at a request boundary; the server watches `slot` to answer 408 and kill this worker past the
    timeout."""

    def __init__(self, sock, ctl, slot, app, outcome, generation):
        self.sock, self.ctl, self.slot, self.app, self.outcome = sock, ctl, slot, app, outcome
        self.generation = generation
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)
        self.poller.register(ctl, select.POLLIN)
        self.clients = {}  # fd → Client
        self.giving_back = False
        self.early = []  # control messages read while waiting for the metrics

    def run(self):
        slot = self.slot
        while True:
            wait = None  # no log line waits: until something comes
            if slot.log_size:
                wait = max(0.0, slot.log_since + LOG_DELAY - time.monotonic()) * 1000
            events = self.poller.poll(wait)
            if slot.log_size and time.monotonic() >= slot.log_since + LOG_DELAY:
                slot.flush_log()
            for fd, _ in events:
                if fd == self.sock.fileno():
                    if not self.serve_frame():
                        return
                elif fd == self.ctl.fileno():
                    if not self.read_control():
                        return
                elif fd in self.clients:
                    self.clients[fd].receive()
            for client in list(self.clients.values()):
                self.serve(client)

    def serve_frame(self):
        """One call the server sent in a frame (it sends the next only after the reply): read in one go
        when it fits in the first read, as it mostly does."""
        data = self.sock.recv(1 << 16)
        if len(data) < FRAME.size:
            data += read_exact(self.sock, FRAME.size - len(data))
            if len(data) < FRAME.size:
                return False
        size = FRAME.unpack_from(data)[0]
        payload = data[FRAME.size :]
        if len(payload) < size:
            payload += read_exact(self.sock, size - len(payload))
        request = pickle.loads(payload)
        data = payload = None
        reply = run_call(self.app, self.outcome, request)
        send_frame(self.sock, reply)
        if PER_CALL:
            return False
        big = len(request[3]) >= BIG_BODY
        request = reply = None
        if big:
            after_big_call()
        return True

    def read_control(self):
        message, fds = self.receive_control()
        if not message:
            return False
        self.on_control(message, fds)
        while self.early:
            self.on_control(*self.early.pop(0))
        return True

    def receive_control(self):
        message, ancillary, _, _ = self.ctl.recvmsg(1 << 20, socket.CMSG_SPACE(FD_SIZE))
        fds = [int.from_bytes(data[:FD_SIZE], sys.byteorder) for _, kind, data in ancillary if kind == SCM_RIGHTS]
        return message, fds

    def on_control(self, message, fds):
        if message[:1] == b"c":  # a client connection, handed over
            conn = socket.socket(fileno=fds[0])
            conn.setblocking(True)
            client = Client(conn, message[1:], self)
            self.clients[conn.fileno()] = client
            self.poller.register(conn, select.POLLIN)
        elif message == b"r":  # the server needs this worker for other calls
            self.giving_back = True

    def metrics(self):
        """The server's /metrics, counting every call answered before (its own and the workers')."""
        self.ctl.send(b"m")
        while True:
            message, fds = self.receive_control()
            if not message:
                raise ConnectionError("the server is gone")
            if message[:1] == b"M":
                return message[1:]
            self.early.append((message, fds))

    def serve(self, client):
        while client.requests:
            client.answer_next()
        if client.closing or client.eof:  # a request cut short by the end of its input can never be complete
            self.drop(client, b"C")
        elif self.giving_back and not client.in_message:
            self.drop(client, b"R")
        if not self.clients:
            self.giving_back = False

    def drop(self, client, why):
        """Done with a client connection: closed (C) or given back to the server (R)."""
        del self.clients[client.conn.fileno()]
        self.poller.unregister(client.conn)
        if why == b"C":
            try:
                client.conn.shutdown(socket.SHUT_WR)  # the server's copy stays open: say it is over now
            except OSError:
                pass
        client.conn.close()
        self.ctl.send(why + client.key)


FD_SIZE = array.array("i").itemsize
SCM_RIGHTS = socket.SCM_RIGHTS


class RequestParts:
    """httptools callbacks that collect one request at a time (the server's and the workers' readers)."""

    def on_message_begin(self):
        self.url, self.headers, self.body, self.too_large = b"", [], [], False
        self.size = 0
        self.in_message = True

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_headers_complete(self):
        for name, value in self.headers:
            if name.lower() == b"expect" and value.lower() == b"100-continue":
                self.send_continue()

    def on_body(self, body):
        self.size += len(body)
        if self.size > MEMFILE_MAX:
            self.too_large = True
        elif not self.too_large:
            self.body.append(body)

    def take_request(self):
        """(request, keep-alive, too large) of the message just completed."""
        self.in_message = False
        body, self.body = b"".join(self.body), []
        request = (
            self.parser.get_method().decode(),
            self.url,
            self.headers,
            body,
            self.parser.get_http_version(),
            self.peer,
        )
        return request, self.parser.should_keep_alive(), self.too_large


class Client(RequestParts):
    """A client connection in the worker it was handed to: read, parsed and answered here."""

    def __init__(self, conn, key, loop):
        self.conn, self.key, self.loop = conn, key, loop
        self.parser = httptools.HttpRequestParser(self)
        try:
            self.peer = conn.getpeername()[0]
        except (OSError, IndexError):
            self.peer = "-"
        self.requests = collections.deque()
        self.in_message = self.eof = self.closing = False

    def send_continue(self):
        self.conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_message_complete(self):
        self.requests.append(self.take_request())

    def receive(self):
        loop = self.loop
        if not self.in_message and GENERATION.unpack_from(SERVING)[0] != loop.generation:
            loop.giving_back = True  # new code serves: the next request is read by the server, unread here
            return
        try:
            data = self.conn.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError:
            self.write(BAD_REQUEST)
            self.closing = True

    def write(self, data):
        try:
            self.conn.sendall(data)
        except OSError:
            self.closing = True

    def answer_next(self):
        request, keep_alive, too_large = self.requests.popleft()  # its only reference: freed here
        if self.closing:
            return
        method, url, headers, _body, version, peer = request
        loop = self.loop
        reply = local_answer(request, too_large)
        if reply == METRICS:
            reply = "200 OK", [("Content-Type", prometheus().CONTENT_TYPE_LATEST)], loop.metrics()
        elif reply is None:
            label = "GET" if method == "HEAD" else method
            logged = [(name, value[:MAX_LOGGED_KEPT]) for name, value in headers if name.lower() in LOGGED_HEADERS]
            loop.slot.begin((self.key, method, url[:MAX_URL_KEPT], version, peer, keep_alive, label, logged))
            start = time.perf_counter()
            _, status, out_headers, out_body, counted, failed = run_call(loop.app, loop.outcome, request)
            loop.slot.end(label, counted, failed, time.perf_counter() - start)  # counted before it is answered
            reply = status, out_headers, out_body
        status, out_headers, out_body = reply
        self.write(response_bytes(method, status, out_headers, out_body, keep_alive, version))
        loop.slot.log(access_line(peer, method, url, version, status, len(out_body), headers))
        if not keep_alive:
            self.closing = True
        if len(_body) >= BIG_BODY:
            request = reply = _body = None
            after_big_call()


# ---------------------------------------------------------------- server process


class Worker(asyncio.Protocol):
    """The server's end of one worker: frames in, futures out (one call at a time); the client
    connections handed to it (`clients`), whose calls it reads and answers itself."""

    def __init__(self, generation):
        self.generation = generation
        parent, child = socket.socketpair()
        control, child_control = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.slot = Slot()
        gc.freeze()  # the server's objects out of the collector's sight: a worker's collections leave them shared
        self.pid = os.fork()
        if self.pid == 0:  # child
            try:
                parent.close()
                control.close()
                keep = sorted((child.fileno(), child_control.fileno()))
                os.closerange(3, keep[0])  # never hold the server's sockets open
                os.closerange(keep[0] + 1, keep[1])
                os.closerange(keep[1] + 1, 65536)
                worker_main(child, child_control, self.slot, generation)
            finally:
                os._exit(0)
        child.close()
        child_control.close()
        control.setblocking(False)
        self.sock, self.ctl = parent, control
        self.transport = None
        self.buffer = bytearray()
        self.pending = None
        self.idle_since = 0.0
        self.clients = {}  # key → the server's copy of a client connection this worker answers
        self.asked_back = False  # told to give its connections back
        self.watch = None  # the timer that looks at its slot
        self.killed = False
        self.on_lost = None
        self.folded = [0.0] * len(self.slot.counts)  # its counts already in the server's metrics
        self.freed_future = None  # a reload waits on it for the worker to give its connections back
        self.handed_at = 0.0  # the slot's counts already in the server's metrics

    async def connect(self):
        """Wait for the worker's first message: ('ready', gen) or ('load-failed', error)."""
        self.pending = asyncio.get_running_loop().create_future()
        await asyncio.get_running_loop().create_connection(lambda: self, sock=self.sock)
        return await self.pending

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        while len(self.buffer) >= FRAME.size:
            size = FRAME.unpack_from(self.buffer)[0]
            if len(self.buffer) < FRAME.size + size:
                return
            message = pickle.loads(self.buffer[FRAME.size : FRAME.size + size])
            del self.buffer[: FRAME.size + size]
            pending, self.pending = self.pending, None
            if pending is not None and not pending.done():
                pending.set_result(message)

    def connection_lost(self, exc):
        pending, self.pending = self.pending, None
        if pending is not None and not pending.done():
            pending.set_exception(ConnectionError("worker exited"))
        if not self.killed and self.clients and self.on_lost is not None:  # else its caller sees the error
            self.on_lost(self)

    def call(self, request):
        """Send one request; returns a future for the reply."""
        self.pending = asyncio.get_running_loop().create_future()
        payload = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        self.transport.write(FRAME.pack(len(payload)) + payload)
        return self.pending

    def hand(self, key, conn):
        """Give it a client connection (the server keeps its copy, to answer 408 if need be)."""
        fds = array.array("i", [conn.fileno()])
        self.ctl.sendmsg([b"c" + key], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        self.clients[key] = conn
        self.handed_at = time.monotonic()

    def last_used(self):
        """When it last ended a call or was handed a connection (0 while a call it read itself runs)."""
        end = self.slot.last_end()
        return 0.0 if end is None else max(end, self.handed_at)

    def given_back(self):
        if self.freed_future is not None and not self.freed_future.done():
            self.freed_future.set_result(None)

    def kill(self, runaway=False):
        """Stop it (`runaway`: with every process it started, a call past its timeout)."""
        self.killed = True
        self.given_back()
        if runaway:
            kill_with_what_it_started(self.pid)
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.watch is not None:
            self.watch.cancel()
        if self.ctl.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(self.ctl.fileno())
            self.ctl.close()
        if self.transport is not None:
            self.transport.close()
        else:
            self.sock.close()


def started_by(pid):
    """The processes `pid` started and theirs, while they are its (Linux /proc; none found elsewhere)."""
    found, parents = [], [pid]
    while parents:
        parent = parents.pop()
        try:
            threads = os.listdir("/proc/%d/task" % parent)
        except OSError:
            continue
        for thread in threads:
            try:
                with open("/proc/%d/task/%s/children" % (parent, thread)) as children:
                    pids = [int(child) for child in children.read().split()]
            except (OSError, ValueError):
                continue
            found += pids
            parents += pids
    return found


def signal_each(pids, signum):
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def kill_with_what_it_started(pid):
    """SIGKILL `pid` and every process it started (a subprocess, a multiprocessing pool, a shell in a session
    of its own): each is stopped first so that none starts another or leaves the tree meanwhile; read again
    until no new one shows (bounded). Killed alone, they would run on, reparented to init."""
    stopped = [pid]
    signal_each(stopped, signal.SIGSTOP)
    for _ in range(5):
        new = [p for p in started_by(pid) if p not in stopped]
        if not new:
            break
        signal_each(new, signal.SIGSTOP)
        stopped += new
    signal_each(stopped, signal.SIGKILL)


def closed_by_peer(conn):
    """The client closed this connection and left nothing unread on it."""
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class Pool:
    """Workers of the current code generation: MIN_WORKERS kept warm, at most MAX_WORKERS in all.

    Idle workers form a stack: a call takes the worker that served last (sequential calls see its
    warm module state), a newly spawned worker goes to the bottom, and workers left at the bottom
    for IDLE_SECONDS retire until MIN_WORKERS remain."""

    def __init__(self):
        self.generation = 0  # the code generation that serves
        self.attempts = 0
        self.idle = []  # the stack: most recently used last
        self.live = set()  # every worker not killed yet (loading, idle, busy, old generations)
        self.waiters = []
        self.keys = 0  # client connections handed to workers
        self.readers = set()  # the HttpProtocols of the connections read here

    def new_worker(self, generation):
        worker = Worker(generation)
        worker.on_lost = self.lost
        asyncio.get_running_loop().add_reader(worker.ctl.fileno(), self.on_control, worker)
        self.live.add(worker)
        return worker

    def kill(self, worker, runaway=False):
        self.live.discard(worker)
        worker.kill(runaway)
        self.fold(worker)
        pending = worker.slot.pending_log()
        if pending:  # its access lines not written yet
            flush_log()
            write_out(pending)

    def fold(self, worker):
        """Add the calls a worker answered itself since the last fold to the server's metrics."""
        now = worker.slot.counts.tolist()
        before, worker.folded = worker.folded, now
        per = Slot.PER_LABEL
        for index, label in enumerate(LABELS):
            base = index * per
            if now[base] == before[base]:
                continue
            calls, duration, failures = metrics_for(label)
            calls.inc(now[base] - before[base])
            failures.inc(now[base + 1] - before[base + 1])
            duration._sum.inc(now[base + 2] - before[base + 2])
            for bucket in range(len(BUCKETS)):
                if now[base + 3 + bucket] != before[base + 3 + bucket]:
                    duration._buckets[bucket].inc(now[base + 3 + bucket] - before[base + 3 + bucket])

    # ------------------------------------------------ client connections the workers answer themselves

    def adopt(self, conn):
        """A client connection: handed to a worker that answers its calls itself when one is free, else
        read here (calls then go to workers in frames, as they free up)."""
        worker = self.free_for_client() if DIRECT and not self.waiters else None
        if worker is not None and not worker.clients and not self.direct_allowed():
            self.idle.append(worker)
            worker = None
        if worker is not None:
            self.keys += 1
            try:
                worker.hand(b"%d" % self.keys, conn)
            except OSError:
                self.release(worker)
            else:
                if worker.watch is None:
                    self.watch(worker)
                return
        if DIRECT and self.direct_workers() >= DIRECT_WORKERS:  # busier than the cores: all read here
            self.ask_back(every=True)
        asyncio.get_running_loop().create_task(self.serve_here(conn))

    def direct_allowed(self, asking=None):
        """Another worker may answer a connection itself: fewer than one per core do, and no connection read
        here (but `asking`'s) had a call within BUSY_SECONDS (it would have gone to a worker if it could)."""
        if self.direct_workers() >= DIRECT_WORKERS:
            return False
        recent = time.monotonic() - BUSY_SECONDS
        return not any(reader.last_call > recent for reader in self.readers if reader is not asking)

    def direct_workers(self):
        return sum(1 for worker in self.live if worker.clients)

    def free_for_client(self):
        """The worker that answered the last call, idle or whose connections the clients just closed (a client
        opens a new one for its next call: the call meets the same module state); else none."""
        closing = [
            worker
            for worker in self.live
            if worker.clients
            and not worker.asked_back
            and worker.generation == self.generation
            and worker.slot.running() is None
            and all(closed_by_peer(conn) for conn in worker.clients.values())
        ]
        if self.idle:
            closing.append(self.idle[-1])
        if not closing:
            return None
        warmest = max(closing, key=lambda worker: worker.slot.last_end() or 0.0)
        if warmest.clients:
            return warmest
        return self.idle.pop()

    async def serve_here(self, conn, first=None):
        """Read a client connection in this process; `first`: an answer to send before anything else."""
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: HttpProtocol(self, first), conn)
        except OSError:
            conn.close()

    def on_control(self, worker):
        """A worker's messages: give me /metrics (m), a client connection closed (C) or given back (R)."""
        while worker in self.live:
            try:
                message = worker.ctl.recv(256)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if not message:  # it exited: its socket says so to the pool (connection_lost)
                asyncio.get_running_loop().remove_reader(worker.ctl.fileno())
                return
            kind, rest = message[:1], message[1:]
            if kind == b"m":
                worker.ctl.send(b"M" + self.metrics())
            elif kind in (b"C", b"R"):
                conn = worker.clients.pop(rest)
                if not worker.clients:
                    self.freed(worker)
                if kind == b"C":
                    conn.close()
                else:  # read here; it goes to a worker again after a call, if one is idle then
                    asyncio.get_running_loop().create_task(self.serve_here(conn))

    def metrics(self):
        """/metrics, with every call the workers answered before it."""
        for worker in self.live:
            self.fold(worker)
        function_metrics()  # Kubeless' families are listed before any call
        prom = prometheus()
        return prom.generate_latest(prom.REGISTRY)

    def freed(self, worker):
        """A worker answers no client connection any more: idle (or another call's), or gone if old."""
        worker.asked_back = False
        worker.given_back()
        if worker.watch is not None:
            worker.watch.cancel()
            worker.watch = None
        self.release(worker)
        if worker in self.idle:  # idle since its last call, for retire_idle
            worker.idle_since = min(time.monotonic(), worker.last_used() or time.monotonic())

    def ask_back(self, every=False):
        """Calls wait and the pool is full (or more connections are busy than there are cores): a worker
        answering client connections gives them back here (`every`: all such workers)."""
        for worker in self.live:
            if worker.clients and not worker.asked_back:
                worker.asked_back = True
                worker.ctl.send(b"r")
                if not every:
                    return

    def watch(self, worker):
        """Answer 408 and kill the worker once a call it reads itself is past the timeout; look again when
        the call that runs (or the next one) could be."""
        worker.watch = None
        if worker not in self.live or not worker.clients:
            return
        loop = asyncio.get_running_loop()
        running = worker.slot.running()
        due = loop.time() + TIMEOUT
        if running is not None:
            due = running[0] + TIMEOUT
            if due <= loop.time():
                self.time_out(worker, running[1], loop.time() - running[0])
                return
        worker.watch = loop.call_at(due, self.watch, worker)

    def time_out(self, worker, line, seconds):
        key, method, url, version, peer, keep_alive, label, logged = line
        conns, worker.clients = worker.clients, {}
        self.discard(worker, runaway=True)
        calls, duration, failures = metrics_for(label)
        calls.inc()
        failures.inc()  # a timeout is a failure, as in every other runtime
        duration.observe(seconds)
        page = error_page(method, url, version, peer, headers=logged)
        self.take_back(conns, key, (method, url, version, peer, keep_alive, logged, page))

    def lost(self, worker):
        """A worker exited by itself (os._exit, a crash, the OOM killer) while it answered client connections."""
        conns, worker.clients = worker.clients, {}
        running = worker.slot.running()
        self.discard(worker)
        key = answer = None
        if running is not None:
            key, method, url, version, peer, keep_alive, label, logged = running[1]
            calls, _, failures = metrics_for(label)
            calls.inc()
            failures.inc()
            print("function worker exited during the call", file=sys.stderr, flush=True)
            crashed = "500 Internal Server Error", [("Content-Type", "text/plain")], b"Internal Server Error"
            answer = (method, url, version, peer, keep_alive, logged, crashed)
        self.take_back(conns, key, answer)

    def take_back(self, conns, key, answer):
        """Client connections of a worker that is gone, read here from now on; `answer` goes to `key`'s."""
        for conn_key, conn in conns.items():
            if conn_key == key:
                asyncio.get_running_loop().create_task(self.serve_here(conn, answer))
            else:
                self.adopt(conn)

    async def start(self):
        worker = self.new_worker(self.generation)
        message = await worker.connect()
        if message[0] != "ready":
            self.kill(worker)
            return message[1]
        self.idle.append(worker)
        self.top_up()
        asyncio.get_running_loop().call_later(IDLE_SECONDS / 4, self.retire_idle)
        return None

    def top_up(self):
        current = sum(1 for w in self.live if w.generation == self.generation)
        for _ in range(MIN_WORKERS - current):
            self.spawn()

    def spawn(self):
        asyncio.get_running_loop().create_task(self._spawn(self.new_worker(self.generation)))

    async def _spawn(self, worker):
        try:
            message = await worker.connect()
        except ConnectionError:
            message = ("load-failed", "worker exited while loading")
        if message[0] != "ready" or worker.generation != self.generation:
            self.kill(worker)
            if message[0] != "ready":
                print(message[1], file=sys.stderr, flush=True)
            return
        if not self.hand_to_waiter(worker):
            worker.idle_since = time.monotonic()
            self.idle.insert(0, worker)  # behind the warm workers that served before

    async def acquire(self):
        """An idle worker, waiting (and growing the pool) when all are busy."""
        if self.idle:
            return self.idle.pop()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiters.append(future)
        # Grow only for calls that really wait: fast functions stay on MIN_WORKERS (fewer context
        # switches), slow or blocking ones get more workers within GROW_AFTER.
        loop.call_later(GROW_AFTER, self._grow_for, future)
        try:
            return await future
        except asyncio.CancelledError:
            if future in self.waiters:
                self.waiters.remove(future)
            elif future.done() and not future.cancelled():
                self.release(future.result())
            raise

    def _grow_for(self, future):
        if future.done():
            return
        if len(self.live) < MAX_WORKERS:
            self.spawn()
        else:
            self.ask_back()

    def hand_to_waiter(self, worker):
        while self.waiters:
            future = self.waiters.pop(0)
            if not future.done():
                future.set_result(worker)
                return True
        return False

    def release(self, worker):
        if worker.generation != self.generation:
            self.kill(worker)
            self.top_up()
        elif not self.hand_to_waiter(worker):
            worker.idle_since = time.monotonic()
            self.idle.append(worker)

    def discard(self, worker, runaway=False):
        """A worker that cannot serve on (`runaway`: killed mid-call with what the call started, which would run
        on: the runaway code stops now)."""
        self.kill(worker, runaway)
        self.top_up()

    def retire_idle(self):
        """Shrink back to MIN_WORKERS after a burst: the least recently used idle workers go first."""
        quiet_since = time.monotonic() - IDLE_SECONDS
        while self.idle and len(self.live) > MIN_WORKERS and self.idle[0].idle_since < quiet_since:
            self.kill(self.idle.pop(0))
        if len(self.live) > MIN_WORKERS:  # a kept-alive connection no call came on keeps no worker
            for worker in self.live:
                if worker.clients and not worker.asked_back and 0 < worker.last_used() < quiet_since:
                    worker.asked_back = True
                    worker.ctl.send(b"r")
        asyncio.get_running_loop().call_later(IDLE_SECONDS / 4, self.retire_idle)

    async def reload(self):
        """Load new code in a probe worker; replace the pool only when it loads."""
        self.attempts += 1
        generation = self.attempts  # every SIGHUP gets its own number, failed ones too
        enter_install_dir()
        probe = self.new_worker(generation)
        try:
            message = await probe.connect()
        except ConnectionError:
            message = ("load-failed", "worker exited while loading")
        if message[0] != "ready":
            self.kill(probe)
            report_load_failure(generation, message[1])
            return
        self.generation = generation
        GENERATION.pack_into(SERVING, 0, generation)
        old, self.idle = self.idle, []
        for worker in old:
            self.kill(worker)
        given_back = []
        for worker in list(self.live):  # they give their client connections back before the next request
            if worker.clients and worker.generation != generation:
                if not worker.asked_back:
                    worker.asked_back = True
                    worker.ctl.send(b"r")
                if worker.slot.running() is None:  # between calls: ready once it gave them back
                    worker.freed_future = worker.freed_future or asyncio.get_running_loop().create_future()
                    given_back.append(worker.freed_future)
        self.release(probe)
        self.top_up()
        if given_back:  # no request that comes after "ready" meets the old code
            await asyncio.wait(given_back, timeout=10)
        control("ready", generation=generation)

    def shutdown(self):
        for worker in list(self.live):
            self.kill(worker)


@functools.cache
def function_metrics():
    """(calls, duration, failures): Kubeless' metric families, made once prometheus_client is loaded."""
    prom = prometheus()
    duration = prom.Histogram("function_duration_seconds", "Duration of user function in seconds", ["method"])
    calls = prom.Counter("function_calls_total", "Number of calls to user function", ["method"])
    failures = prom.Counter("function_failures_total", "Number of exceptions in user function", ["method"])
    return calls, duration, failures  # registered in legacy Kubeless' order, listed so by /metrics


_children = {}


def metrics_for(label):
    """(calls, duration, failures) children for one method label, looked up once."""
    children = _children.get(label)
    if children is None:
        children = _children[label] = tuple(family.labels(label) for family in function_metrics())
    return children


# Error pages come from bottle itself so they match legacy Kubeless byte for byte.
error_app = bottle.Bottle()
# Rendered without template lookup paths: bottle resolves them against the working folder, which
# may be a deleted generation folder (the server's cwd is only renewed on reload).
NO_LOOKUP = ()  # one object: bottle caches compiled templates by id(lookup)
error_app.default_error_handler = lambda res: bottle.tob(
    bottle.template(
        bottle.ERROR_PAGE_TEMPLATE,
        e=res,
        template_lookup=NO_LOOKUP,
        template_settings={"name": "__ERROR_PAGE_TEMPLATE"},
    )
)


TIMED_OUT = (408, "Timeout while processing the function")
BAD_PATH = (400, "Invalid path string. Expected UTF-8")  # bottle 0.12's answer (0.13 drops the bytes)
BAD_HEADER = (400, "Invalid header value. Expected UTF-8")  # bottle decodes headers as UTF-8 when read


@error_app.route("/<:re:.*>", method=list(FUNCTION_METHODS))
def _error_page():
    return bottle.HTTPError(*bottle.request.environ["kubeless.error"])


def error_page(method, url, version, peer, error=TIMED_OUT, headers=()):
    """Bottle's rendering of `error` (for a function method) or 405 (any other method); the URL it names is the
    request's, by the Host of its `headers` (not the server's private port)."""
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"], captured["headers"] = status, headers

    environ = environ_for(method, url, headers, b"", version, peer)
    environ["kubeless.error"] = error
    body = b"".join(error_app(environ, start_response))
    return captured["status"], captured["headers"], body


def client_error(path, headers):
    """A request the function cannot be given (the caller's mistake: 400, not a failure), or None."""
    try:
        unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        return BAD_PATH
    try:
        for _, value in headers:
            value.decode("utf-8")
    except UnicodeDecodeError:
        return BAD_HEADER
    return None


LOG_LINES = []


@functools.lru_cache(maxsize=2)
def log_stamp(second):
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second))


def flush_log():
    sys.stdout.write("".join(LOG_LINES))
    sys.stdout.flush()
    LOG_LINES.clear()


def access_log(peer, method, url, version, status, size, headers):
    """The server's access-log lines go out once per loop turn (schedule_log)."""
    LOG_LINES.append(access_line(peer, method, url, version, status, size, headers))


def access_line(peer, method, url, version, status, size, headers):
    """Apache-style line, as legacy Kubeless' wsgi-request-logger."""
    agent = referer = "-"
    for name, value in headers:
        lname = name.lower()
        if lname == b"user-agent":
            agent = value.decode("latin-1")
        elif lname == b"referer":
            referer = value.decode("latin-1")
    stamp = log_stamp(int(time.time()))
    return '%s - - [%s] "%s %s HTTP/%s" %s %s "%s" "%s"\n' % (
        peer,
        stamp,
        method,
        url.decode("latin-1"),
        version,
        status.split(" ", 1)[0],
        size,
        referer,
        agent,
    )


BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
HEALTHY = "200 OK", [("Content-Type", "text/html; charset=UTF-8")], b"OK"
METRICS = "metrics"  # local_answer's word for /metrics: the server's counts, asked where they are


def local_answer(request, too_large):
    """(status, headers, body) of a request that is no function call (health, a caller's mistake), METRICS,
    or None for a call."""
    method, url, headers, _body, version, peer = request
    path = url.split(b"?", 1)[0]
    if method in ("GET", "HEAD") and path == b"/healthz":
        return HEALTHY
    if method in ("GET", "HEAD") and path == b"/metrics":
        return METRICS
    if too_large:
        return "413 Request Entity Too Large", [("Content-Type", "text/plain")], b"Request body too large"
    if method not in FUNCTION_METHODS and method != "HEAD":
        return error_page(method, url, version, peer, headers=headers)
    error = client_error(path, headers)
    if error is not None:
        return error_page(method, url, version, peer, error, headers)
    return None


def response_bytes(method, status, headers, body, keep_alive, version):
    """The answer to an HTTP/`version` request; an HTTP/1.0 client kept alive is told so (it waited for the close
    otherwise: `ab -k`)."""
    lines = ["HTTP/1.1 " + status]
    has_length = False
    for name, value in headers:
        if name.lower() == "content-length":
            has_length = True
        lines.append("%s: %s" % (name, value))
    if not has_length:
        lines.append("Content-Length: %d" % len(body))
    if not keep_alive:
        lines.append("Connection: close")
    elif version == "1.0":
        lines.append("Connection: keep-alive")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if method != "HEAD" else head


class HttpProtocol(RequestParts, asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining, read in the server; one task per request, answered in
    order. At a request boundary with a worker idle the connection goes to that worker (Pool.adopt)."""

    def __init__(self, pool, first=None):
        self.pool = pool
        self.first = first  # (method, url, version, peer, keep-alive, logged headers, answer): sent first
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.previous = None  # the previous request's task, to keep responses in order
        self.peer = "-"
        self.eof = False
        self.in_message = False
        self.last_call = 0.0  # when its last request came (time.monotonic)

    def connection_made(self, transport):
        self.transport = transport
        self.pool.readers.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else "-"
        if self.first is not None:
            method, url, version, peer, keep_alive, logged, (status, headers, body) = self.first
            transport.write(response_bytes(method, status, headers, body, keep_alive, version))
            access_log(peer, method, url, version, status, len(body), logged)
            schedule_log()
            if not keep_alive:
                transport.close()

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError:
            self.transport.write(BAD_REQUEST)
            self.transport.close()

    def connection_lost(self, exc):
        self.transport = None
        self.pool.readers.discard(self)

    def eof_received(self):
        """The client half-closed its side (`nc -N`): answer what it sent, then close."""
        self.eof = True
        return self.previous is not None and not self.previous.done()  # True keeps the transport open

    def send_continue(self):
        self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_message_complete(self):
        self.last_call = time.monotonic()
        request, keep_alive, too_large = self.take_request()
        task = asyncio.get_running_loop().create_task(self.respond(request, keep_alive, too_large, self.previous))
        self.previous = task

    async def respond(self, request, keep_alive, too_large, previous):
        method, url, headers, _body, version, peer = request
        status, out_headers, out_body = await handle(self.pool, request, too_large)
        if previous is not None and not previous.done():
            await previous
        if self.transport is None:
            return
        self.transport.write(response_bytes(method, status, out_headers, out_body, keep_alive, version))
        access_log(peer, method, url, version, status, len(out_body), headers)
        schedule_log()
        last = self.previous is asyncio.current_task()
        if not keep_alive or (self.eof and last):
            self.transport.close()
        elif last and not self.in_message and DIRECT and self.pool.idle and not self.pool.waiters:
            self.hand_over()
        if len(_body) >= BIG_BODY:
            asyncio.get_running_loop().call_soon(release_memory)  # once this call's buffers are gone

    def hand_over(self):
        """Nothing more to read or write here: the connection goes to an idle worker (if one may take it)."""
        if self.transport.get_write_buffer_size() or not self.pool.direct_allowed(asking=self):
            return
        conn = socket.socket(fileno=os.dup(self.transport.get_extra_info("socket").fileno()))
        self.transport.abort()  # closes this process's first copy only: the connection lives on in `conn`
        self.transport = None
        self.pool.readers.discard(self)
        self.pool.adopt(conn)


def schedule_log():
    if len(LOG_LINES) == 1:
        asyncio.get_running_loop().call_soon(flush_log)


async def handle(pool, request, too_large):
    method, url, headers, _body, version, peer = request
    reply = local_answer(request, too_large)
    if reply == METRICS:
        return "200 OK", [("Content-Type", prometheus().CONTENT_TYPE_LATEST)], pool.metrics()
    if reply is not None:
        return reply
    label = "GET" if method == "HEAD" else method
    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    timed_out = []

    def expire():
        timed_out.append(True)
        current.cancel()

    timer = loop.call_later(TIMEOUT, expire)  # one timer covers the queue and the call
    worker = None
    try:
        worker = await pool.acquire()
        reply = await worker.call(request)
    except asyncio.CancelledError:
        if not timed_out:
            raise  # cancelled for another reason (shutdown)
        current.uncancel()
        if worker is not None:
            pool.discard(worker, runaway=True)
        calls, duration, failures = metrics_for(label)
        calls.inc()
        failures.inc()  # a timeout is a failure, as in every other runtime
        duration.observe(time.perf_counter() - start)
        return error_page(method, url, version, peer, headers=headers)
    except ConnectionError:
        pool.discard(worker)  # the worker died (os._exit, segfault, OOM kill)
        calls, _, failures = metrics_for(label)
        calls.inc()
        failures.inc()
        print("function worker exited during the call", file=sys.stderr, flush=True)
        return "500 Internal Server Error", [("Content-Type", "text/plain")], b"Internal Server Error"
    finally:
        timer.cancel()
    if PER_CALL:
        pool.discard(worker)
    else:
        pool.release(worker)
    _, status, out_headers, out_body, counted, failed = reply
    if counted:
        calls, duration, failures = metrics_for(label)
        calls.inc()
        duration.observe(time.perf_counter() - start)
        if failed:
            failures.inc()
    return status, out_headers, out_body


EXIT_CANNOT_LISTEN = 4  # the same code in every runtime


def listen(host, port):
    name = host.encode() if host.isascii() else host  # a str would load the idna codec (~2 ms of a start)
    infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(1024)
    except OSError:
        listener.close()
        raise
    listener.setblocking(False)
    return listener


def accept(listener, pool):
    """New client connections, to the pool (a worker answers them, or this process reads them)."""
    for _ in range(64):
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # out of file descriptors: the rest wait in the backlog
            print("cannot accept a connection: %s" % exc, file=sys.stderr, flush=True)
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pool.adopt(conn)


async def serve():
    pool = Pool()
    error = await pool.start()
    if error is not None:
        report_load_failure(0, error)
        sys.exit(3)
    loop = asyncio.get_running_loop()
    try:
        listener = listen(BIND, PORT)
    except OSError as exc:  # not a load failure: the code is fine, the port is not (the engine retries)
        print("cannot listen on %s:%d: %s" % (BIND, PORT, exc.strerror or exc), file=sys.stderr, flush=True)
        pool.shutdown()
        sys.exit(EXIT_CANNOT_LISTEN)
    loop.add_reader(listener.fileno(), accept, listener, pool)
    stopping = loop.create_future()
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(pool.reload()))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed and retired workers are reaped by the kernel
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stopping.done() or stopping.set_result(None))
    print("Kubeless Python runtime serving %s.%s on http://%s:%d/" % (MOD_NAME, FUNC_HANDLER, BIND, PORT), flush=True)
    control("ready", generation=0)
    try:
        await stopping
    finally:
        loop.remove_reader(listener.fileno())
        listener.close()
        pool.shutdown()


if __name__ == "__main__":
    # stdout is a pipe when run by the engine: keep it block-buffered for speed, flush per loop turn.
    asyncio.run(serve())
