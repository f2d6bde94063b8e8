"""The embedded topics' store (SQLite WAL), label selectors and the `kafka:` settings."""

import re
import subprocess
import sys

import pytest

from kubeless_local.commands.events import EMIT_HINTS
from kubeless_local.commands.output import worded
from kubeless_local.emulator.triggers import subscriptions
from kubeless_local.emulator.triggers.topics import TopicStore
from kubeless_local.errors import NotFound, UserError


@pytest.fixture
def store(tmp_path):
    store = TopicStore(tmp_path)
    store.create("orders")
    yield store
    store.close()


def test_events_keep_their_order_and_get_id_and_time_when_emitted(store):
    seqs = store.append("orders", "kafka", [b"a", b"b"]) + store.append("orders", "kafka", [b"c"])
    events = store.events_after("orders", "kafka", 0)
    assert [e.seq for e in events] == seqs and [e.data for e in events] == [b"a", b"b", b"c"]
    assert len({e.event_id for e in events}) == 3
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{15}", e.event_id) for e in events)
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{0,8}[1-9])? \+0000 UTC", e.event_time) for e in events
    )
    assert [e.data for e in store.events_after("orders", "kafka", seqs[0])] == [b"b", b"c"]
    assert store.events_after("orders", "nats", 0) == []  # NATS subscribers see NATS messages only


def test_an_unknown_topic_is_refused_and_a_bad_name_too(store):
    with pytest.raises(NotFound, match="^no topic 'nope'$") as missing:  # the engine's words, no CLI command
        store.append("nope", "kafka", [b"x"])
    assert str(worded(missing.value, EMIT_HINTS)) == (  # the CLI's words for it
        "no topic 'nope'; create it with `kubeless-local topic create nope` or add a trigger for it"
    )
    with pytest.raises(UserError, match="topic name 'a b' must be"):
        store.create("a b")
    assert store.create("orders") is False and store.create("more") is True
    assert store.topics() == ["more", "orders"]


def test_positions_are_per_subscriber(store):
    seqs = store.append("orders", "kafka", [b"a", b"b"])
    assert store.position("default_t_f_orders", "orders") == 0  # never subscribed
    assert store.subscribe("default_t_h_orders", "orders", "kafka") == seqs[-1]  # a new one starts at the newest
    store.commit("default_t_f_orders", "orders", seqs[0])
    assert store.position("default_t_f_orders", "orders") == seqs[0]
    assert store.position("default_t_g_orders", "orders") == 0
    assert store.count_after("orders", "kafka", seqs[0]) == 1


def test_everything_survives_closing_and_reopening(tmp_path, store):
    seqs = store.append("orders", "kafka", [b"a", b"b"])
    first = store.events_after("orders", "kafka", 0)
    store.commit("sub", "orders", seqs[0])
    store.dead_letter("sub2", "orders", seqs[1], 5, 500, "boom")
    store.close()
    again = TopicStore(tmp_path)
    try:
        assert again.topics() == ["orders"]
        reread = again.events_after("orders", "kafka", 0)
        assert [(e.seq, e.data, e.event_id, e.event_time) for e in reread] == [
            (e.seq, e.data, e.event_id, e.event_time) for e in first
        ]
        assert again.position("sub", "orders") == seqs[0]
        assert [(d["seq"], d["status"], d["body"]) for d in again.dead_letters()] == [(seqs[1], 500, "boom")]
    finally:
        again.close()


def test_dead_letter_moves_the_position_and_replay_marks_it(store):
    (seq,) = store.append("orders", "kafka", [b"a"])
    store.dead_letter("sub", "orders", seq, 5, 503, "x" * 10_000)
    assert store.position("sub", "orders") == seq
    (letter,) = store.dead_letters("orders")
    assert letter["attempts"] == 5 and letter["status"] == 503 and len(letter["body"]) == 4096
    assert letter["event_id"] == store.event(seq).event_id and not letter["replay"]
    assert store.dead_seqs("sub", seq, seq) == {seq}
    assert store.replays("sub") == []
    assert store.replay("orders", ["other"]) == 0
    assert store.replay("orders") == 1
    ((letter_id, event),) = store.replays("sub")
    assert event.seq == seq and store.dead_seqs("sub", seq, seq) == set()
    store.dead_again(letter_id, 5, 500, "again")
    assert store.dead_letters()[0]["status"] == 500 and store.replays("sub") == []
    store.replay("orders", letter_id=letter_id)
    store.replayed(letter_id)
    assert store.dead_letters() == []


def test_delete_drops_the_topic_with_its_events(store):
    (seq,) = store.append("orders", "kafka", [b"a"])
    store.commit("sub", "orders", seq)
    store.delete("orders")
    assert store.topics() == [] and store.event(seq) is None and store.positions() == {}
    with pytest.raises(UserError, match="no topic 'orders'"):
        store.delete("orders")


LABELS = {"app": "shop", "tier": "back"}
IN = {"key": "tier", "operator": "In", "values": ["back", "db"]}


@pytest.mark.parametrize(
    ("match_labels", "expressions", "expected"),
    [
        ({}, (), True),  # an empty selector matches every function
        ({"app": "shop"}, (), True),
        ({"app": "shop", "tier": "front"}, (), False),
        ({"missing": "x"}, (), False),
        ({}, (IN,), True),
        ({}, ({"key": "tier", "operator": "In", "values": ["front"]},), False),
        ({}, ({"key": "nope", "operator": "In", "values": ["back"]},), False),
        ({}, ({"key": "tier", "operator": "NotIn", "values": ["back"]},), False),
        ({}, ({"key": "tier", "operator": "NotIn", "values": ["front"]},), True),
        ({}, ({"key": "nope", "operator": "NotIn", "values": ["x"]},), True),  # absent key: NotIn holds
        ({}, ({"key": "app", "operator": "Exists"},), True),
        ({}, ({"key": "nope", "operator": "Exists"},), False),
        ({}, ({"key": "nope", "operator": "DoesNotExist"},), True),
        ({}, ({"key": "app", "operator": "DoesNotExist"},), False),
        ({"app": "shop"}, (IN, {"key": "app", "operator": "DoesNotExist"}), False),  # every one must hold
    ],
)
def test_label_selector_semantics(match_labels, expressions, expected):
    assert subscriptions.selector_matches(LABELS, match_labels, expressions) is expected


def test_group_names_are_the_kubeless_controllers():
    assert subscriptions.group_name("default", "orders", "hello", "t") == "default_orders_hello_t"
    assert subscriptions.group_name("default", "orders", "hello", "t", "nats") == "nats:default_orders_hello_t"


def test_short_lived_threads_share_one_connection_and_subscribers_get_their_own(store):
    """The admin API answers each request on a new thread: a connection each would leak file descriptors."""
    import threading

    threads = [threading.Thread(target=store.append, args=("orders", "kafka", [b"x"])) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.count("orders") == 20 and len(store.connections) == 1
    seen = []

    def subscriber():
        store.attach()
        seen.append((len(store.connections), len(store.events_after("orders", "kafka", 0))))
        store.detach()

    thread = threading.Thread(target=subscriber)
    thread.start()
    thread.join()
    assert seen == [(2, 20)] and len(store.connections) == 1


def test_topics_db_is_created_readable_by_its_owner_only(tmp_path):
    store = TopicStore(tmp_path)
    try:
        store.create("orders")
        store.append("orders", "kafka", [b"x"])
        for name in ("topics.db", "topics.db-wal"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
    finally:
        store.close()


def test_a_corrupt_topics_db_is_one_line_naming_the_file_and_what_to_do(tmp_path):
    (tmp_path / "topics.db").write_bytes(b"this is not a database, it was damaged" * 200)
    with pytest.raises(UserError) as error:
        TopicStore(tmp_path)
    message = str(error.value)
    assert str(tmp_path / "topics.db") in message and "\n" not in message
    assert "move it away" in message


def test_a_locked_topics_db_says_it_is_locked(tmp_path, store):
    import sqlite3

    other = sqlite3.connect(tmp_path / "topics.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        quick = TopicStore(tmp_path, busy_timeout=0.1)
        with pytest.raises(UserError, match=r"topics.db is locked by another program"):
            quick.append("orders", "kafka", [b"x"])
        quick.close()
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_a_full_disk_is_one_line_saying_so_and_nothing_is_taken(tmp_path, store):
    # "database or disk is full" was raised as it was: the admin API's thread died with a traceback on dev's
    # console and `emit`/`topic create` said that dev was not running.
    store.append("orders", "kafka", [b"kept"])
    pages = store.shared.execute("PRAGMA page_count").fetchone()[0]
    store.shared.execute("PRAGMA max_page_count = %d" % pages)  # SQLite's own SQLITE_FULL, as a full disk gives it
    with pytest.raises(UserError) as error:
        store.append("orders", "kafka", [b"x" * 100_000])
    message = str(error.value)
    assert message.startswith(str(tmp_path / "topics.db")) and "disk is full" in message and "\n" not in message
    assert "make room" in message
    assert [e.data for e in store.events_after("orders", "kafka", 0)] == [b"kept"]  # nothing half taken


RACE = """
import sqlite3, sys, threading
from kubeless_local.emulator.triggers.topics import TopicStore

for _ in range(100):
    store = TopicStore(sys.argv[1])  # the same file each time: opened, not created again (the race is the close)
    attached = threading.Event()

    def subscriber():
        store.attach()
        attached.set()
        try:
            for _ in range(100_000):
                store.subscribe("s", "t", "kafka")
        except sqlite3.ProgrammingError:
            pass  # the store closed under it, as when `dev` stops
        finally:
            store.detach()

    thread = threading.Thread(target=subscriber)
    thread.start()
    attached.wait(10)
    store.close()
    thread.join(10)
"""


def test_closing_the_store_under_a_running_subscriber_never_crashes_the_process(tmp_path):
    """SQLite crashes the process (SIGSEGV) when a connection closes under a running statement: close()
    waits for the statement. Run in a child interpreter, so a crash fails this test, not the suite."""
    done = subprocess.run([sys.executable, "-c", RACE, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_clear_drops_events_and_dead_letters_and_new_events_come_after_every_position(store):
    first, second = store.append("orders", "kafka", [b"a", b"b"])
    store.subscribe("sub", "orders", "kafka")
    store.dead_letter("sub", "orders", first, 3, 500, "boom")
    store.clear()
    assert store.count("orders") == 0 and store.dead_letters() == [] and store.topics() == ["orders"]
    (third,) = store.append("orders", "kafka", [b"c"])
    assert third > second and [
        e.data for e in store.events_after("orders", "kafka", store.position("sub", "orders"))
    ] == [b"c"]
