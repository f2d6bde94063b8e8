"""The admin HTTP API that `call`, `ls` and `logs` use to talk to a running `dev`/`run` (127.0.0.1 only).

The port and a per-session token are recorded in .kubeless-local/admin.json (mode 0600) beside the
project; every request must carry `Authorization: Bearer <token>`, so other users of the machine
can neither read the logs nor act on the functions.
"""

import base64
import binascii
import collections
import hmac
import json
import os
import queue
import secrets
import selectors
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from kubeless_local.emulator.triggers.cron import run_row as cron_row
from kubeless_local.errors import UserError

EVENT_SOURCES = ("kafka", "nats")  # what `emit` and `topic publish` may send to the session's topics
MAX_EMIT_COUNT = 1_000_000


class _Server(ThreadingHTTPServer):
    """A thread per request, but only once the request arrives: a connection that sends nothing waits in
    one selector thread (no thread of its own) and is closed after `idle_timeout`, the oldest first when
    more than `max_waiting` wait; one that stops sending mid-request is dropped after the same time."""

    daemon_threads = True
    request_queue_size = 128  # listen backlog: connections arriving together are not made to retry
    idle_timeout = 10.0
    max_waiting = 256  # file descriptors are limited

    def __init__(self, address, handler):
        super().__init__(address, handler)
        self.accepted = collections.deque()  # (socket, client address): handed over to the waiter thread
        self.waiting = {}  # socket → (client address, deadline); the waiter thread's only
        self.selector = selectors.DefaultSelector()
        self.wake_reader, self.wake_writer = socket.socketpair()
        self.wake_writer.setblocking(False)
        self.selector.register(self.wake_reader, selectors.EVENT_READ)
        self.closing = False
        self.waiter = threading.Thread(target=self._wait_for_requests, daemon=True)
        self.waiter.start()

    def process_request(self, request, client_address):
        """On accept: the waiter thread watches the connection until its request arrives."""
        self.accepted.append((request, client_address))
        self._wake()

    def _wake(self):
        try:
            self.wake_writer.send(b"\0")
        except BlockingIOError:
            pass  # already awake

    def _wait_for_requests(self):
        while not self.closing:
            deadlines = [deadline for _, deadline in self.waiting.values()]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            for key, _ in self.selector.select(timeout):
                if key.fileobj is self.wake_reader:
                    self.wake_reader.recv(4096)
                    continue
                address, _ = self.waiting.pop(key.fileobj)
                self.selector.unregister(key.fileobj)
                super().process_request(key.fileobj, address)  # its request has arrived: a thread serves it
            while self.accepted:
                connection, address = self.accepted.popleft()
                self.waiting[connection] = (address, time.monotonic() + self.idle_timeout)
                self.selector.register(connection, selectors.EVENT_READ)
            now, excess = time.monotonic(), len(self.waiting) - self.max_waiting
            for index, (connection, (_, deadline)) in enumerate(list(self.waiting.items())):  # the oldest first
                if deadline > now and index >= excess:
                    break
                self._drop(connection)
        for connection in list(self.waiting):
            self._drop(connection)

    def _drop(self, connection):
        if self.waiting.pop(connection, None) is not None:
            self.selector.unregister(connection)
            self.shutdown_request(connection)

    def server_close(self):
        if not self.closing:  # a second stop() is harmless
            self.closing = True
            self._wake()
            self.waiter.join(timeout=5)
            self.selector.close()
            self.wake_reader.close()
            self.wake_writer.close()
        super().server_close()

    def handle_error(self, request, client_address):
        """A client that went away (Ctrl-C on `logs -f`, `dev` stopping) is not an error worth a traceback."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def write_private(path, text):
    """Write `path` readable by its owner only, with no moment where it is readable by others."""
    tmp = path.with_name("%s.%d.tmp" % (path.name, os.getpid()))
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


class AdminServer:
    def __init__(self, supervisor, state_dir, root):
        self.supervisor, self.state_dir, self.root = supervisor, state_dir, root
        self.token = secrets.token_urlsafe(32)
        self.server = _Server(("127.0.0.1", 0), _handler_for(self))
        self.port = self.server.server_address[1]
        self.closing = threading.Event()
        self.started = False
        self.topics = None  # the session's topics (triggers/interface.py: embedded or a real broker), when it has them
        self.cron = None  # the session's cron.Cron: runs in `ls`, `emit cron`
        self.kafka = None  # the session's kafka_bridge.KafkaBridge (dev --kafka-brokers): its consumer groups

    @property
    def info_path(self):
        return self.state_dir / "admin.json"

    def start(self):
        self.started = True
        # stop() waits one poll (20 ms)
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()
        write_private(
            self.info_path,
            json.dumps(
                {
                    "port": self.port,
                    "pid": os.getpid(),
                    "root": str(self.root),
                    "backend": self.supervisor.backend.name,
                    "token": self.token,
                }
            ),
        )

    def stop(self):
        self.closing.set()
        try:
            info = json.loads(self.info_path.read_text())
            if info.get("pid") == os.getpid():
                self.info_path.unlink()
        except (OSError, ValueError):
            pass
        if self.started:
            self.server.shutdown()  # waits for serve_forever, so only when it runs
        self.server.server_close()


def _handler_for(admin):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # streamed logs end when the connection closes

        def setup(self):
            self.timeout = self.server.idle_timeout  # a request that stops coming is dropped
            super().setup()

        def log_message(self, *args):
            pass

        def parse_request(self):
            """Every request, whatever its method, needs the session's token: else 401 and nothing else."""
            if not super().parse_request():
                return False
            scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), admin.token.encode()):
                return True
            self.send_json(401, {"error": "the admin API needs the token from %s" % admin.info_path})
            return False

        def send_json(self, status, value):
            body = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            url = urlsplit(self.path)
            parts = [p for p in url.path.split("/") if p]
            query = parse_qs(url.query)
            if parts == ["api", "functions"]:
                return self.send_json(200, self.functions())
            if parts == ["api", "triggers", "cron"] and admin.cron is not None:
                return self.send_json(200, admin.cron.status())
            if parts == ["api", "triggers", "kafka-broker"]:
                return self.send_json(200, admin.kafka.status() if admin.kafka is not None else [])
            if len(parts) == 4 and parts[:2] == ["api", "functions"] and parts[3] == "logs":
                return self.logs(parts[2], query)
            if parts[:2] == ["api", "topics"]:
                return self.topics("GET", parts[2:], query)
            self.send_json(404, {"error": "no such endpoint"})

        def do_POST(self):
            url = urlsplit(self.path)
            parts = [p for p in url.path.split("/") if p]
            if parts[:2] == ["api", "topics"]:
                return self.topics("POST", parts[2:], parse_qs(url.query))
            if len(parts) == 4 and parts[:3] == ["api", "triggers", "cron"] and admin.cron is not None:
                try:
                    run = admin.cron.fire(unquote(parts[3]))  # waits for the function's answer (its timeout at most)
                except UserError as exc:
                    return self.send_json(400, {"error": str(exc)})
                return self.send_json(200, cron_row(run))
            self.send_json(404, {"error": "no such endpoint"})

        def do_DELETE(self):
            parts = [p for p in urlsplit(self.path).path.split("/") if p]
            if parts[:2] == ["api", "topics"]:
                return self.topics("DELETE", parts[2:], {})
            self.send_json(404, {"error": "no such endpoint"})

        def functions(self):
            rows = admin.supervisor.status()
            if admin.topics is not None:
                dead = admin.topics.dead_letter_counts()
                for row in rows:
                    row["dead_letters"] = dead.get(row["name"], 0)
            if admin.cron is not None:
                for row in rows:
                    row["cron"] = admin.cron.for_function(row["name"])  # its CronJobTriggers and their last runs
            return rows

        def read_json(self):
            try:
                length = int(self.headers.get("Content-Length") or 0)
                value = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                raise UserError("the request body must be a JSON object") from None
            if not isinstance(value, dict):
                raise UserError("the request body must be a JSON object")
            return value

        def topics(self, method, rest, query):
            """/api/topics: GET list, POST {name} create; /api/topics/T: DELETE; /api/topics/T/events: POST
            emit, GET ?from=&to=&source= outcome; /api/topics/T/replay: POST. A UserError answers 400 with its text."""
            topics = admin.topics
            if topics is None:
                return self.send_json(503, {"error": "this session runs no embedded topics"})
            try:
                if not rest and method == "GET":
                    return self.send_json(200, topics.list())
                if not rest and method == "POST":
                    name = self.read_json().get("name")
                    name = name if isinstance(name, str) else ""
                    return self.send_json(200, {"name": name, "created": topics.create(name)})
                if len(rest) == 1 and method == "DELETE":
                    topics.delete(rest[0])
                    return self.send_json(200, {"deleted": rest[0]})
                if len(rest) == 2 and rest[1] == "events" and method == "POST":
                    return self.send_json(200, self.emit(rest[0], self.read_json()))
                if len(rest) == 2 and rest[1] == "events" and method == "GET":
                    source = query.get("source", ["kafka"])[0]
                    try:
                        first, last = int(query["from"][0]), int(query["to"][0])
                    except (KeyError, ValueError):
                        raise UserError("from and to must be event sequence numbers") from None
                    outcome = topics.outcome(rest[0], source, first, last)
                    return self.send_json(200, {str(seq): subs for seq, subs in outcome.items()})
                if len(rest) == 2 and rest[1] == "replay" and method == "POST":
                    body = self.read_json()
                    count = topics.replay(rest[0], body.get("trigger"), body.get("id"))
                    return self.send_json(200, {"replayed": count})
            except UserError as exc:
                return self.send_json(400, {"error": str(exc)})
            self.send_json(404, {"error": "no such endpoint"})

        def emit(self, topic, body):
            """{source, data (text) or data_base64, count, content_type} → the answer of Topics.emit
            (triggers/interface.py: one shape, embedded or on a broker); durable before it answers."""
            source = body.get("source", "kafka")
            if source not in EVENT_SOURCES:
                raise UserError("source must be one of %s" % ", ".join(EVENT_SOURCES))
            if "data_base64" in body:
                try:
                    data = base64.b64decode(body["data_base64"], validate=True)
                except (TypeError, binascii.Error):
                    raise UserError("data_base64 is not base64") from None
            elif isinstance(body.get("data"), str):
                data = body["data"].encode()
            else:
                raise UserError("an event needs data (--data TEXT or --data @FILE)")
            content_type = body.get("content_type") or ""
            if "json" in content_type.lower():
                try:
                    json.loads(data)
                except ValueError as exc:
                    raise UserError(
                        "the data is not valid JSON (%s) but the content type is %s" % (exc, content_type)
                    ) from None
            count = body.get("count", 1)
            if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_EMIT_COUNT:
                raise UserError("count must be a number from 1 to %d" % MAX_EMIT_COUNT)
            return admin.topics.emit(topic, source, data, count)

        def logs(self, name, query):
            hub = admin.supervisor.logs
            if name not in admin.supervisor.instances:
                return self.send_json(404, {"error": "no function %r" % name})
            follow = query.get("follow", ["0"])[0] == "1"
            try:
                tail = int(query.get("tail", ["-1"])[0])
            except ValueError:
                return self.send_json(400, {"error": "tail must be a number of lines"})
            subscription = hub.subscribe(name) if follow else None
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.end_headers()
            try:
                for line in hub.tail(name, None if tail < 0 else tail):
                    self.write_line(line)
                self.wfile.flush()
                while follow and not admin.closing.is_set():
                    try:
                        line = subscription.get(timeout=0.5)
                    except queue.Empty:
                        continue
                    self.write_line(line)
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                if subscription is not None:
                    hub.unsubscribe(subscription)

        def write_line(self, line):
            self.wfile.write(
                (json.dumps({"text": line.text, "stream": line.stream, "time": line.time}) + "\n").encode()
            )

    return Handler
