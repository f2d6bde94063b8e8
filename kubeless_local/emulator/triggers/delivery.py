"""Delivers the embedded topics' events to functions, as the Kubeless Kafka and NATS trigger controllers do.

One subscriber per (trigger, function its `functionSelector` matches): a thread that sends the topic's
events in order, with the envelope of its source (events.py), to the function once it is Ready.
At-least-once: an event is consumed (its position committed) only after a 2xx; a failure is retried with
back-off, and after `max_attempts` failures it becomes a dead letter (last status and body kept) that
`topic replay` sends again. The Kubeless controller commits failed messages and loses them.

A function that is down, reloading, crashed or not started yet is waited for: not answering is not a
failure of the function, so it costs no attempt. A server that takes an event and closes the connection
without an answer (it crashed on it) did fail: that is an attempt, so a poison message ends dead-lettered
instead of crashing the function forever.
"""

import functools
import socket
import sqlite3
import threading
import time
from urllib.parse import urlsplit

from kubeless_local import config
from kubeless_local.emulator.recorder import marked
from kubeless_local.emulator.triggers.subscriptions import subscriptions
from kubeless_local.errors import Conflict, NotFound, Notice, UserError
from kubeless_local.events import envelope

# The Dispatcher's defaults are the project settings' (config.py, `kafka:`)
MAX_ATTEMPTS = config.Kafka.max_attempts
MAX_IN_FLIGHT = config.Kafka.max_in_flight  # one at a time, in order, as kafka-trigger (>= v1.0.5) and NATS do
BACKOFF_FIRST = config.Kafka.retry_backoff
RETENTION_HOURS = config.Kafka.retention_hours  # consumed events older than this are pruned (Kafka's default)
BACKOFF_MAX = 30.0  # seconds: the longest wait between two attempts, embedded topics and broker alike
PRUNE_EVERY = 60.0  # seconds between prunes while events are emitted
FETCH = 100  # events read from the store at once when sending one at a time
COMMIT_EVERY = 50  # delivered events between position commits (a crash redelivers at most these)
RETRY_INFO_BODY = 200
STOP_TIMEOUT = 5.0  # seconds `dev` waits for subscribers to commit their positions when it stops
READY_WAIT = 0.5  # seconds a sender waits for its function at once, then looks whether it is stopping
NOT_TAKEN_PAUSE = 0.05  # seconds before sending again when nothing took the request (restarting, reloading)
ANSWER_MARGIN = 5.0  # seconds beyond the function's timeout a sender waits for its answer
DEFAULT_TIMEOUT = 180.0  # a Function's timeout when its manifest's does not read as a number


def backoff(attempt, first, most):
    """Seconds to wait after failed attempt number `attempt`: `first`, doubling, at most `most` (the one
    back-off of event delivery, embedded and broker)."""
    return min(first * 2 ** (attempt - 1), most)


class NotAnswering(Exception):
    """The function did not take the event (nothing listens, or a closed keep-alive connection)."""


class NotServing(Exception):
    """A sender stopped waiting for its function: it cannot serve until the user edits something."""


def answer_timeout(spec):
    """Seconds a sender waits for the function's answer: its timeout (the runtime answers 408 then) plus a
    margin, the safety net for a runtime that does not."""
    try:
        return float(spec.timeout) + ANSWER_MARGIN
    except ValueError:
        return DEFAULT_TIMEOUT + ANSWER_MARGIN


def send_when_ready(supervisor, function, send, stopping, deadline=None, give_up=None):
    """The one "wait until the function serves, then send" of every trigger (embedded topics, cron, the
    broker bridge): `send(instance, spec)`'s answer once `function` serves. While it does not (installing,
    reloading, crashed, not started yet), and while nothing takes the request (NotAnswering: it restarted
    between the look and the call), it is waited for: not the function's failure, so no attempt is used up.
    None when `stopping` (a threading.Event) is set or `deadline` (time.monotonic()) passes first;
    NotServing when `give_up(function)` names a reason to stop waiting."""
    while not stopping.is_set():
        wait = READY_WAIT if deadline is None else min(READY_WAIT, deadline - time.monotonic())
        if wait <= 0:
            return None
        reason = give_up(function) if give_up is not None else None
        if reason:
            raise NotServing(reason)
        ready = supervisor.wait_ready(function, wait)
        if ready is None:
            continue  # and look at `stopping` again
        try:
            return send(*ready)
        except NotAnswering:
            stopping.wait(NOT_TAKEN_PAUSE)
    return None


class FunctionLink:
    """How an event is sent to a function, for the embedded topics and the broker bridge alike: one
    keep-alive HTTP connection, used by one thread at a time. The request carries the bytes
    http.client sends (Host, Accept-Encoding, Content-Length, then the event's headers); the answer is
    read here because http.client's header parsing (the email package) was the delivery thread's
    largest cost (BENCHMARKS.md, "Events in order")."""

    def __init__(self):
        self.sock = self.reader = None
        self.url = None

    def send(self, method, url, headers, body, timeout):
        """(status, body text). (0, why) when the server took the request and closed the connection without
        an answer (it crashed on it, or did not answer within `timeout`): a failed attempt. NotAnswering when
        nothing listens, or a kept-alive connection turned out closed: no attempt is used up."""
        if self.url != url:
            self.close()
            self.url = url
        parts = urlsplit(url)
        kept_alive = self.sock is not None
        try:
            if self.sock is None:
                self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.reader = self.sock.makefile("rb")
            else:
                self.sock.settimeout(timeout)
            self.sock.sendall(request_bytes(method, parts, headers, body))
        except OSError as exc:
            self.close()
            raise NotAnswering(str(exc)) from None
        try:
            status, answer, will_close = read_response(self.reader)
        except (OSError, ValueError) as exc:  # ValueError: not an HTTP answer (BadAnswer), a malformed length
            self.close()
            if kept_alive and isinstance(exc, ConnectionResetError):
                raise NotAnswering(str(exc)) from None  # closed while idle, perhaps before our request: resend
            if isinstance(exc, TimeoutError):
                return 0, "no answer within %gs" % timeout
            return 0, "the function's server closed the connection without answering (%s); did it crash?" % (
                str(exc) or type(exc).__name__
            )
        if will_close:
            self.close()
        return status, answer.decode("utf-8", "replace")

    def close(self):
        if self.reader is not None:
            self.reader.close()
        if self.sock is not None:
            self.sock.close()
        self.sock = self.reader = None


def request_bytes(method, parts, headers, body):
    """The request as http.client writes it for `request(method, "/", body, headers)`."""
    host = parts.hostname if parts.port in (None, 80) else "%s:%d" % (parts.hostname, parts.port)
    lines = ["%s / HTTP/1.1" % method, "Host: " + host, "Accept-Encoding: identity"]
    if not any(name.lower() == "content-length" for name in headers):
        lines.append("Content-Length: %d" % len(body))
    lines.extend("%s: %s" % item for item in headers.items())
    head = "\r\n".join(lines)
    if head.count("\n") != len(lines) - 1 or "\r" in head.replace("\r\n", ""):
        raise ValueError("a header of the event holds a line break: %r" % headers)  # as http.client refuses
    return (head + "\r\n\r\n").encode("latin-1") + body


class BadAnswer(ValueError):
    """What the function's server sent is not a whole HTTP/1.x answer."""


class ClosedWithoutAnswer(ConnectionResetError):
    """The function's server closed the connection before its answer began (http.client's RemoteDisconnected)."""


def read_response(reader):
    """(status, body bytes, the server closes the connection) of one HTTP/1.x answer."""
    while True:
        line = reader.readline(65537)
        if not line:
            raise ClosedWithoutAnswer("Remote end closed connection without response")
        version, _, rest = line.decode("latin-1").partition(" ")
        if not version.startswith("HTTP/") or not rest[:3].isdigit():
            raise BadAnswer("not a status line: %r" % line.decode("latin-1", "replace").strip())
        status = int(rest[:3])
        fields = {}
        while True:
            field = reader.readline(65537)
            if field in (b"\r\n", b"\n", b""):
                break
            name, _, value = field.decode("latin-1").partition(":")
            fields[name.strip().lower()] = value.strip()
        if status != 100:
            break
    connection = fields.get("connection", "").lower()
    will_close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
    if status in (204, 304) or 100 <= status < 200:
        return status, b"", will_close
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return status, read_chunked(reader), will_close
    if "content-length" in fields:
        length = int(fields["content-length"])
        body = reader.read(length)
        if len(body) < length:
            raise BadAnswer("%d bytes of a %d-byte body before the connection closed" % (len(body), length))
        return status, body, will_close
    return status, reader.read(), True  # the body ends with the connection


def read_chunked(reader):
    chunks: list = []
    while True:
        size = int(reader.readline(65537).split(b";")[0].strip() or b"x", 16)
        if size == 0:
            while reader.readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        chunk = reader.read(size)
        if len(chunk) < size:
            raise BadAnswer("%d bytes of a %d-byte chunk before the connection closed" % (len(chunk), size))
        chunks.append(chunk)
        reader.readline(65537)


class Retry:
    """What the current attempt of an event got: shown by `emit --wait` while it is retried."""

    def __init__(self, seq):
        self.seq, self.attempts, self.status, self.body = seq, 0, 0, ""


class Subscriber(threading.Thread):
    """Sends one subscription's events in topic order, up to `max_in_flight` at once (each on its own
    keep-alive connection); its position moves past an event only once it and every earlier event is
    settled (delivered, or dead-lettered), so a crash redelivers, never skips."""

    def __init__(self, dispatcher, subscription):
        super().__init__(daemon=True, name="deliver " + subscription.name)
        self.dispatcher, self.sub = dispatcher, subscription
        self.store = dispatcher.store
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.retries = {}  # seq → Retry of the events in flight
        self.local = threading.local()  # each sending thread's FunctionLink
        self.links = []
        self.position = 0  # every event up to here is settled
        self.uncommitted = 0  # events settled since the position was last stored
        self.held_back = ""  # why deliveries last waited for the store (said once)
        from concurrent.futures import ThreadPoolExecutor  # (and logging): with a subscriber only, not on `run`'s way

        self.pool = ThreadPoolExecutor(dispatcher.max_in_flight, thread_name_prefix="send " + subscription.name)

    def stop(self):
        self.stopping.set()
        self.wake.set()

    def run(self):
        self.store.attach()
        try:
            subscribed = False
            while not self.stopping.is_set():
                self.wake.clear()  # before looking: an emit from now on wakes the wait below
                try:
                    if not subscribed:  # (retried while the store cannot be written)
                        self.position = self.store.subscribe(self.sub.name, self.sub.topic, self.sub.source)
                        subscribed = True
                    busy = self._replay_dead_letters() or self._deliver_new()
                except UserError as exc:  # the store cannot be written (a full disk): on from where it is, later
                    self._held_back(exc)
                    busy = False
                if not busy:
                    self.wake.wait(1.0)  # the timeout is a safety net
        except sqlite3.ProgrammingError:
            if not self.stopping.is_set():
                raise  # the store closed under a subscriber that is stopping (`dev` ends): nothing to save
        finally:
            # A call still in flight is abandoned: its event is after the position, so it is sent again.
            self.pool.shutdown(wait=False, cancel_futures=True)
            for link in self.links:
                link.close()
            self.store.detach()

    def _held_back(self, exc):
        """Say once why deliveries wait (the same reason again is not said each second)."""
        if str(exc) != self.held_back:
            self.held_back = str(exc)
            self.dispatcher.say("dev", "events of topic %s wait for %s: %s" % (self.sub.topic, self.sub.name, exc))

    def _deliver_new(self):
        """Send every stored event after the position; False when there was none."""
        if self.dispatcher.max_in_flight == 1:
            any_event = self._deliver_one_by_one()
        else:
            any_event = self._deliver_window(self.dispatcher.max_in_flight)
        if self.uncommitted:
            self.store.commit(self.sub.name, self.sub.topic, self.position)
            self.uncommitted = 0
        for seq in [s for s in self.retries if s > self.position]:
            self.retries.pop(seq, None)
        return any_event

    def _deliver_one_by_one(self):
        """The default: each event on this thread, the next once it is settled (no hand-off per event)."""
        any_event = False
        while not self.stopping.is_set():
            events = self.store.events_after(self.sub.topic, self.sub.source, self.position, limit=FETCH)
            if not events:
                break
            any_event = True
            for event in events:
                self.retries[event.seq] = Retry(event.seq)
                if not self._settle(event, self._send_with_retries(event)):
                    return any_event
        return any_event

    def _deliver_window(self, window):
        """`max_in_flight` > 1: up to `window` events sent at once, settled in topic order."""
        from concurrent.futures import wait

        pending: dict = {}  # seq → (Event, Future), in topic order
        fetched, any_event = self.position, False
        while not self.stopping.is_set():
            events = []
            if len(pending) < window:
                events = self.store.events_after(self.sub.topic, self.sub.source, fetched, limit=window - len(pending))
                for event in events:
                    self.retries[event.seq] = Retry(event.seq)
                    pending[event.seq] = (event, self.pool.submit(self._send_with_retries, event))
                    fetched = event.seq
                any_event = any_event or bool(events)
            if not pending:
                break
            if not events or len(pending) >= window:
                wait([next(iter(pending.values()))[1]], timeout=1.0)  # the window moves when its head is settled
            while pending:  # settle the finished head of the window, in order
                seq = next(iter(pending))
                event, future = pending[seq]
                if not future.done():
                    break
                del pending[seq]
                if not self._settle(event, future.result()):
                    return any_event  # stopping: what is not settled stays after the position
        return any_event

    def _settle(self, event, result):
        """Move the position past a delivered or dead-lettered event; False when stopping (not settled)."""
        ok, attempts, status, body = result
        if ok is None:
            return False
        self.retries.pop(event.seq, None)
        if ok:
            self.position, self.uncommitted = event.seq, self.uncommitted + 1
            if self.uncommitted >= COMMIT_EVERY:  # and when the topic is drained (_deliver_new)
                self.store.commit(self.sub.name, self.sub.topic, self.position)
                self.uncommitted = 0
            self.dispatcher.on_event("topic-commit", {**self._about(event), "status": status})
        else:
            self.store.dead_letter(self.sub.name, self.sub.topic, event.seq, attempts, status, body)
            self.position, self.uncommitted = event.seq, 0
            self._said_dead(event, attempts, status)
        return True

    def _about(self, event):
        return {"topic": self.sub.topic, "subscriber": self.sub.name, "function": self.sub.function, "seq": event.seq}

    def _said_dead(self, event, attempts, status):
        said = "event %s on topic %s dead-lettered after %d attempts (last answer %s)" % (
            event.event_id,
            self.sub.topic,
            attempts,
            status or "none",
        )
        self.dispatcher.say(self.sub.function, self.dispatcher.word(Notice(said, "dead letter", self.sub.topic)))
        self.dispatcher.on_event("dead-letter", {**self._about(event), "attempts": attempts, "status": status})

    def _replay_dead_letters(self):
        letters = self.store.replays(self.sub.name)
        for letter_id, event in letters:
            ok, attempts, status, body = self._send_with_retries(event)
            if ok is None:
                return True
            if ok:
                self.store.replayed(letter_id)
                self.dispatcher.on_event(
                    "dead-letter-replayed", {**self._about(event), "id": letter_id, "status": status}
                )
            else:
                self.store.dead_again(letter_id, attempts, status, body)
                self._said_dead(event, attempts, status)
        return bool(letters)

    def _send_with_retries(self, event):
        """(ok, attempts, last status, last body); ok is None when stopping. Status 0: no answer (the
        connection closed without one: the server crashed on the event), a failed attempt like a 5xx."""
        retry = self.retries.get(event.seq) or Retry(event.seq)
        send = functools.partial(self._send, event)
        while not self.stopping.is_set():
            answer = send_when_ready(self.dispatcher.supervisor, self.sub.function, send, self.stopping)
            if answer is None:
                break
            status, body = answer
            if 200 <= status < 300:
                return True, retry.attempts + 1, status, body
            retry.attempts += 1
            retry.status, retry.body = status, body[:RETRY_INFO_BODY]
            if retry.attempts >= self.dispatcher.max_attempts:
                return False, retry.attempts, status, body
            self.stopping.wait(self.dispatcher.backoff(retry.attempts))
        return None, 0, 0, ""

    def _send(self, event, instance, spec):
        link = getattr(self.local, "link", None)
        if link is None:
            link = self.local.link = FunctionLink()
            self.links.append(link)
        method, headers, body = envelope(
            event.source, event.data, topic=event.topic, event_id=event.event_id, event_time=event.event_time
        )
        sent = {**headers, **marked(instance, event.source, self.sub.trigger)}  # who sends, for the recorder
        send = functools.partial(link.send, method, instance.url, sent, body, answer_timeout(spec))
        taps = self.dispatcher.supervisor.taps
        return taps.exchange(self.sub.function, event.source, method, instance.url, headers, body, send)


class Dispatcher:
    """Runs one Subscriber per subscription of the project's triggers; `update(manifests)` on every reload."""

    def __init__(
        self,
        store,
        supervisor,
        logs=None,
        max_attempts=MAX_ATTEMPTS,
        retry_backoff=BACKOFF_FIRST,
        max_in_flight=MAX_IN_FLIGHT,
        retention_hours=RETENTION_HOURS,
        word=str,
        on_event=lambda kind, data: None,
    ):
        self.store, self.supervisor = store, supervisor
        # told each append, each event a subscriber is past (delivered) and each dead letter: the session's bus
        self.on_event = on_event
        self.word = word  # how a notice shows in a function's log (the CLI adds the command that helps)
        self.logs = logs if logs is not None else supervisor.logs
        self.max_attempts, self.retry_backoff, self.max_in_flight = max_attempts, retry_backoff, max_in_flight
        self.retention = retention_hours * 3600
        self.pruned = 0.0  # time.monotonic() of the last prune
        self.subscribers = {}  # group name → Subscriber
        self.retired = {}  # group name → Subscriber stopped by a reload (may still be finishing)
        self.triggers = {}  # (kind, name) → trigger
        self.warned = set()
        self.lock = threading.Lock()

    def say(self, name, text):
        self.logs.emit(name, text, "system")

    def backoff(self, attempts):
        return backoff(attempts, self.retry_backoff, BACKOFF_MAX)

    def update(self, manifests):
        """Make the running subscribers those of `manifests`' triggers; their topics exist from now on."""
        wanted, unmatched = subscriptions(manifests.kafka_triggers + manifests.nats_triggers, manifests.functions)
        for trigger in unmatched:
            warning = "%s: spec.functionSelector matches no Function in this project" % trigger.origin
            if warning not in self.warned:
                self.warned.add(warning)
                self.say("dev", warning)
        with self.lock:
            self.triggers = {(type(t).__name__, t.name): t for t in manifests.kafka_triggers + manifests.nats_triggers}
            for trigger in self.triggers.values():
                self.store.create(trigger.topic)
            wanted_by_name = {sub.name: sub for sub in wanted}
            for name in list(self.subscribers):
                if name not in wanted_by_name:
                    self.retired[name] = self.subscribers.pop(name)
                    self.retired[name].stop()
            for name, sub in wanted_by_name.items():
                if name not in self.subscribers:
                    old = self.retired.pop(name, None)
                    if old is not None:
                        old.join(STOP_TIMEOUT)  # back again: it resumes from the position the old one commits
                    self.store.subscribe(name, sub.topic, sub.source)  # before update() returns: no emit is missed
                    subscriber = self.subscribers[name] = Subscriber(self, sub)
                    subscriber.start()
        self.prune()

    def stop(self):
        with self.lock:
            subscribers = list(self.subscribers.values())
            self.subscribers.clear()
        for subscriber in subscribers:
            subscriber.stop()
        deadline = time.monotonic() + STOP_TIMEOUT
        for subscriber in subscribers:
            subscriber.join(timeout=max(0.0, deadline - time.monotonic()))

    def clear(self):
        """Empty every topic: its events and dead letters go, and each subscriber starts again after them (an
        event it was retrying is dropped). The topics, triggers and functions stay as they are."""
        with self.lock:  # an emit waits meanwhile
            running = list(self.subscribers.values())
            for subscriber in running:
                subscriber.stop()
            deadline = time.monotonic() + STOP_TIMEOUT
            for subscriber in running:
                subscriber.join(timeout=max(0.0, deadline - time.monotonic()))
            self.store.clear()
            for subscriber in running:
                again = self.subscribers[subscriber.sub.name] = Subscriber(self, subscriber.sub)
                again.start()

    def _subscribers_of(self, topic, source=None):
        with self.lock:
            return [
                s
                for s in self.subscribers.values()
                if s.sub.topic == topic and (source is None or s.sub.source == source)
            ]

    # ------------------------------------------------------------ what the admin API offers

    def emit(self, topic, source, datas):
        """Store events (durably) and wake their subscribers; returns (seqs, subscription names)."""
        seqs = self.store.append(topic, source, datas)
        subscribers = self._subscribers_of(topic, source)
        if seqs:
            names = [s.sub.name for s in subscribers]
            self.on_event(
                "topic-append", {"topic": topic, "source": source, "seqs": [seqs[0], seqs[-1]], "subscribers": names}
            )
        for subscriber in subscribers:
            subscriber.wake.set()
        if time.monotonic() - self.pruned > PRUNE_EVERY:
            self.prune()
        return seqs, [s.sub.name for s in subscribers]

    def prune(self):
        """Drop the events older than the retention that every running subscriber of their topic has
        consumed (dead letters stay until replayed or their topic is deleted)."""
        self.pruned = time.monotonic()
        kept_after: dict = {}
        with self.lock:
            for subscriber in self.subscribers.values():
                key = (subscriber.sub.topic, subscriber.sub.source)
                position = subscriber.position or self.store.position(subscriber.sub.name, subscriber.sub.topic)
                kept_after[key] = min(kept_after.get(key, position), position)
        self.store.prune(time.time() - self.retention, kept_after)

    def outcome(self, topic, source, seqs):
        """{seq: {subscriber: delivered | dead-lettered | retrying (…) | pending}} of emitted events."""
        seqs = list(seqs)
        result: dict = {seq: {} for seq in seqs}
        for subscriber in self._subscribers_of(topic, source):
            name = subscriber.sub.name
            position = subscriber.position
            dead = self.store.dead_seqs(name, seqs[0], seqs[-1]) if seqs else set()
            retries = dict(subscriber.retries)
            for seq in seqs:
                if seq in dead:
                    result[seq][name] = "dead-lettered"
                elif seq <= position:
                    result[seq][name] = "delivered"
                elif seq in retries and retries[seq].attempts:
                    retry = retries[seq]
                    answer = retry.status or "no answer"
                    result[seq][name] = "retrying (attempt %d failed with %s)" % (retry.attempts, answer)
                else:
                    result[seq][name] = "pending"
        return result

    def replay(self, topic, trigger=None, letter_id=None):
        if not self.store.exists(topic):
            raise NotFound("no topic %r" % topic, "topic", topic)
        names = None
        if trigger is not None:
            if not any(name == trigger for _, name in self.triggers):
                raise NotFound("no KafkaTrigger or NATSTrigger %r in this project" % trigger, "trigger", trigger)
            names = [s.sub.name for s in self._subscribers_of(topic) if s.sub.trigger == trigger]
        count = self.store.replay(topic, names, letter_id)
        for subscriber in self._subscribers_of(topic):
            subscriber.wake.set()
        return count

    def delete(self, topic):
        users = sorted("%s %s" % key for key, t in self.triggers.items() if t.topic == topic)
        if users:
            raise Conflict(
                "topic %r is used by %s; remove the trigger first" % (topic, ", ".join(users)), "topic", topic
            )
        self.store.delete(topic)

    def topics(self):
        """Every topic: its event count, its subscribers (position, lag) and its dead letters."""
        rows = []
        positions = self.store.positions()
        letters = self.store.dead_letters()
        with self.lock:
            subscribers = list(self.subscribers.values())
        for topic in self.store.topics():
            subs = []
            for subscriber in subscribers:
                sub = subscriber.sub
                if sub.topic != topic:
                    continue
                position = max(subscriber.position, positions.get(sub.name, (topic, 0))[1])
                subs.append(
                    {
                        "name": sub.name,
                        "trigger": sub.trigger,
                        "kind": sub.kind,
                        "function": sub.function,
                        "position": position,
                        "lag": self.store.count_after(topic, sub.source, position),
                    }
                )
            rows.append(
                {
                    "name": topic,
                    "events": self.store.count(topic),
                    "subscribers": subs,
                    "dead_letters": [
                        dict(d, function=self._function_of(d["subscriber"])) for d in letters if d["topic"] == topic
                    ],
                }
            )
        return rows

    def _function_of(self, subscriber_name):
        subscriber = self.subscribers.get(subscriber_name)
        if subscriber is not None:
            return subscriber.sub.function
        return subscriber_name.split(":")[-1].split("_")[2] if subscriber_name.count("_") >= 3 else None

    def dead_letter_counts(self):
        """{function: dead letters waiting}, for `ls`."""
        counts: dict = {}
        for letter in self.store.dead_letters():
            function = self._function_of(letter["subscriber"])
            counts[function] = counts.get(function, 0) + 1
        return counts
