"""A real Apache Kafka broker for tests: scripts/kafka-up.sh in a temporary folder, once per test session.

The `kafka_broker` fixture is registered for every test (tests/conftest.py). It needs Java 17+ and
Maven (.ci/setup.sh installs them); the first run fetches the jars into ~/.cache/kubeless-local/kafka.
"""

import asyncio
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Optional

import pytest
from waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 240  # seconds: a cold start downloads ~43 MB of jars first
STOP_TIMEOUT = 60


class Broker:
    """One broker: `up()` starts it (again, with its data and port, after `down()` or `kill()`)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.address: Optional[str] = None

    def up(self):
        result = subprocess.run(
            ["sh", str(ROOT / "scripts" / "kafka-up.sh"), str(self.directory)],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            env=dict(os.environ, KAFKA_START_TIMEOUT=str(START_TIMEOUT - 30)),
        )
        match = re.search(r"^KAFKA_BROKERS=(\S+)$", result.stdout, re.M)
        assert result.returncode == 0 and match, "kafka-up.sh failed:\n%s%s" % (result.stdout, result.stderr)
        self.address = match.group(1)
        return self.address

    def down(self):
        subprocess.run(
            ["sh", str(ROOT / "scripts" / "kafka-down.sh"), str(self.directory)], timeout=STOP_TIMEOUT, check=False
        )

    def kill(self):
        """SIGKILL, as a crash: the next `up()` recovers from its log."""
        pid = int((self.directory / "pid").read_text())
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _alive(pid), 10, interval=0.05)
        (self.directory / "pid").unlink()

    # -------------------------------------------------------- clients

    def produce(self, topic, values):
        """Send each value (text) with acks=all; returns once the broker acknowledged every one."""

        async def run():
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=self.address, acks="all", enable_idempotence=True)
            await producer.start()
            try:
                batch = [await producer.send(topic, value.encode()) for value in values]
                for future in batch:
                    await future
            finally:
                await producer.stop()

        asyncio.run(asyncio.wait_for(run(), 60))

    def committed(self, group, topic):
        """The group's committed offset of partition 0 of `topic` (None when it has none)."""

        async def run():
            from aiokafka import TopicPartition
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(bootstrap_servers=self.address)
            await admin.start()
            try:
                offsets = await admin.list_consumer_group_offsets(group)
            finally:
                await admin.close()
            found = offsets.get(TopicPartition(topic, 0))
            return None if found is None or found.offset < 0 else found.offset

        return asyncio.run(asyncio.wait_for(run(), 30))

    def members(self, group):
        """The member ids of consumer group `group` as the broker holds them: a static member's id is its
        group.instance.id, a dash and a UUID; a dynamic member's begins with its client id."""

        async def run():
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(bootstrap_servers=self.address)
            await admin.start()
            try:
                (response,) = await admin.describe_consumer_groups([group])
            finally:
                await admin.close()
            ((error, _group, _state, _protocol_type, _protocol, members, *_),) = response.groups
            assert error == 0, "describing group %s: error %d" % (group, error)
            return sorted(member[0] for member in members)

        return asyncio.run(asyncio.wait_for(run(), 30))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    if not (shutil.which("java") and shutil.which("mvn")):
        pytest.skip("a real Kafka broker needs java and mvn on PATH (.ci/setup.sh installs them)")
    broker = Broker(tmp_path_factory.mktemp("kafka-broker"))
    try:
        broker.up()
        yield broker
    finally:
        broker.down()
