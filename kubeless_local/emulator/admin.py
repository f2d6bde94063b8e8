"""The admin HTTP API that `call`, `ls` and `logs` use to talk to a running `dev`/`run` (127.0.0.1 only).

The port and a per-session token are recorded in .kubeless-local/admin.json (mode 0600) beside the
project; every request must carry `Authorization: Bearer <token>`, so other users of the machine
can neither read the logs nor act on the functions.
"""

import hmac
import json
import os
import queue
import secrets
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from kubeless_local.emulator.cron import run_row as cron_row
from kubeless_local.errors import UserError


class _Server(ThreadingHTTPServer):
    daemon_threads = True

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
        self.cron = None  # the session's cron.Cron: runs in `ls`, `emit cron`
        self.kafka = None  # the session's kafka_bridge.KafkaBridge (dev --kafka-brokers): its consumer groups

    @property
    def info_path(self):
        return self.state_dir / "admin.json"

    def start(self):
        self.started = True
        threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True).start()  # stop() waits one poll
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
            self.send_json(404, {"error": "no such endpoint"})

        def functions(self):
            rows = admin.supervisor.status()
            if admin.cron is not None:
                for row in rows:
                    row["cron"] = admin.cron.for_function(row["name"])  # its CronJobTriggers and their last runs
            return rows

        def do_POST(self):
            parts = [p for p in urlsplit(self.path).path.split("/") if p]
            if len(parts) == 4 and parts[:3] == ["api", "triggers", "cron"] and admin.cron is not None:
                try:
                    run = admin.cron.fire(unquote(parts[3]))  # waits for the function's answer (its timeout at most)
                except UserError as exc:
                    return self.send_json(400, {"error": str(exc)})
                return self.send_json(200, cron_row(run))
            self.send_json(404, {"error": "no such endpoint"})

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
