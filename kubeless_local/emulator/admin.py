"""The admin HTTP API that `call`, `ls` and `logs` use to talk to a running `dev`/`run` (127.0.0.1 only).

The port is recorded in .kubeless-local/admin.json beside the project.
"""
import json
import os
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class AdminServer:
    def __init__(self, supervisor, state_dir, root):
        self.supervisor, self.state_dir, self.root = supervisor, state_dir, root
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.closing = threading.Event()
        self.started = False

    @property
    def info_path(self):
        return self.state_dir / "admin.json"

    def start(self):
        self.started = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        tmp = self.info_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"port": self.port, "pid": os.getpid(), "root": str(self.root),
                                   "backend": self.supervisor.backend.name}))
        os.replace(tmp, self.info_path)

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
                return self.send_json(200, admin.supervisor.status())
            if len(parts) == 4 and parts[:2] == ["api", "functions"] and parts[3] == "logs":
                return self.logs(parts[2], query)
            self.send_json(404, {"error": "no such endpoint"})

        def logs(self, name, query):
            hub = admin.supervisor.logs
            if name not in admin.supervisor.instances:
                return self.send_json(404, {"error": "no function %r" % name})
            follow = query.get("follow", ["0"])[0] == "1"
            tail = int(query.get("tail", ["-1"])[0])
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
            self.wfile.write((json.dumps({"text": line.text, "stream": line.stream, "time": line.time}) + "\n").encode())

    return Handler
