"""The project settings model (config.py): every key read into the model, an unknown key or a wrong value
one line naming the file and the key, the deprecated `kafka.attempts` still read (with a notice the
session shows once), and the session wiring the model into the embedded topics, the broker and the
backend choice."""

import pytest
from conftest import FakeBackend, FakeGuardian, function

from kubeless_local import config
from kubeless_local import spec as specs
from kubeless_local.emulator import backends
from kubeless_local.emulator.session import DevSession
from kubeless_local.emulator.triggers import delivery
from kubeless_local.errors import UserError


def write(root, text):
    (root / config.FILE).write_text(text)


def test_no_file_is_the_defaults(tmp_path):
    settings = config.load(tmp_path)
    assert settings == config.Settings(tmp_path / ".kubeless-local.yaml")
    assert settings.backend == "process" and settings.notices == ()
    assert settings.kafka == config.Kafka(
        max_attempts=5, retry_backoff=0.5, max_in_flight=1, retention_hours=168.0, brokers=(), group="local"
    )
    write(tmp_path, "# only a comment\n")
    assert config.load(tmp_path) == settings


@pytest.mark.parametrize(
    ("text", "read", "expected"),
    [
        ("backend: docker", lambda s: s.backend, "docker"),
        ("backend: auto", lambda s: s.backend, "auto"),
        ("backend: null", lambda s: s.backend, "process"),
        ("kafka: {max_attempts: 2}", lambda s: s.kafka.max_attempts, 2),
        ("kafka: {max_attempts: 3.0}", lambda s: s.kafka.max_attempts, 3),
        ("kafka: {retry_backoff: 0.1}", lambda s: s.kafka.retry_backoff, 0.1),
        ("kafka: {retry_backoff: 2}", lambda s: s.kafka.retry_backoff, 2.0),
        ("kafka: {max_in_flight: 4}", lambda s: s.kafka.max_in_flight, 4),
        ("kafka: {retention_hours: 0.5}", lambda s: s.kafka.retention_hours, 0.5),
        ("kafka: {brokers: '127.0.0.1:9092'}", lambda s: s.kafka.brokers, ("127.0.0.1:9092",)),
        ("kafka: {brokers: 'a:1, b:2,'}", lambda s: s.kafka.brokers, ("a:1", "b:2")),
        ("kafka: {brokers: ['a:1', 'b:2']}", lambda s: s.kafka.brokers, ("a:1", "b:2")),
        ("kafka: {brokers: null}", lambda s: s.kafka.brokers, ()),
        ("kafka: {group: kubeless}", lambda s: s.kafka.group, "kubeless"),
        ("kafka: {group: local}", lambda s: s.kafka.group, "local"),
        ("kafka: {attempts: 7}", lambda s: s.kafka.max_attempts, 7),
        ("kafka:", lambda s: s.kafka, config.Kafka()),
        ("docker: {network: relay}", lambda s: s.docker.network, "relay"),
        ("docker: {network: bridge}", lambda s: s.docker.network, "bridge"),
        ("docker: {network: host}", lambda s: s.docker.network, "host"),
        ("docker: {network: null}", lambda s: s.docker.network, "auto"),
        ("docker:", lambda s: s.docker, config.Docker(network="auto")),
        ("recorder: {keep: 20}", lambda s: s.recorder.keep, 20),
        ("recorder: {max_bytes: 1048576}", lambda s: s.recorder.max_bytes, 1048576),
        ("recorder:", lambda s: s.recorder, config.Recorder(keep=500, max_bytes=50 * 1024 * 1024)),
    ],
)
def test_every_key_is_read_into_the_model(tmp_path, text, read, expected):
    write(tmp_path, text + "\n")
    assert read(config.load(tmp_path)) == expected


def test_settings_from_the_project_file(tmp_path):
    """Moved from test_topics.py (delivery.load_settings then)."""
    assert config.load(tmp_path).kafka.max_attempts == 5
    write(tmp_path, "backend: process\nkafka: {max_attempts: 2, retry_backoff: 0.1}\n")
    settings = config.load(tmp_path).kafka
    assert settings.max_attempts == 2 and settings.retry_backoff == 0.1
    write(tmp_path, "kafka: {max_attempts: 0}\n")
    with pytest.raises(UserError, match=r"kafka.max_attempts must be a number >= 1, got 0"):
        config.load(tmp_path)
    write(tmp_path, "kafka: 3\n")
    with pytest.raises(UserError, match="kafka must be a mapping"):
        config.load(tmp_path)


def test_an_unknown_key_in_the_kafka_settings_is_one_line_naming_file_and_key(tmp_path):
    """Moved from test_topics.py (delivery.load_settings then)."""
    write(tmp_path, "kafka: {max_atempts: 2}\n")
    with pytest.raises(UserError, match=r"\.kubeless-local\.yaml: unknown key kafka\.max_atempts; known: "):
        config.load(tmp_path)
    write(tmp_path, "nats: {max_attempts: 2}\n")
    with pytest.raises(UserError, match=r"\.kubeless-local\.yaml: unknown key nats; the kafka: settings"):
        config.load(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "kafka: {max_atempts: 2}",
            "unknown key kafka.max_atempts; known: max_attempts, retry_backoff, max_in_flight, retention_hours, "
            "brokers, group",
        ),
        ("backnd: docker", "unknown key backnd; known: backend, kafka"),
        ("nats: {}", "unknown key nats; the kafka: settings apply to the embedded NATS topics as well"),
    ],
)
def test_an_unknown_key_names_the_file_the_key_and_the_known_ones(tmp_path, text, message):
    write(tmp_path, text + "\n")
    with pytest.raises(UserError) as error:
        config.load(tmp_path)
    assert str(error.value).startswith("%s: %s" % (tmp_path / ".kubeless-local.yaml", message))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("backend: podman", "backend must be one of process, docker, auto, got 'podman'"),
        ("backend: [docker]", "backend must be one of process, docker, auto, got ['docker']"),
        ("kafka: {max_attempts: 0}", "kafka.max_attempts must be a number >= 1, got 0"),
        ("kafka: {max_attempts: '5'}", "kafka.max_attempts must be a number >= 1, got '5'"),
        ("kafka: {max_attempts: true}", "kafka.max_attempts must be a number >= 1, got True"),
        ("kafka: {max_attempts: 2.5}", "kafka.max_attempts must be a number >= 1, got 2.5"),
        ("kafka: {max_attempts: .inf}", "kafka.max_attempts must be a number >= 1, got inf"),
        ("kafka: {max_attempts: .nan}", "kafka.max_attempts must be a number >= 1, got nan"),
        ("kafka: {max_attempts: null}", "kafka.max_attempts must be a number >= 1, got None"),
        ("kafka: {retry_backoff: -1}", "kafka.retry_backoff must be a number >= 0, got -1"),
        ("kafka: {retry_backoff: fast}", "kafka.retry_backoff must be a number >= 0, got 'fast'"),
        ("kafka: {max_in_flight: 0}", "kafka.max_in_flight must be a number >= 1, got 0"),
        ("kafka: {retention_hours: -0.5}", "kafka.retention_hours must be a number >= 0, got -0.5"),
        ("kafka: {brokers: nonsense}", "kafka.brokers: 'nonsense' must be HOST:PORT[,HOST:PORT…], e.g. 127.0.0.1:9092"),
        ("kafka: {brokers: 'x:70000'}", "kafka.brokers: 'x:70000' must be HOST:PORT"),
        ("kafka: {brokers: {a: 1}}", "kafka.brokers: {'a': 1} must be HOST:PORT"),
        ("kafka: {group: theirs}", "kafka.group must be local (dev's own consumer groups, the default) or kubeless"),
        ("kafka: {attempts: 0}", "kafka.attempts must be a whole number ≥ 1, got 0"),
        ("kafka: [1]", "kafka must be a mapping, e.g. kafka: {max_attempts: 5}"),
        (
            "docker: {network: pasta}",
            "docker.network must be one of auto, bridge, relay, host (auto: bridge when the engine has a bridge "
            "network, else relay), got 'pasta'",
        ),
        ("docker: {netwrk: host}", "unknown key docker.netwrk; known: network"),
        ("docker: relay", "docker must be a mapping, e.g. docker: {network: relay}"),
        ("recorder: {keep: 0}", "recorder.keep must be a number >= 1, got 0"),
        ("recorder: {max_bytes: 10}", "recorder.max_bytes must be a number of bytes >= 1024, got 10"),
        ("recorder: 5", "recorder must be a mapping, e.g. recorder: {keep: 500}"),
        ("just text", "must be a mapping of settings, e.g. backend: docker; got 'just text'"),
        ("[backend, docker]", "must be a mapping of settings"),
    ],
)
def test_a_wrong_value_is_one_line_naming_the_file_the_key_and_what_to_write(tmp_path, text, message):
    write(tmp_path, text + "\n")
    with pytest.raises(UserError) as error:
        config.load(tmp_path)
    assert str(error.value).startswith("%s: %s" % (tmp_path / ".kubeless-local.yaml", message))
    assert "\n" not in str(error.value)


def test_a_file_that_is_not_yaml_is_one_line(tmp_path):
    write(tmp_path, "kafka: {max_attempts: [\n")
    with pytest.raises(UserError, match=r"^.*\.kubeless-local\.yaml: cannot read \(") as error:
        config.load(tmp_path)
    assert "\n" not in str(error.value)  # YAML's own message spans lines


def test_the_old_attempts_key_is_read_as_max_attempts_with_a_one_line_notice(tmp_path):
    write(tmp_path, "kafka: {attempts: 3}\n")
    settings = config.load(tmp_path)
    assert settings.kafka.max_attempts == 3
    (notice,) = settings.notices
    assert notice == (
        "%s: kafka.attempts is deprecated, write kafka.max_attempts (the same setting, for embedded topics and a "
        "Kafka broker alike)" % (tmp_path / ".kubeless-local.yaml")
    )
    write(tmp_path, "kafka: {max_attempts: 3}\n")
    assert config.load(tmp_path).notices == ()
    write(tmp_path, "kafka: {attempts: 3, max_attempts: 4}\n")
    with pytest.raises(UserError, match=r"kafka\.attempts is the old name of kafka\.max_attempts; keep kafka\.max_a"):
        config.load(tmp_path)


def session(root):
    return DevSession(
        root,
        manifests=specs.Manifests(functions=[function()]),
        say=lambda t: None,
        backend=FakeBackend,
        guardian=FakeGuardian,
    )


@pytest.mark.parametrize("key", ["attempts", "max_attempts"])
def test_both_spellings_reach_the_embedded_topics_and_the_broker_alike(tmp_path, key):
    write(tmp_path, "kafka: {%s: 2, retry_backoff: 0.25, brokers: '127.0.0.1:9'}\n" % key)
    settings = config.load(tmp_path)
    assert config.kafka_brokers(settings) == (["127.0.0.1:9"], 2)  # the broker's
    write(tmp_path, "kafka: {%s: 2, retry_backoff: 0.25}\n" % key)
    running = session(tmp_path)
    try:
        running.start()
        assert (running.events.max_attempts, running.events.retry_backoff) == (2, 0.25)  # the embedded topics'
        assert running.events.backoff(1) == 0.25 and running.events.backoff(20) == delivery.BACKOFF_MAX
        notices = [line.text for line in running.logs.tail("dev") if "deprecated" in line.text]
        assert len(notices) == (1 if key == "attempts" else 0), notices  # shown once, by the session
    finally:
        running.stop()


def test_the_session_wires_every_embedded_topic_setting(tmp_path):
    write(tmp_path, "kafka: {max_attempts: 3, retry_backoff: 0.1, max_in_flight: 4, retention_hours: 2}\n")
    running = session(tmp_path)
    try:
        running.start()
        events = running.events
        assert (events.max_attempts, events.retry_backoff, events.max_in_flight) == (3, 0.1, 4)
        assert events.retention == 2 * 3600
    finally:
        running.stop()


def test_a_wrong_settings_file_stops_the_session_before_any_function_starts(tmp_path):
    write(tmp_path, "kafka: {max_in_flight: 0}\n")
    refused = session(tmp_path)
    try:
        with pytest.raises(UserError, match=r"kafka\.max_in_flight must be a number >= 1, got 0"):
            refused.start()
        assert refused.supervisor is None
    finally:
        refused.stop()


def test_the_backend_names_are_the_backends_and_auto(tmp_path):
    assert set(config.BACKENDS) == {*backends.BACKENDS, "auto"}
    assert list(config.BACKENDS) == backends.CHOICES
    write(tmp_path, "backend: process\n")
    named = DevSession(tmp_path, manifests=specs.Manifests(functions=[function()]), say=lambda t: None)
    named.settings = config.load(tmp_path)
    assert named._backend_name() == "process"
    named.backend_name = "docker"  # --backend / $KUBELESS_LOCAL_BACKEND win over the file
    assert named._backend_name() == "docker"


def test_every_key_has_a_row_in_the_readme():
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    keys = [name for name, key in config.TOP_KEYS.items() if not key.renamed_to]
    for section, (_, table, _) in config.SECTIONS.items():
        keys += ["%s.%s" % (section, name) for name, key in table.items() if not key.renamed_to]
    for key in keys:
        assert "| `%s` |" % key in readme, key


def test_the_model_is_engine_code_without_click_or_rich():
    import subprocess
    import sys

    check = "import sys, kubeless_local.config; assert not {m.split('.')[0] for m in sys.modules} & {'click', 'rich'}"
    subprocess.run([sys.executable, "-c", check], check=True)
