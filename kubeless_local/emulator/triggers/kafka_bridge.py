"""Real-broker mode: `dev --kafka-brokers HOST:PORT[,…]` makes `dev` the Kubeless Kafka trigger controller
for that broker (KAFKA_BROKERS, or `kafka: {brokers: …}` in .kubeless-local.yaml, say the same).

As the kafka-trigger controller does: one consumer group per (KafkaTrigger, Function, topic), named as the
controller names it, `<ns>_<trigger>_<fn>_<topic>`, plus LOCAL_SUFFIX (so a `dev` and a deployed
controller on the same broker each get every message; `kafka.group: kubeless` joins the controller's own
group instead, with a warning), with sarama's default assignor (range), for every Function the trigger's
`functionSelector` matches; each message is POSTed to the function with the Kafka envelope of events.py,
one at a time, in order, over a kept-alive connection. Where it differs, so that no event is lost:

- auto-commit is off; a message's offset is committed only after the function answered 2xx, or after
  `max_attempts` failed answers (each logged) once the message is on its dead-letter topic on the broker,
  `<topic>.dead-letter` (interface.py; the controller commits every message at once, failures lost);
- a function that is not Ready (installing, reloading, crashed) is waited for, without using up attempts;
- offsets are committed in the background, in order, at least every COMMIT_INTERVAL: never past a message
  that is not settled, so a crash redelivers a few, never skips;
- in its own group, static membership (a `group.instance.id` stable per project, trigger, function and
  topic): a `dev` that restarts, even after `kill -9`, gets its partitions back at once instead of after a
  rebalance (not in the controller's group, where it would lock the controller out for the session timeout);
- a group that has never committed starts at the end of the topic (as the controller's OffsetNewest) and
  commits that position at once, so what is produced while `dev` is down is delivered when it is back;
- `event-id` and `event-time` come from the message (its topic, partition, offset; its timestamp), so a
  redelivered message carries the same ones and a function can de-duplicate.

Every consumer runs on one asyncio loop in a thread of its own; the HTTP calls (and the waits for a function
that is not Ready, by the rule every trigger follows: delivery.send_when_ready) run in a thread pool.
"""

import asyncio
import base64
import concurrent.futures
import datetime
import functools
import hashlib
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Optional

from kubeless_local import config, events
from kubeless_local.emulator.recorder import SOURCE_HEADER, marked
from kubeless_local.emulator.triggers import delivery, interface
from kubeless_local.emulator.triggers import subscriptions as model
from kubeless_local.emulator.triggers.topics import check_topic_name
from kubeless_local.errors import NotFound, Unavailable, UserError

CONNECT_TIMEOUT = 10.0  # seconds `dev` waits at start for a broker to answer
SESSION_TIMEOUT_MS = 45_000  # a crashed `dev` keeps its partitions this long (static membership: it gets them back)
SHARED_SESSION_TIMEOUT_MS = 10_000  # in the controller's group: sarama's default, so a crashed `dev` frees them soon
LOCAL_SUFFIX = ".kubeless-local"  # appended to the controller's group id: dev's own consumer group
COMMIT_INTERVAL = 0.5  # seconds between background commits of the delivered messages' offsets
BATCH = 500  # messages fetched at once; still delivered one at a time, in order
RUN = 100  # messages one hand-off to a sending thread delivers while they are answered 2xx
MAX_POLL_INTERVAL_MS = 3_600_000  # a message may wait long for its function (not Ready, retried): stay in the group
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 5.0  # seconds between looks at a function not Ready, and between rejoins
SENDERS = 64  # sending threads: one per consumer group at most (one that waits for its function holds one)
SYNC_INTERVAL = 1.0  # seconds between looks at the manifests (new or edited triggers and functions)
CLIENT_ID = "kubeless-kafka-trigger-controller"  # the controller's client id, seen in the broker's tools
DOCS = "docs/kafka-broker.md"
# nothing answered: the address says it all
QUIET_ERRORS = ("KafkaConnectionError", "TimeoutError", "KafkaTimeoutError")
VERB_TIMEOUT = 30.0  # seconds an `emit kafka` / `topic …` verb waits for the broker (plus 1 s per 1000 messages)

# aiokafka logs each failed connection on the root logger; `dev` reports what matters in the function's log.
logging.getLogger("aiokafka").addHandler(logging.NullHandler())
logging.getLogger("aiokafka").propagate = False


# ---------------------------------------------------------------- settings


def shares_the_controllers_group(settings):
    """The project settings' `kafka.group`: False (`local`, the default: groups of dev's own) or True
    (`kubeless`: the deployed controller's groups, messages split between dev and the cluster)."""
    return settings.kafka.group == "kubeless"


def instance_id(root, group):
    """A static member id stable for this project on this machine, distinct between projects."""
    digest = hashlib.sha256(("%s\0%s" % (socket.gethostname(), Path(root).resolve())).encode()).hexdigest()[:12]
    return "kubeless-local-%s-%s" % (digest, group)


def subscriptions(manifests, shared=False):
    """(subscriptions, triggers that select no Function) of the project's KafkaTriggers: the groups are the
    controller's own when `shared`, else the controller's + LOCAL_SUFFIX."""
    return model.subscriptions(manifests.kafka_triggers, manifests.functions, "" if shared else LOCAL_SUFFIX)


def message_envelope(topic, partition, offset, value, timestamp_ms):
    """(method, headers, body) of one message: the Kafka envelope, its id and time fixed by the message."""
    moment = datetime.datetime.fromtimestamp(timestamp_ms / 1000, datetime.timezone.utc)
    digest = hashlib.sha256(("%s\0%d\0%d\0%d" % (topic, partition, offset, int(timestamp_ms))).encode()).digest()
    event_id = base64.urlsafe_b64encode(digest[:11]).decode().rstrip("=")  # 15 characters
    return events.envelope("kafka", value, topic=topic, now=moment, event_id=event_id)


# ---------------------------------------------------------------- the bridge


class KafkaBridge:
    """Consumes for every (KafkaTrigger, Function, topic) of `manifests()` and delivers to `supervisor`'s
    functions. `connect()` first (UserError when no broker answers), then `start()`, `stop()`."""

    def __init__(
        self,
        brokers,
        manifests,
        supervisor,
        logs,
        root,
        *,
        attempts=config.Kafka.max_attempts,  # failed answers before a message is dead-lettered
        retry_backoff=config.Kafka.retry_backoff,
        send=None,
        shared=False,
    ) -> None:
        self.brokers, self.manifests, self.supervisor, self.logs = brokers, manifests, supervisor, logs
        self.root, self.attempts, self.retry_backoff = Path(root), attempts, retry_backoff
        self.send = send  # (method, url, headers, body, timeout) → (status, text); None: a FunctionLink per group
        self.links: dict = {}  # group id → its delivery.FunctionLink (one message at a time per group)
        self.shared = shared  # kafka.group: kubeless (shares_the_controllers_group)
        self.halt = threading.Event()  # `dev` stops: a sending thread ends its run
        self.loop = asyncio.new_event_loop()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=SENDERS, thread_name_prefix="kafka-send")
        self.tasks: dict = {}  # group id → the asyncio task consuming for it
        self.stats: dict = {}  # group id → counters shown by status()
        self.warned: set = set()  # triggers already reported as matching no function
        self.trigger_of: dict = {}  # consumer group → its KafkaTrigger
        self.thread: Optional[threading.Thread] = None
        self.stopping: Optional[asyncio.Event] = None
        self.producer = None  # the AIOKafkaProducer (verbs, dead letters) and AIOKafkaAdminClient, started on first use
        self.dead_letter_topics: set = set()  # dead-letter topics known to exist on the broker
        self.admin_client = None

    @property
    def bootstrap(self):
        return ",".join(self.brokers)

    def say(self, name, text):
        self.logs.emit(name, text, "system")

    def connect(self):
        """Check that a broker answers, before any function starts."""
        try:
            self.loop.run_until_complete(asyncio.wait_for(self._probe(), CONNECT_TIMEOUT))
        except Exception as exc:  # noqa: BLE001 - aiokafka raises its own KafkaError kinds, OSError, timeouts
            raise self._unanswered(exc) from None

    def _unanswered(self, exc):
        why = "" if type(exc).__name__ in QUIET_ERRORS else " (%s)" % (str(exc).splitlines() or [repr(exc)])[0]
        return Unavailable(
            "no Kafka broker answers at %s%s; start one (scripts/kafka-up.sh, see %s)" % (self.bootstrap, why, DOCS),
            "kafka broker",
            self.bootstrap,
        )

    async def _probe(self):
        from aiokafka import AIOKafkaClient

        client = AIOKafkaClient(bootstrap_servers=self.bootstrap, client_id=CLIENT_ID, request_timeout_ms=5000)
        try:
            await client.bootstrap()
        finally:
            await client.close()

    def start(self):
        if self.shared:
            self.say(
                "dev",
                "kafka.group: kubeless: dev joins the deployed controller's consumer groups on %s; each message "
                "goes to dev or to the cluster's function, not both (see %s)" % (self.bootstrap, DOCS),
            )
        self.thread = threading.Thread(target=self._run, name="kafka-bridge", daemon=True)
        self.thread.start()

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.stopping = asyncio.Event()
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.close()

    async def _main(self):
        assert self.stopping is not None
        while not self.stopping.is_set():
            try:
                self._sync()
            except Exception as exc:  # noqa: BLE001 - a bug here must not end every consumer of the session
                self.say("dev", "kafka bridge error: %r" % exc)
            try:
                await asyncio.wait_for(self.stopping.wait(), SYNC_INTERVAL)
            except asyncio.TimeoutError:
                pass
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in (self.producer, self.admin_client):
            if client is not None:
                await _stop_quietly(client)

    def _sync(self):
        """Start a consumer for each new (trigger, function, topic); stop those no longer in the manifests."""
        found, unmatched = subscriptions(self.manifests(), self.shared)
        wanted = {sub.name: sub for sub in found}
        for trigger in unmatched:
            if trigger.name not in self.warned:
                self.warned.add(trigger.name)
                self.say(
                    trigger.name,
                    "%s: spec.functionSelector matches no Function; nothing consumes topic %s"
                    % (trigger.origin, trigger.topic),
                )
        self.warned &= {trigger.name for trigger in unmatched}
        for group in set(self.tasks) - set(wanted):
            self.tasks.pop(group).cancel()
        for group, sub in wanted.items():
            if group not in self.tasks or self.tasks[group].done():
                self.stats.setdefault(group, {"delivered": 0, "failed": 0, "given_up": 0, "state": "joining"})
                self.tasks[group] = self.loop.create_task(self._consume(sub))

    async def _consume(self, sub):
        """One consumer group's loop: join, deliver each message in order, commit behind; rejoin after errors."""
        from aiokafka import AIOKafkaConsumer
        from aiokafka.coordinator.assignors.range import RangePartitionAssignor
        from aiokafka.errors import KafkaError

        group, function, topic = sub.name, sub.function, sub.topic
        self.trigger_of[group] = sub.trigger  # named in the source mark of each request (emulator/recorder.py)
        stats = self.stats[group]
        pause = BACKOFF_FIRST
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                client_id=CLIENT_ID,
                group_id=group,
                group_instance_id=None if self.shared else instance_id(self.root, group),
                partition_assignment_strategy=(RangePartitionAssignor,),  # sarama's default, as the controller
                enable_auto_commit=False,
                # a committed offset the broker no longer has (retention): from the oldest message still there
                auto_offset_reset="earliest",
                session_timeout_ms=SHARED_SESSION_TIMEOUT_MS if self.shared else SESSION_TIMEOUT_MS,
                max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
            )
            committer = Committer(consumer)
            listener = _start_at_end(consumer, self, function, group, committer)
            consumer.subscribe([topic], listener=listener)
            try:
                await consumer.start()
                while True:
                    await listener.positioned.wait()
                    batch = await consumer.getmany(timeout_ms=1000, max_records=BATCH)
                    if not listener.positioned.is_set():
                        continue  # fetched while partitions were being placed: from where they are now
                    if not batch:
                        await committer.flush()  # idle: everything delivered is committed now
                        continue
                    stats["state"] = "delivering"
                    for tp, messages in batch.items():
                        floor = listener.floor.get(tp, 0)  # fetched before a new group's partition was placed
                        wanted = [m for m in messages if m.offset >= floor]
                        await self.deliver_run(group, function, wanted, committer, tp)
                    stats["state"] = "consuming"
                    pause = BACKOFF_FIRST
            except asyncio.CancelledError:
                await _quietly(committer.flush())  # `dev` stops: what was delivered stays delivered
                raise
            except KafkaError as exc:  # broker gone, group rebalanced under us: rejoin from the committed offsets
                stats["state"] = "reconnecting"
                self.say(function, "kafka %s: %s; rejoining in %.1f s" % (group, exc, pause))
            except Exception as exc:  # noqa: BLE001 - whatever it was, the group rejoins from its committed offsets
                stats["state"] = "reconnecting"
                self.say(function, "kafka %s: unexpected %r; rejoining in %.1f s" % (group, exc, pause))
            finally:
                await _stop_quietly(consumer)
            await asyncio.sleep(pause)
            pause = min(pause * 2, BACKOFF_MAX)

    def _sender(self, group, function):
        """(method, url, headers, body, timeout) → (status, text) for `group`'s messages to `function`, through
        the session's taps (emulator/taps.py)."""
        send = self.send
        if send is None:
            link = self.links.get(group)
            if link is None:
                link = self.links[group] = delivery.FunctionLink()
            send = link.send
        taps = self.supervisor.taps

        def through(method, url, headers, body, timeout):
            answer = functools.partial(send, method, url, headers, body, timeout)
            received = {k: v for k, v in headers.items() if k != SOURCE_HEADER}  # the door takes its mark off
            return taps.exchange(function, "kafka", method, url, received, body, answer)

        return through

    async def deliver_run(self, group, function, messages, committer, partition):
        """Deliver `messages` (of one partition) in order: while the function answers 2xx they go in one
        hand-off to the sending thread; the first one that does not goes through `deliver` (retries,
        back-off, give up). Each is handed to `committer` once settled, in order."""
        stats = self.stats.setdefault(group, {"delivered": 0, "failed": 0, "given_up": 0, "state": "consuming"})
        send, done = self._sender(group, function), 0
        while done < len(messages):
            run = messages[done : done + RUN]
            sent, answer = await self._when_ready(
                function, functools.partial(self._send_run, send, run, self.trigger_of.get(group))
            )
            stats["delivered"] += sent
            if sent:
                committer.settled(partition, run[sent - 1].offset)
            done += sent
            if sent < len(run):  # not 2xx, or not taken: that message on its own
                failed = await self.deliver(group, function, messages[done], answer)
                if failed is not None:
                    await self.dead_letter(group, function, messages[done], *failed)
                committer.settled(partition, messages[done].offset)  # only now: delivered, or dead-lettered
                done += 1

    def _send_run(self, send, messages, trigger, instance, spec):
        """(how many answered 2xx in a row, the (status, text) of the next one, or None if it was not taken);
        runs on a sending thread, so a run costs one hand-off, not one per message."""
        url, timeout = instance.url, delivery.answer_timeout(spec)
        mark = marked(instance, "kafka", trigger)
        for sent, message in enumerate(messages):
            if self.halt.is_set():
                return sent, None
            method, headers, body = _envelope_of(message)
            headers = {**headers, **mark}
            try:
                status, text = send(method, url, headers, body, timeout)
            except delivery.NotAnswering:
                return sent, None
            if not 200 <= status < 300:
                return sent, (status, text)
        return len(messages), None

    async def deliver(self, group, function, message, answered=None):
        """Send one message until the function answers 2xx (None), or give it up after `attempts` failed
        answers: (attempts, last status, last text); `answered`: the (status, text) of an attempt already made."""
        stats = self.stats.setdefault(group, {"delivered": 0, "failed": 0, "given_up": 0, "state": "consuming"})
        method, headers, body = _envelope_of(message)
        where = "kafka %s: message %s[%d]@%d" % (group, message.topic, message.partition, message.offset)
        failures = 0
        send = self._sender(group, function)
        while True:
            if answered is not None:
                (status, text), answered = answered, None
            else:
                status, text = await self._when_ready(
                    function,
                    lambda instance, spec: send(
                        method,
                        instance.url,
                        {**headers, **marked(instance, "kafka", self.trigger_of.get(group))},
                        body,
                        delivery.answer_timeout(spec),
                    ),
                )
            if 200 <= status < 300:
                stats["delivered"] += 1
                return None
            failures += 1
            stats["failed"] += 1
            answer = "answered %d: %s" % (status, text.strip()[:200]) if status else "failed: %s" % text
            if failures >= self.attempts:
                stats["given_up"] += 1
                self.say(
                    function,
                    "%s %s; given up after %d attempts: to the dead-letter topic %s"
                    % (where, answer, failures, interface.dead_letter_topic(message.topic)),
                )
                return failures, status, text
            delay = delivery.backoff(failures, self.retry_backoff, delivery.BACKOFF_MAX)
            self.say(
                function,
                "%s %s; attempt %d of %d, retrying in %.1f s" % (where, answer, failures, self.attempts, delay),
            )
            await asyncio.sleep(delay)

    async def dead_letter(self, group, function, message, attempts, status, text):
        """What a message that failed every attempt becomes (decided once, in interface.py): produced with
        acks=all to its dead-letter topic, its value, key and timestamp kept, why in its headers. Returns once
        the broker has it, so its offset is committed only after; a broker that does not take it raises, and
        the group rejoins from the committed offset: the message comes again, never lost."""
        topic = interface.dead_letter_topic(message.topic)
        if topic not in self.dead_letter_topics:
            await self._ensure_topic(topic)
            self.dead_letter_topics.add(topic)
        why = {
            "original-topic": message.topic,
            "original-partition": message.partition,
            "original-offset": message.offset,
            "event-id": _envelope_of(message)[1]["event-id"],
            "consumer-group": group,
            "function": function,
            "attempts": attempts,
            "last-status": status,
            "last-body": text[: interface.MAX_DEAD_BODY],
        }
        headers = list(getattr(message, "headers", None) or ())  # the message's own first
        headers += [(name, str(why[name]).encode()) for name in interface.DEAD_LETTER_HEADERS]
        producer = await self._producer()
        sent = await producer.send(
            topic, message.value, key=getattr(message, "key", None), headers=headers, timestamp_ms=_timestamp(message)
        )
        record = await sent
        self.say(
            function,
            "kafka %s: message %s[%d]@%d dead-lettered to %s[%d]@%d; its offset is committed"
            % (group, message.topic, message.partition, message.offset, topic, record.partition, record.offset),
        )

    async def _ensure_topic(self, name):
        """Create topic `name` on the broker unless it exists."""
        from aiokafka.errors import TopicAlreadyExistsError, for_code

        response = await self._create(name)
        code = response.topic_errors[0][1]
        if code and for_code(code) is not TopicAlreadyExistsError:
            raise for_code(code)("creating topic %s" % name)

    async def _when_ready(self, function, send):
        """`send(instance, spec)` once the function serves, by the one rule of every trigger
        (delivery.send_when_ready) on a sending thread; a cancelled task (its trigger removed, `dev`
        stopping) ends that thread's wait."""
        cancelled = threading.Event()
        call = functools.partial(delivery.send_when_ready, self.supervisor, function, send, cancelled)
        try:
            answer = await asyncio.get_running_loop().run_in_executor(self.pool, call)
        finally:
            cancelled.set()
        if answer is None:
            raise asyncio.CancelledError()  # only when `cancelled` was set: the task is being cancelled
        return answer

    def status(self):
        """One row per consumer group: trigger, function, topic, state, delivered/failed/given-up counts."""
        found, _ = subscriptions(self.manifests(), self.shared)
        return [
            {
                "group": sub.name,
                "trigger": sub.trigger,
                "function": sub.function,
                "topic": sub.topic,
                **self.stats.get(sub.name, {}),
            }
            for sub in sorted(found, key=lambda sub: sub.name)
        ]

    def stop(self):
        """Leave the consumers (offsets of undelivered messages stay uncommitted: they come again)."""
        self.halt.set()
        if self.thread is not None and self.stopping is not None:
            self.loop.call_soon_threadsafe(self.stopping.set)
            self.thread.join(timeout=20)
        elif not self.loop.is_closed():
            self.loop.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ verbs: emit kafka, topic …

    def produce(self, topic, data, count=1):
        """Produce `count` messages with `data` (bytes) to `topic`, acks=all: on the broker when this returns.
        {produced, partitions: {partition: [first offset, last offset]}, subscribers: consumer groups}."""
        check_topic_name(topic)
        partitions = self._verb(self._produce(topic, data, count), VERB_TIMEOUT + count / 1000)
        subscribers = [row["group"] for row in self.status() if row["topic"] == topic]
        return {"produced": count, "partitions": partitions, "subscribers": subscribers}

    def topics(self):
        """The broker's topics (internal ones left out) in the shape of the embedded topics' list: name, events
        (messages the broker still has), subscribers (this dev's consumer groups, their lag), no dead letters."""
        return self._verb(self._topics())

    def create_topic(self, name):
        """Create `name` (1 partition, replicated on up to 3 brokers); False when it exists already."""
        from aiokafka.errors import TopicAlreadyExistsError, for_code

        check_topic_name(name)
        response = self._verb(self._create(name))
        code = response.topic_errors[0][1]
        if code and for_code(code) is TopicAlreadyExistsError:
            return False
        if code:
            raise UserError(
                "the Kafka broker at %s refused to create topic %s: %s"
                % (self.bootstrap, name, for_code(code).__name__)
            )
        return True

    def delete_topic(self, name):
        from aiokafka.errors import UnknownTopicOrPartitionError, for_code

        check_topic_name(name)
        response = self._verb(self._admin_call("delete_topics", [name]))
        code = response.topic_error_codes[0][1]
        if code and for_code(code) is UnknownTopicOrPartitionError:
            raise NotFound("no topic %s on the Kafka broker at %s" % (name, self.bootstrap), "topic", name)
        if code:
            raise UserError(
                "the Kafka broker at %s refused to delete topic %s: %s"
                % (self.bootstrap, name, for_code(code).__name__)
            )

    def _verb(self, coroutine, timeout=VERB_TIMEOUT):
        """Run a verb's coroutine on the bridge's loop (its clients live there); a broker that does not
        answer, or answers with an error, is a UserError."""
        from aiokafka.errors import KafkaError

        if self.thread is None or not self.thread.is_alive():
            coroutine.close()
            raise Unavailable("this dev's Kafka bridge is not running", "kafka bridge")
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coroutine, timeout), self.loop)
        try:
            return future.result(timeout + 5)
        except UserError:
            raise
        except (KafkaError, OSError, asyncio.TimeoutError, concurrent.futures.TimeoutError) as exc:
            if type(exc).__name__ in QUIET_ERRORS or isinstance(exc, (OSError, concurrent.futures.TimeoutError)):
                raise self._unanswered(exc) from None
            raise UserError("the Kafka broker at %s answered: %s" % (self.bootstrap, exc)) from None

    async def _produce(self, topic, data, count):
        producer = await self._producer()
        sent = [await producer.send(topic, data) for _ in range(count)]
        partitions: dict = {}
        for record in await asyncio.gather(*sent):
            first, last = partitions.get(record.partition, (record.offset, record.offset))
            partitions[record.partition] = [min(first, record.offset), max(last, record.offset)]
        return partitions

    async def _producer(self):
        """The bridge's one producer (acks=all), for the verbs and the dead letters; started on first use."""
        if self.producer is None:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, client_id=CLIENT_ID, acks="all", request_timeout_ms=10_000
            )
            try:
                await producer.start()
            except BaseException:
                await _stop_quietly(producer)
                raise
            self.producer = producer
        return self.producer

    async def _admin_call(self, name, *args):
        if self.admin_client is None:
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.bootstrap, client_id=CLIENT_ID, request_timeout_ms=10_000
            )
            try:
                await admin.start()
            except BaseException:
                await _stop_quietly(admin)
                raise
            self.admin_client = admin
        return await getattr(self.admin_client, name)(*args)

    async def _create(self, name):
        from aiokafka.admin import NewTopic

        brokers = (await self._admin_call("describe_cluster"))["brokers"]
        return await self._admin_call("create_topics", [NewTopic(name, 1, min(3, max(1, len(brokers))))])

    async def _topics(self):
        from aiokafka import AIOKafkaConsumer, TopicPartition

        names = sorted(name for name in await self._admin_call("list_topics") if not name.startswith("__"))
        described = await self._admin_call("describe_topics", names) if names else []
        partitions = [
            TopicPartition(topic["topic"], partition["partition"])
            for topic in described
            for partition in topic["partitions"]
        ]
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, client_id=CLIENT_ID, request_timeout_ms=10_000)
        try:
            await consumer.start()
            ends = await consumer.end_offsets(partitions) if partitions else {}
            starts = await consumer.beginning_offsets(partitions) if partitions else {}
        finally:
            await _stop_quietly(consumer)
        groups: dict = {}
        for row in self.status():
            committed = await self._admin_call("list_consumer_group_offsets", row["group"])
            lag = sum(
                ends[tp] - (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else starts[tp])
                for tp in ends
                if tp.topic == row["topic"]
            )
            groups.setdefault(row["topic"], []).append({"name": row["group"], "function": row["function"], "lag": lag})
        return [
            {
                "name": name,
                "events": sum(ends[tp] - starts[tp] for tp in ends if tp.topic == name),
                "subscribers": groups.get(name, []),
                "dead_letters": [],
            }
            for name in names
        ]


def _timestamp(message):
    """The message's timestamp (ms); now for one without (a broker's old message format)."""
    return message.timestamp if message.timestamp and message.timestamp > 0 else int(time.time() * 1000)


def _envelope_of(message):
    return message_envelope(message.topic, message.partition, message.offset, message.value, _timestamp(message))


class Committer:
    """Commits the offsets of settled messages behind the delivery, in order: one commit in flight at a time,
    each carrying the offset after the last settled message of each partition, never past one that is not."""

    def __init__(self, consumer):
        self.consumer = consumer
        self.settled_up_to: dict = {}  # TopicPartition → offset after the last settled message
        self.committed: dict = {}
        self.task: Optional[asyncio.Future] = None
        self.at = 0.0  # time.monotonic() of the last commit started

    def settled(self, partition, offset):
        """The message at `offset` was delivered (or given up): commit up to it soon, without waiting."""
        self.settled_up_to[partition] = offset + 1
        if (self.task is None or self.task.done()) and time.monotonic() - self.at >= COMMIT_INTERVAL:
            self._check()
            self._start()

    def _start(self):
        offsets = dict(self.settled_up_to)
        self.at = time.monotonic()
        self.task = asyncio.ensure_future(self.consumer.commit(offsets))
        self.task.add_done_callback(functools.partial(self._done, offsets))

    def _done(self, offsets, task):
        if not task.cancelled() and task.exception() is None:
            self.committed.update(offsets)

    def _check(self):
        """A commit that failed (the group rebalanced) ends the consumer loop: it rejoins from the committed."""
        if self.task is not None and self.task.done() and not self.task.cancelled():
            failed = self.task.exception()
            if failed is not None:
                raise failed

    async def flush(self, partitions=None):
        """Commit every settled offset (of `partitions`, or all) and wait for it."""
        if self.task is not None:
            await asyncio.wait([self.task])
            self._check()
        offsets = {tp: o for tp, o in self.settled_up_to.items() if partitions is None or tp in partitions}
        if any(self.committed.get(tp) != o for tp, o in offsets.items()):
            await self.consumer.commit(offsets)
            self.committed.update(offsets)


async def _quietly(coroutine):
    try:
        await coroutine
    except Exception:  # noqa: BLE001 - stopping or rejoining: an uncommitted offset only redelivers
        pass


def _start_at_end(consumer, bridge, function, group, committer):
    """A rebalance listener: on revocation, commit what was settled; on assignment, a partition the group
    never committed starts at its end, committed at once (so what is produced while `dev` is down is not
    skipped later); then it says where consumption starts."""
    from aiokafka import ConsumerRebalanceListener

    class StartAtEnd(ConsumerRebalanceListener):
        def __init__(self):
            self.positioned = asyncio.Event()  # set once the assigned partitions are placed
            self.floor: dict = {}  # TopicPartition → the end a never-committed partition starts at

        async def on_partitions_revoked(self, revoked):
            self.positioned.clear()
            await _quietly(committer.flush(set(revoked)))

        async def on_partitions_assigned(self, assigned):
            try:
                if assigned:
                    await self._place(assigned)
            finally:
                self.positioned.set()

        async def _place(self, assigned):
            positions = {}
            fresh = []
            for tp in assigned:
                committed = await consumer.committed(tp)
                if committed is None:
                    fresh.append(tp)
                else:
                    positions[tp] = committed
            if fresh:
                ends = await consumer.end_offsets(fresh)
                await consumer.commit({tp: ends[tp] for tp in fresh})
                for tp in fresh:
                    consumer.seek(tp, ends[tp])
                    positions[tp] = self.floor[tp] = ends[tp]
            bridge.stats[group]["state"] = "consuming"
            where = ", ".join(
                "%s[%d] from offset %d" % (tp.topic, tp.partition, positions[tp]) for tp in sorted(positions)
            )
            bridge.say(function, "kafka %s: consuming %s" % (group, where))

    return StartAtEnd()


def _partition(message):
    from aiokafka import TopicPartition

    return TopicPartition(message.topic, message.partition)


async def _stop_quietly(client):
    """Stop a consumer or producer (`stop`), or close an admin client (`close`)."""
    try:
        await asyncio.wait_for((client.stop if hasattr(client, "stop") else client.close)(), 10)
    except Exception:  # noqa: BLE001 - a consumer that cannot close cleanly is dropped all the same
        pass
