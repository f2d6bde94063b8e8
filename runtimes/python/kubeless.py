"""Kubeless Python runtime server (contract §5), built for a fast local loop.

Legacy Kubeless ran every call in a freshly forked process (~100 req/s). Here an asyncio front
process parses HTTP (httptools), keeps /healthz and /metrics, and hands each function call to a
pool of warm worker processes forked from it. A worker imports the user's module once and runs
calls through a real bottle app, so `event['extensions']['request']` is a bottle request and return
values/exceptions become responses exactly as bottle renders them. A worker that overruns
FUNC_TIMEOUT is killed (SIGKILL: no CPU burnt afterwards) and replaced; the caller gets 408.
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

import asyncio
import ctypes
import functools
import io
import json
import os
import pickle
import signal
import socket
import struct
import sys
import time
import traceback
from urllib.parse import unquote_to_bytes

import bottle
import httptools
import prometheus_client as prom

INSTALL_DIR = os.environ.get("KUBELESS_INSTALL_VOLUME", "/kubeless")
MOD_NAME = os.environ.get("MOD_NAME", "")
FUNC_HANDLER = os.environ.get("FUNC_HANDLER", "")
TIMEOUT = float(os.environ.get("FUNC_TIMEOUT", "180") or "180")
PORT = int(os.environ.get("FUNC_PORT", "8080"))
BIND = os.environ.get("KUBELESS_LOCAL_BIND", "0.0.0.0")
MEMFILE_MAX = int(os.environ.get("FUNC_MEMFILE_MAX", str(100 * 1024 * 1024)))
CONTROL = os.environ.get("KUBELESS_LOCAL_CONTROL") == "1"
PER_CALL = os.environ.get("KUBELESS_LOCAL_ISOLATION", "warm") == "per-call"
# Warm workers kept ready: two per core keeps the hand-off from the HTTP process busy on both sides.
MIN_WORKERS = int(os.environ.get("KUBELESS_LOCAL_WORKERS") or min(4, 2 * (os.cpu_count() or 1)))
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
    import gc

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


class LoadError(Exception):
    """The module loaded but does not fit spec.handler: the message says it all (no traceback)."""


def load_function():
    if MOD_NAME == "_kubeless":
        raise ImportError("MOD_NAME may not be _kubeless")
    if INSTALL_DIR not in sys.path:
        sys.path.append(INSTALL_DIR)
    import importlib

    module = importlib.import_module(MOD_NAME)
    try:
        return getattr(module, FUNC_HANDLER)
    except AttributeError:
        raise LoadError(
            "%s has no function %r (spec.handler is %s.%s)"
            % (getattr(module, "__file__", MOD_NAME), FUNC_HANDLER, MOD_NAME, FUNC_HANDLER)
        ) from None


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
        if req.get_header("content-type") == "application/json":
            try:
                data = json.loads(data) if data else None
            except ValueError:  # the caller's mistake, not the function's: 400, not counted
                return bottle.HTTPError(400, "Invalid JSON in the request body")
        event = {
            "data": data,
            "event-id": req.get_header("event-id"),
            "event-type": req.get_header("event-type"),
            "event-time": req.get_header("event-time"),
            "event-namespace": req.get_header("event-namespace"),
            "extensions": {"request": bottle.BaseRequest(req.environ)},
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
    for name, value in headers:
        key = name.decode("latin-1").upper().replace("-", "_")
        value = value.decode("latin-1")
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
            continue
        if key in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
            continue  # the body is whole (httptools de-chunked it): bottle must not parse chunks again
        key = "HTTP_" + key
        environ[key] = environ[key] + "," + value if key in environ else value
    return environ


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


def worker_main(sock, generation):
    """Runs in a forked child: load the function, then serve calls until the socket closes."""
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
    send_frame(sock, ("ready", generation))
    reader = sock.makefile("rb")
    while True:
        header = reader.read(FRAME.size)
        if len(header) < FRAME.size:
            return
        request = pickle.loads(reader.read(FRAME.unpack(header)[0]))
        try:
            reply = call_app(app, outcome, request)
        except BaseException:  # noqa: BLE001 - the function's failure becomes a 500, the worker lives on
            traceback.print_exc()
            reply = (
                "response",
                "500 Internal Server Error",
                [("Content-Type", "text/plain")],
                b"Internal Server Error",
                outcome.get("counted", False),
                True,
            )
        sys.stdout.flush()
        sys.stderr.flush()
        send_frame(sock, reply)
        if PER_CALL:
            return
        if len(request[3]) >= BIG_BODY:
            request = reply = None
            bottle.request.bind({})  # bottle keeps the last request's environ (and body) bound
            release_memory()


# ---------------------------------------------------------------- server process


class Worker(asyncio.Protocol):
    """The server's end of one worker: frames in, futures out (one call at a time)."""

    def __init__(self, generation):
        self.generation = generation
        parent, child = socket.socketpair()
        self.pid = os.fork()
        if self.pid == 0:  # child
            try:
                parent.close()
                keep = child.fileno()
                os.closerange(3, keep)  # never hold the server's sockets open
                os.closerange(keep + 1, 65536)
                worker_main(child, generation)
            finally:
                os._exit(0)
        child.close()
        self.sock = parent
        self.transport = None
        self.buffer = bytearray()
        self.pending = None
        self.idle_since = 0.0

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

    def call(self, request):
        """Send one request; returns a future for the reply."""
        self.pending = asyncio.get_running_loop().create_future()
        payload = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        self.transport.write(FRAME.pack(len(payload)) + payload)
        return self.pending

    def kill(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.transport is not None:
            self.transport.close()
        else:
            self.sock.close()


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

    def new_worker(self, generation):
        worker = Worker(generation)
        self.live.add(worker)
        return worker

    def kill(self, worker):
        self.live.discard(worker)
        worker.kill()

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
        if not future.done() and len(self.live) < MAX_WORKERS:
            self.spawn()

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

    def discard(self, worker):
        self.kill(worker)
        self.top_up()

    def retire_idle(self):
        """Shrink back to MIN_WORKERS after a burst: the least recently used idle workers go first."""
        quiet_since = time.monotonic() - IDLE_SECONDS
        while self.idle and len(self.live) > MIN_WORKERS and self.idle[0].idle_since < quiet_since:
            self.kill(self.idle.pop(0))
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
        old, self.idle = self.idle, []
        for worker in old:
            self.kill(worker)
        self.release(probe)
        self.top_up()
        control("ready", generation=generation)

    def shutdown(self):
        for worker in list(self.live):
            self.kill(worker)


func_hist = prom.Histogram("function_duration_seconds", "Duration of user function in seconds", ["method"])
func_calls = prom.Counter("function_calls_total", "Number of calls to user function", ["method"])
func_errors = prom.Counter("function_failures_total", "Number of exceptions in user function", ["method"])
_children = {}


def metrics_for(label):
    """(calls, duration, failures) children for one method label, looked up once."""
    children = _children.get(label)
    if children is None:
        children = _children[label] = (func_calls.labels(label), func_hist.labels(label), func_errors.labels(label))
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


def error_page(method, url, version, peer, error=TIMED_OUT):
    """Bottle's rendering of `error` (for a function method) or 405 (any other method)."""
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"], captured["headers"] = status, headers

    environ = environ_for(method, url, [], b"", version, peer)
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
    """Apache-style line, as legacy Kubeless' wsgi-request-logger; written once per loop turn."""
    agent = referer = "-"
    for name, value in headers:
        lname = name.lower()
        if lname == b"user-agent":
            agent = value.decode("latin-1")
        elif lname == b"referer":
            referer = value.decode("latin-1")
    stamp = log_stamp(int(time.time()))
    if not LOG_LINES:
        asyncio.get_running_loop().call_soon(flush_log)
    LOG_LINES.append(
        '%s - - [%s] "%s %s HTTP/%s" %s %s "%s" "%s"\n'
        % (peer, stamp, method, url.decode("latin-1"), version, status.split(" ", 1)[0], size, referer, agent)
    )


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining; one task per request, answered in order."""

    def __init__(self, pool):
        self.pool = pool
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.previous = None  # the previous request's task, to keep responses in order
        self.peer = "-"
        self.eof = False

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else "-"

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.transport.close()

    def connection_lost(self, exc):
        self.transport = None

    def eof_received(self):
        """The client half-closed its side (`nc -N`): answer what it sent, then close."""
        self.eof = True
        return self.previous is not None and not self.previous.done()  # True keeps the transport open

    # httptools callbacks
    def on_message_begin(self):
        self.url, self.headers, self.body, self.too_large = b"", [], [], False
        self.size = 0

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_headers_complete(self):
        for name, value in self.headers:
            if name.lower() == b"expect" and value.lower() == b"100-continue":
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body):
        self.size += len(body)
        if self.size > MEMFILE_MAX:
            self.too_large = True
        elif not self.too_large:
            self.body.append(body)

    def on_message_complete(self):
        body, self.body = b"".join(self.body), []
        request = (
            self.parser.get_method().decode(),
            self.url,
            self.headers,
            body,
            self.parser.get_http_version(),
            self.peer,
        )
        keep_alive = self.parser.should_keep_alive()
        task = asyncio.get_running_loop().create_task(self.respond(request, keep_alive, self.too_large, self.previous))
        self.previous = task

    async def respond(self, request, keep_alive, too_large, previous):
        method, url, headers, _body, version, peer = request
        status, out_headers, out_body = await handle(self.pool, request, too_large)
        if previous is not None and not previous.done():
            await previous
        if self.transport is None:
            return
        lines = ["HTTP/1.1 " + status]
        has_length = False
        for name, value in out_headers:
            if name.lower() == "content-length":
                has_length = True
            lines.append("%s: %s" % (name, value))
        if not has_length:
            lines.append("Content-Length: %d" % len(out_body))
        if not keep_alive:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.transport.write(head + out_body if method != "HEAD" else head)
        access_log(peer, method, url, version, status, len(out_body), headers)
        if not keep_alive or (self.eof and self.previous is asyncio.current_task()):
            self.transport.close()
        if len(_body) >= BIG_BODY:
            asyncio.get_running_loop().call_soon(release_memory)  # once this call's buffers are gone


async def handle(pool, request, too_large):
    method, url, headers, _body, version, peer = request
    path = url.split(b"?", 1)[0]
    if method in ("GET", "HEAD") and path == b"/healthz":
        return "200 OK", [("Content-Type", "text/html; charset=UTF-8")], b"OK"
    if method in ("GET", "HEAD") and path == b"/metrics":
        return "200 OK", [("Content-Type", prom.CONTENT_TYPE_LATEST)], prom.generate_latest(prom.REGISTRY)
    if too_large:
        return "413 Request Entity Too Large", [("Content-Type", "text/plain")], b"Request body too large"
    if method not in FUNCTION_METHODS and method != "HEAD":
        return error_page(method, url, version, peer)
    error = client_error(path, headers)
    if error is not None:
        return error_page(method, url, version, peer, error)
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
            pool.discard(worker)  # killed mid-call: the runaway code stops now
        calls, duration, failures = metrics_for(label)
        calls.inc()
        failures.inc()  # a timeout is a failure, as in every other runtime
        duration.observe(time.perf_counter() - start)
        return error_page(method, url, version, peer)
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


async def serve():
    pool = Pool()
    error = await pool.start()
    if error is not None:
        report_load_failure(0, error)
        sys.exit(3)
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(lambda: HttpProtocol(pool), BIND, PORT, reuse_address=True, backlog=1024)
    except OSError as exc:  # not a load failure: the code is fine, the port is not (the engine retries)
        print("cannot listen on %s:%d: %s" % (BIND, PORT, exc.strerror or exc), file=sys.stderr, flush=True)
        pool.shutdown()
        sys.exit(EXIT_CANNOT_LISTEN)
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
        server.close()
        pool.shutdown()


if __name__ == "__main__":
    # stdout is a pipe when run by the engine: keep it block-buffered for speed, flush per loop turn.
    asyncio.run(serve())
