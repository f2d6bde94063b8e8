"""The embedded topics: a durable append-only log in SQLite (WAL) under .kubeless-local/.

One file, `topics.db`: the topics, their events (each with the `event-id` and `event-time` it got when it
was emitted, kept on every redelivery), the position of every subscriber (named as the Kubeless
controller names its consumer group, `<ns>_<trigger>_<fn>_<topic>`) and the dead letters.

An emit is committed with `synchronous=FULL` before it is acknowledged, so an acknowledged event survives
a kill -9 or a power cut. Positions are written with `synchronous=NORMAL`: losing the last one only
redelivers (at-least-once), never loses.

SQLite connections are per thread (`threading.local`); WAL lets the dispatcher read while `emit` writes.
The file (and its WAL) is readable by its owner only, as admin.json; a damaged or locked file is one line
naming it, never a traceback.
"""

import contextlib
import functools
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import cast

from kubeless_local.errors import NotFound, Unavailable, UserError, disk_full
from kubeless_local.events import SOURCES, event_id, event_time
from kubeless_local.spec import TOPIC_RE

FILENAME = "topics.db"
SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    source TEXT NOT NULL,
    data BLOB NOT NULL,
    event_id TEXT NOT NULL,
    event_time TEXT NOT NULL,
    emitted REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_topic ON events (topic, source, seq);
CREATE TABLE IF NOT EXISTS positions (subscriber TEXT PRIMARY KEY, topic TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subscriber TEXT NOT NULL,
    topic TEXT NOT NULL,
    seq INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    at REAL NOT NULL,
    replay INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS dead_by_subscriber ON dead_letters (subscriber, replay, id);
"""
MAX_BODY = 4096  # of a dead letter's last answer: enough to see the error
BUSY_TIMEOUT = 5.0  # seconds a write waits for another program holding topics.db (under the admin API's 10 s)


def check_topic_name(name):
    """The one topic-name check (embedded topics and the broker): the names Kafka accepts."""
    if not isinstance(name, str) or not TOPIC_RE.match(name) or name in (".", ".."):
        raise UserError("topic name %r must be 1-249 letters, digits, '.', '_' or '-' (as Kafka's)" % name)


class Event:
    __slots__ = ("data", "event_id", "event_time", "seq", "source", "topic")

    def __init__(self, seq, topic, source, data, event_id, event_time):
        self.seq, self.topic, self.source, self.data = seq, topic, source, data
        self.event_id, self.event_time = event_id, event_time

    def __repr__(self):
        return "Event(%d, %r, %r)" % (self.seq, self.topic, self.data[:40])


EVENT_COLUMNS = "seq, topic, source, data, event_id, event_time"


def serialized(method):
    """Run a store method on the calling thread's own connection (a subscriber's), else on the shared one,
    holding that connection's lock for the whole method (a transaction is several statements; and `close()`
    from another thread must wait: SQLite crashes the process when a connection closes under a statement)."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self.explained(), getattr(self.local, "in_use", None) or self.shared_lock:
            return method(self, *args, **kwargs)

    return run


@contextlib.contextmanager
def immediate(db):
    """BEGIN IMMEDIATE … COMMIT around the block, rolled back when it fails — unless SQLite ended the transaction
    itself (a full disk does), where a ROLLBACK would fail and hide why."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class TopicStore:
    """Long-lived threads (subscribers) `attach()` a connection of their own; every other caller (the admin
    API's request threads, the watcher's reloads) shares one, so short-lived threads leak no connections."""

    def __init__(self, state_dir, busy_timeout=BUSY_TIMEOUT):
        self.path = Path(state_dir) / FILENAME
        self.busy_timeout = busy_timeout
        self.local = threading.local()
        self.lock = threading.Lock()
        self.shared_lock = threading.RLock()
        with self.explained():
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))  # SQLite gives its -wal/-shm the same mode
            os.chmod(self.path, 0o600)  # one made before it was 0600
            self.shared = self._connect()
            self.connections = {self.shared: self.shared_lock}  # each connection and the lock of its use
            self.shared.executescript(SCHEMA)

    def _connect(self):
        db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            db.close()
            raise
        return db

    @contextlib.contextmanager
    def explained(self):
        """A damaged, locked or unreadable topics.db as one UserError line naming it and what to do."""
        try:
            yield
        except PermissionError as exc:
            raise UserError(
                "%s: %s; it must be this user's (chown it, or move it away)" % (self.path, exc.strerror)
            ) from None
        except sqlite3.OperationalError as exc:
            if disk_full(exc):  # nothing is damaged: no hint to move the file away
                raise UserError("%s cannot be written: its disk is full; make room and try again" % self.path) from None
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            raise UserError(
                "%s is locked by another program (%s); close whatever holds it (an open sqlite3 shell, a second "
                "copy of the project) and try again" % (self.path, exc)
            ) from None
        except sqlite3.DatabaseError as exc:
            if type(exc) is not sqlite3.DatabaseError:
                raise  # a closed connection (ProgrammingError) and the like: not the file's fault
            raise Unavailable(
                "%s is damaged (%s); move it away (e.g. `mv %s %s.damaged`)" % (self.path, exc, self.path, self.path),
                "topics database",
                str(self.path),
            ) from None

    @property
    def db(self):
        return getattr(self.local, "db", None) or self.shared

    def attach(self):
        """Give the calling thread a connection of its own (it reads while others write); `detach()` at its end."""
        db, in_use = self._connect(), threading.RLock()  # re-entrant: a store method may call another
        with self.lock:
            self.connections[db] = in_use
        self.local.db, self.local.in_use = db, in_use

    def detach(self):
        db = getattr(self.local, "db", None)
        if db is not None:
            with self.lock:
                in_use = self.connections.pop(db, None)
            if in_use is not None:
                with in_use:
                    db.close()
            self.local.db = self.local.in_use = None

    def close(self):
        """Close every connection, each once no statement runs on it; a subscriber still running then gets
        sqlite3.ProgrammingError from its next call (its thread is stopping)."""
        with self.lock:
            connections, self.connections = dict(self.connections), {}
        for db, in_use in connections.items():
            with in_use:
                db.close()

    # ------------------------------------------------------------ topics

    @serialized
    def topics(self):
        return [row[0] for row in self.db.execute("SELECT name FROM topics ORDER BY name")]

    @serialized
    def exists(self, name):
        return self.db.execute("SELECT 1 FROM topics WHERE name = ?", (name,)).fetchone() is not None

    @serialized
    def create(self, name):
        """Create a topic (no-op when it exists); True when it was new."""
        check_topic_name(name)
        cursor = self.db.execute("INSERT OR IGNORE INTO topics VALUES (?, ?)", (name, time.time()))
        return cursor.rowcount == 1

    @serialized
    def delete(self, name):
        """Drop a topic with its events, positions and dead letters."""
        if not self.exists(name):
            raise NotFound("no topic %r" % name, "topic", name)
        with immediate(self.db) as db:
            for table in ("events", "positions", "dead_letters"):
                db.execute("DELETE FROM %s WHERE topic = ?" % table, (name,))
            db.execute("DELETE FROM topics WHERE name = ?", (name,))

    @serialized
    def clear(self):
        """Drop every event and dead letter; topics and positions stay (sequence numbers never repeat, so a
        position stays before every new event)."""
        with immediate(self.db) as db:
            db.execute("DELETE FROM dead_letters")
            db.execute("DELETE FROM events")

    # ------------------------------------------------------------ events

    @serialized
    def append(self, topic, source, datas):
        """Store events (one per item of `datas`, bytes), each with its own event-id and event-time; returns
        their sequence numbers once they are on disk (fsync'd)."""
        if not self.exists(topic):
            raise NotFound("no topic %r" % topic, "topic", topic)
        kind = cast(dict, SOURCES[source])  # events.SOURCES: one dict of envelope rules per source
        db = self.db
        db.execute("PRAGMA synchronous=FULL")
        try:
            with immediate(db):
                seqs = []
                now = time.time()
                for data in datas:
                    cursor = db.execute(
                        "INSERT INTO events (topic, source, data, event_id, event_time, emitted) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (topic, source, data, event_id(kind["id"]), event_time(kind["time"]), now),
                    )
                    seqs.append(cursor.lastrowid)
        finally:
            db.execute("PRAGMA synchronous=NORMAL")
        return seqs

    @serialized
    def events_after(self, topic, source, seq, limit=100):
        rows = self.db.execute(
            "SELECT %s FROM events WHERE topic = ? AND source = ? AND seq > ? ORDER BY seq LIMIT ?" % EVENT_COLUMNS,
            (topic, source, seq, limit),
        )
        return [Event(*row) for row in rows]

    @serialized
    def event(self, seq):
        row = self.db.execute("SELECT %s FROM events WHERE seq = ?" % EVENT_COLUMNS, (seq,)).fetchone()
        return Event(*row) if row else None

    @serialized
    def count(self, topic, source=None):
        if source is None:
            return self.db.execute("SELECT COUNT(*) FROM events WHERE topic = ?", (topic,)).fetchone()[0]
        return self.db.execute(
            "SELECT COUNT(*) FROM events WHERE topic = ? AND source = ?", (topic, source)
        ).fetchone()[0]

    @serialized
    def count_after(self, topic, source, seq):
        return self.db.execute(
            "SELECT COUNT(*) FROM events WHERE topic = ? AND source = ? AND seq > ?", (topic, source, seq)
        ).fetchone()[0]

    @serialized
    def last_seq(self, topic, source):
        row = self.db.execute("SELECT MAX(seq) FROM events WHERE topic = ? AND source = ?", (topic, source)).fetchone()
        return row[0] or 0

    @serialized
    def prune(self, emitted_before, kept_after):
        """Delete the events emitted before `emitted_before` (epoch seconds), except dead letters and, per
        (topic, source) in `kept_after`, the events after that seq (a subscriber has not consumed them yet);
        returns how many went."""
        deleted = 0
        for topic, source in self.db.execute("SELECT DISTINCT topic, source FROM events").fetchall():
            cursor = self.db.execute(
                "DELETE FROM events WHERE topic = ? AND source = ? AND emitted < ? AND seq <= ? "
                "AND seq NOT IN (SELECT seq FROM dead_letters WHERE topic = ?)",
                (topic, source, emitted_before, kept_after.get((topic, source), 2**62), topic),
            )
            deleted += cursor.rowcount
        return deleted

    # ------------------------------------------------------------ subscribers

    @serialized
    def position(self, subscriber, topic):
        """The last event `subscriber` consumed (0 for one that never subscribed)."""
        row = self.db.execute("SELECT seq FROM positions WHERE subscriber = ?", (subscriber,)).fetchone()
        return row[0] if row else 0

    @serialized
    def subscribe(self, subscriber, topic, source):
        """The position `subscriber` resumes from; a new subscriber starts after the newest event of its
        topic, as a new Kafka consumer group (OffsetNewest) and a core NATS subscription do, and that
        position is stored at once: what is emitted from now on is delivered, even across a restart."""
        self.db.execute(
            "INSERT OR IGNORE INTO positions "
            "SELECT ?, ?, COALESCE(MAX(seq), 0) FROM events WHERE topic = ? AND source = ?",
            (subscriber, topic, topic, source),
        )
        return self.position(subscriber, topic)

    @serialized
    def commit(self, subscriber, topic, seq):
        self.db.execute(
            "INSERT INTO positions VALUES (?, ?, ?) ON CONFLICT (subscriber) DO UPDATE SET seq = excluded.seq",
            (subscriber, topic, seq),
        )

    @serialized
    def positions(self):
        return {row[0]: (row[1], row[2]) for row in self.db.execute("SELECT subscriber, topic, seq FROM positions")}

    # ------------------------------------------------------------ dead letters

    @serialized
    def dead_letter(self, subscriber, topic, seq, attempts, status, body):
        """Park an event that failed `attempts` times and move the subscriber past it, in one transaction."""
        with immediate(self.db) as db:
            db.execute(
                "INSERT INTO dead_letters (subscriber, topic, seq, attempts, status, body, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (subscriber, topic, seq, attempts, status, body[:MAX_BODY], time.time()),
            )
            db.execute(
                "INSERT INTO positions VALUES (?, ?, ?) ON CONFLICT (subscriber) DO UPDATE SET seq = excluded.seq",
                (subscriber, topic, seq),
            )

    @serialized
    def dead_letters(self, topic=None):
        query = (
            "SELECT d.id, d.subscriber, d.topic, d.seq, d.attempts, d.status, d.body, d.at, d.replay, "
            "e.event_id, e.event_time FROM dead_letters d JOIN events e ON e.seq = d.seq"
        )
        args: tuple = ()
        if topic is not None:
            query += " WHERE d.topic = ?"
            args = (topic,)
        keys = ("id", "subscriber", "topic", "seq", "attempts", "status", "body", "at", "replay", "event_id", "time")
        rows = [dict(zip(keys, row)) for row in self.db.execute(query + " ORDER BY d.id", args)]
        for row in rows:
            row["replay"] = bool(row["replay"])
            row["event_time"] = row.pop("time")
        return rows

    @serialized
    def replay(self, topic, subscribers=None, letter_id=None):
        """Mark dead letters of `topic` (all, those of `subscribers`, or one id) to be sent again; returns how many."""
        query, args = "UPDATE dead_letters SET replay = 1 WHERE topic = ? AND replay = 0", [topic]
        if subscribers is not None:
            query += " AND subscriber IN (%s)" % ",".join("?" * len(subscribers))
            args.extend(subscribers)
        if letter_id is not None:
            query += " AND id = ?"
            args.append(letter_id)
        return self.db.execute(query, args).rowcount

    @serialized
    def replays(self, subscriber, limit=100):
        """(dead letter id, Event) the subscriber must send again, oldest first."""
        rows = self.db.execute(
            "SELECT d.id, %s FROM dead_letters d JOIN events e ON e.seq = d.seq "
            "WHERE d.subscriber = ? AND d.replay = 1 ORDER BY d.id LIMIT ?"
            % ", ".join("e." + c.strip() for c in EVENT_COLUMNS.split(",")),
            (subscriber, limit),
        )
        return [(row[0], Event(*row[1:])) for row in rows]

    @serialized
    def replayed(self, letter_id):
        """A replayed dead letter was delivered: it is gone."""
        self.db.execute("DELETE FROM dead_letters WHERE id = ?", (letter_id,))

    @serialized
    def dead_again(self, letter_id, attempts, status, body):
        self.db.execute(
            "UPDATE dead_letters SET replay = 0, attempts = ?, status = ?, body = ?, at = ? WHERE id = ?",
            (attempts, status, body[:MAX_BODY], time.time(), letter_id),
        )

    @serialized
    def dead_seqs(self, subscriber, first, last):
        """Which events from `first` to `last` are dead letters of `subscriber` (waiting, not being replayed)."""
        rows = self.db.execute(
            "SELECT seq FROM dead_letters WHERE subscriber = ? AND replay = 0 AND seq BETWEEN ? AND ?",
            (subscriber, first, last),
        )
        return {row[0] for row in rows}
