"""The session's topics behind one interface: the embedded log (topics.py + delivery.Dispatcher) or a real
Kafka broker (kafka_bridge.KafkaBridge), picked once by the session (session.py). The admin API and the
`emit`/`topic` commands call this interface and never ask which one runs.

Neither loses an event. What an event that failed every attempt becomes is decided here, once: a dead
letter, kept with its last answer where its source keeps events —

- embedded: a row of `topics.db`'s dead letters (`topic ls` lists them, `topic replay` sends them again);
- on a broker: a message of `dead_letter_topic(topic)`, `<topic>.dead-letter`, on that broker, produced
  (acks=all) with the message's value, key and timestamp and DEAD_LETTER_HEADERS saying why; the failed
  message's offset is committed only once the broker has the dead letter.

`emit` answers one shape (a dict, JSON as the admin API sends it):

    topic, source, count        what was emitted
    subscribers                 who will receive it: subscriber / consumer-group names
    broker                      None: stored in the embedded log; else the broker's address
    ranges                      where the events are: [{partition, first, last}]; partition None for the
                                embedded log, whose positions are sequence numbers
    tracked                     `outcome(topic, source, first, last)` follows these events (embedded); on a
                                broker the consumer groups track them (their lag in `list()`)
"""

import abc

DEAD_LETTER_SUFFIX = ".dead-letter"
# The headers of a dead letter on a broker (values UTF-8 text), after the message's own headers.
DEAD_LETTER_HEADERS = (
    "original-topic",
    "original-partition",
    "original-offset",
    "event-id",  # the event-id the function was sent (derived from the message: the same on each attempt)
    "consumer-group",
    "function",
    "attempts",
    "last-status",  # 0: no answer (the function's server closed the connection, or its timeout passed)
    "last-body",  # the last answer's body, at most MAX_DEAD_BODY bytes
)
MAX_DEAD_BODY = 4096  # as topics.MAX_BODY: enough to see the error


def dead_letter_topic(topic):
    """The broker topic a message of `topic` that failed every attempt is produced to."""
    return topic + DEAD_LETTER_SUFFIX


def emitted(topic, source, subscribers, ranges, broker=None):
    """The one answer of `Topics.emit`."""
    count = sum(last - first + 1 for _, first, last in ranges)
    return {
        "topic": topic,
        "source": source,
        "count": count,
        "subscribers": list(subscribers),
        "broker": broker,
        "ranges": [{"partition": partition, "first": first, "last": last} for partition, first, last in ranges],
        "tracked": broker is None,
    }


class Topics(abc.ABC):
    """The verbs of `emit` and `topic …` (through the admin API); UserError for what the user must fix."""

    @abc.abstractmethod
    def emit(self, topic, source, data, count):
        """Store (embedded, fsync'd) or produce (broker, acks=all) `count` events of `data` (bytes) from
        `source` (kafka or nats); returns once they are durable, in the shape of `emitted()`."""

    @abc.abstractmethod
    def list(self):
        """Every topic: {name, events, subscribers: [{name, function, lag, …}], dead_letters: [...]}."""

    @abc.abstractmethod
    def create(self, name):
        """Create topic `name`; False when it exists already."""

    @abc.abstractmethod
    def delete(self, name):
        """Delete topic `name` with its events; UserError when there is none or a trigger uses it."""

    @abc.abstractmethod
    def outcome(self, topic, source, first, last):
        """{position: {subscriber: delivered | dead-lettered | retrying (…) | pending}} of tracked events."""

    @abc.abstractmethod
    def replay(self, topic, trigger=None, letter_id=None):
        """Send a topic's dead letters (of `trigger`, or the one `letter_id`) again; how many."""

    @abc.abstractmethod
    def dead_letter_counts(self):
        """{function: dead letters waiting}, for `ls`."""


class EmbeddedTopics(Topics):
    """The durable SQLite log under .kubeless-local/ and its Dispatcher (every KafkaTrigger and NATSTrigger)."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher

    def emit(self, topic, source, data, count):
        seqs, subscribers = self.dispatcher.emit(topic, source, [data] * count)
        return emitted(topic, source, subscribers, [(None, seqs[0], seqs[-1])])

    def list(self):
        return self.dispatcher.topics()

    def create(self, name):
        return self.dispatcher.store.create(name)

    def delete(self, name):
        self.dispatcher.delete(name)

    def outcome(self, topic, source, first, last):
        return self.dispatcher.outcome(topic, source, range(first, last + 1))

    def replay(self, topic, trigger=None, letter_id=None):
        return self.dispatcher.replay(topic, trigger, letter_id)

    def dead_letter_counts(self):
        return self.dispatcher.dead_letter_counts()


class BrokerTopics(Topics):
    """Kafka topics on a real broker (`dev` is the KafkaTrigger controller of `bridge`); NATS events, which
    no broker of ours carries, stay on the embedded topics (`embedded`)."""

    def __init__(self, bridge, embedded):
        self.bridge, self.embedded = bridge, embedded

    def emit(self, topic, source, data, count):
        if source != "kafka":
            return self.embedded.emit(topic, source, data, count)
        produced = self.bridge.produce(topic, data, count)
        ranges = [(int(partition), first, last) for partition, (first, last) in sorted(produced["partitions"].items())]
        return emitted(topic, source, produced["subscribers"], ranges, self.bridge.bootstrap)

    def list(self):
        return self.bridge.topics()

    def create(self, name):
        return self.bridge.create_topic(name)

    def delete(self, name):
        self.bridge.delete_topic(name)

    def outcome(self, topic, source, first, last):
        return self.embedded.outcome(topic, source, first, last)  # NATS; a broker's groups track Kafka's

    def replay(self, topic, trigger=None, letter_id=None):
        return self.embedded.replay(topic, trigger, letter_id)  # NATS; a broker's dead letters are on its topics

    def dead_letter_counts(self):
        return self.embedded.dead_letter_counts()
