"""The embedded topics on the session's event bus: each append, each event a subscriber is past (delivered) and
each dead letter, and a dead letter replayed, as the Dispatcher (emulator/triggers/delivery.py) tells them."""

from test_delivery import FakeFunction, FakeSupervisor, fn, trigger
from waiting import wait_until

from kubeless_local import spec as specs
from kubeless_local.emulator.base import Instance, State
from kubeless_local.emulator.bus import EventBus
from kubeless_local.emulator.logs import LogHub
from kubeless_local.emulator.triggers.delivery import Dispatcher
from kubeless_local.emulator.triggers.topics import TopicStore


def test_appends_commits_dead_letters_and_their_replay_go_on_the_bus(tmp_path):
    function, logs, bus = FakeFunction(), LogHub(), EventBus()
    supervisor = FakeSupervisor(logs)
    supervisor.instances["hello"] = Instance(name="hello", runtime="python3.11", port=function.port, state=State.READY)
    store = TopicStore(tmp_path)
    dispatcher = Dispatcher(store, supervisor, logs, max_attempts=2, retry_backoff=0.01, on_event=bus.publish)
    kinds = lambda: [(e.kind, e.data.get("seq")) for e in bus.after(0).events]  # noqa: E731
    try:
        function.answer = lambda body, attempt: 503 if body == b"bad" else 200
        dispatcher.update(specs.Manifests(functions=[fn()], kafka_triggers=[trigger()]))
        (bad, good), _ = dispatcher.emit("orders", "kafka", [b"bad", b"good"])
        wait_until(lambda: ("topic-commit", good) in kinds(), "the good event delivered")
        assert kinds() == [("topic-append", None), ("dead-letter", bad), ("topic-commit", good)]
        append, letter, commit = (e.data for e in bus.after(0).events)
        assert append == {
            "topic": "orders",
            "source": "kafka",
            "seqs": [bad, good],
            "subscribers": ["default_orders_hello_orders"],
        }
        assert (letter["function"], letter["attempts"], letter["status"]) == ("hello", 2, 503)
        assert (commit["subscriber"], commit["status"]) == ("default_orders_hello_orders", 200)
        function.answer = lambda body, attempt: 200
        assert dispatcher.replay("orders") == 1
        wait_until(lambda: kinds()[-1] == ("dead-letter-replayed", bad), "the replayed letter on the bus")
    finally:
        dispatcher.stop()
        store.close()
        function.close()
