"""Per-function log buffers that the CLI streams (`dev` output, `logs -f`, the admin API)."""
import collections
import queue
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class LogLine:
    function: str
    text: str
    stream: str = "stdout"  # stdout | stderr | system (the engine speaking)
    time: float = 0.0


class LogHub:
    """Keeps the last lines of each function and fans new lines out to subscribers."""

    def __init__(self, keep=5000):
        self.keep = keep
        self.lines = collections.defaultdict(lambda: collections.deque(maxlen=self.keep))
        self.subscribers = []
        self.lock = threading.Lock()

    def emit(self, function, text, stream="stdout"):
        line = LogLine(function, text.rstrip("\n"), stream, time.time())
        with self.lock:
            self.lines[function].append(line)
            subscribers = list(self.subscribers)
        for wanted, q in subscribers:
            if wanted is None or wanted == function:
                q.put(line)

    def tail(self, function, count=None):
        with self.lock:
            lines = list(self.lines.get(function, ()))
        return lines if count is None else lines[-count:] if count else []

    def subscribe(self, function=None):
        """A queue that receives every new line (of one function, or of all when None)."""
        q = queue.Queue()
        with self.lock:
            self.subscribers.append((function, q))
        return q

    def unsubscribe(self, q):
        with self.lock:
            self.subscribers = [(f, s) for f, s in self.subscribers if s is not q]
