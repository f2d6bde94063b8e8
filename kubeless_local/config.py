"""A project's settings, `<root>/.kubeless-local.yaml`: one typed model, read once by `load(root)`.

The file is loaded into frozen dataclasses and checked key by key, from the tables below: an unknown
key, a value of the wrong type or out of range is a UserError of one line naming the file, the key and
what to write. A deprecated key still works; `Settings.notices` says, in one line, what to write
instead (the engine returns it, the caller shows it). No file is the defaults. Every key is documented
in the README's "Project settings" table.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NoReturn

from kubeless_local.errors import UserError
from kubeless_local.paths import SETTINGS_FILE

FILE = SETTINGS_FILE
BACKENDS = ("process", "docker", "auto")  # auto: docker when an engine answers and the images exist, else process
NETWORKS = ("auto", "bridge", "relay", "host")  # docker.network: how a function's container is reached (README)
GROUPS = ("local", "kubeless")  # kafka.group: dev's own consumer groups (default), or the deployed controller's
ADDRESS_RE = re.compile(r"^[A-Za-z0-9._\-\[\]:]+:\d{1,5}$")


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class Kafka:
    """`kafka:`: how events of Kafka (and NATS) triggers are delivered, on the embedded topics and on a
    real broker alike, unless a field says otherwise."""

    max_attempts: int = 5  # failed attempts before an event is dead-lettered (embedded) or given up (broker)
    retry_backoff: float = 0.5  # seconds before the first retry; doubles per failure (delivery.backoff)
    max_in_flight: int = 1  # embedded: events of one subscriber sent at once (1: one after the other, in order)
    retention_hours: float = 168.0  # embedded: consumed events older than this are pruned
    brokers: tuple[str, ...] = ()  # HOST:PORT each: dev is that broker's KafkaTrigger controller; none: embedded
    group: str = "local"  # broker: local (dev's own consumer groups) or kubeless (the deployed controller's)


@dataclass(frozen=True)
class Docker:
    """`docker:`: the docker backend."""

    # auto: bridge when the engine has a `bridge` network, else relay; host: the host's network (opt-in, the
    # function's server binds 127.0.0.1 on the local port itself). The modes: emulator/docker/network.py.
    network: str = "auto"


@dataclass(frozen=True)
class Recorder:
    """`recorder:`: how many recorded invocations `dev` keeps per function (emulator/recorder.py); the oldest
    go first when either bound is reached."""

    keep: int = 500  # records per function
    max_bytes: int = 50 * 1024 * 1024  # bytes of records (bodies, headers, logs) per function


@dataclass(frozen=True)
class Settings:
    path: Path  # the file; it need not exist
    backend: str = "process"  # where functions run when no --backend / $KUBELESS_LOCAL_BACKEND says
    kafka: Kafka = Kafka()
    docker: Docker = Docker()
    recorder: Recorder = Recorder()
    notices: tuple[str, ...] = ()  # one line each, to show once: deprecated keys and what to write instead


# ---------------------------------------------------------------- the keys


@dataclass(frozen=True)
class Key:
    """One key of the file: how its value is read (`read` raises ValueError or TypeError on a wrong one)
    and what the error line says it must be."""

    read: Callable[[Any], Any]
    must: str
    says: str = "{key} must be {must}, got {value!r}"  # the error line after the file's name
    renamed_to: str = ""  # a deprecated spelling: the key it is read as
    null_is_default: bool = False  # `key:` with no value (null) leaves the default


def number(kind: type, minimum: float) -> Callable[[Any], Any]:
    def read(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum or kind(value) != value:
            raise ValueError(value)
        return kind(value)

    return read


def one_of(choices: tuple) -> Callable[[Any], Any]:
    def read(value: Any) -> Any:
        if value not in choices:
            raise ValueError(value)
        return value

    return read


def broker_list(value: Any) -> tuple[str, ...]:
    """'h1:9092,h2:9092' (or a YAML list) → ('h1:9092', 'h2:9092'); an empty value names none."""
    if not value:
        return ()
    items = value if isinstance(value, list) else str(value).split(",")
    brokers = tuple(str(item).strip() for item in items if str(item).strip())
    bad = [b for b in brokers if not ADDRESS_RE.match(b) or not 0 < int(b.rsplit(":", 1)[1]) < 65536]
    if bad or not brokers:
        raise ValueError(value)
    return brokers


BROKERS_MUST = "HOST:PORT[,HOST:PORT…], e.g. 127.0.0.1:9092"

KAFKA_KEYS = {
    "max_attempts": Key(number(int, 1), "a number >= 1"),
    "retry_backoff": Key(number(float, 0), "a number >= 0"),
    "max_in_flight": Key(number(int, 1), "a number >= 1"),
    "retention_hours": Key(number(float, 0), "a number >= 0"),
    "brokers": Key(broker_list, BROKERS_MUST, says="{key}: {value!r} must be {must}", null_is_default=True),
    "group": Key(
        one_of(GROUPS),
        "local (dev's own consumer groups, the default) or kubeless (the deployed controller's groups: "
        "messages are split with it)",
    ),
    # the broker's name for max_attempts until both paths shared one setting
    "attempts": Key(number(int, 1), "a whole number ≥ 1", renamed_to="max_attempts"),
}
DOCKER_KEYS = {
    "network": Key(
        one_of(NETWORKS),
        "one of %s (auto: bridge when the engine has a bridge network, else relay)" % ", ".join(NETWORKS),
        null_is_default=True,
    ),
}
RECORDER_KEYS = {
    "keep": Key(number(int, 1), "a number >= 1"),
    "max_bytes": Key(number(int, 1024), "a number of bytes >= 1024"),
}
SECTIONS = {
    "kafka": (Kafka, KAFKA_KEYS, "e.g. kafka: {max_attempts: 5}"),
    "docker": (Docker, DOCKER_KEYS, "e.g. docker: {network: relay}"),
    "recorder": (Recorder, RECORDER_KEYS, "e.g. recorder: {keep: 500}"),
}
TOP_KEYS = {"backend": Key(one_of(BACKENDS), "one of %s" % ", ".join(BACKENDS), null_is_default=True)}
# Keys people write that belong elsewhere: said with the reason instead of "unknown".
MISPLACED = {"nats": "the kafka: settings apply to the embedded NATS topics as well (docs/events.md)"}


# ---------------------------------------------------------------- loading and checking


class _Checker:
    """Reads the file's mappings against the tables; errors name the file and the key path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.notices: list[str] = []

    def fail(self, message: str) -> NoReturn:
        raise UserError("%s: %s" % (self.path, message))

    def keys(self, data: dict, prefix: str, keys: dict, sections: tuple = ()) -> dict:
        """{model field: value} of one mapping, every key known (a key of `keys`, or a section's name,
        read by the caller) and its value read."""
        known = ", ".join([name for name, key in keys.items() if not key.renamed_to] + list(sections))
        values = {}
        for name, value in data.items():
            where = prefix + str(name)
            if name not in keys and name not in sections:
                self.fail("unknown key %s; known: %s" % (where, known))
            if name in sections:
                continue
            key = keys[name]
            if value is None and key.null_is_default:
                continue
            try:
                values[key.renamed_to or name] = key.read(value)
            except (ValueError, TypeError, ArithmeticError):
                self.fail(key.says.format(key=where, must=key.must, value=value))
            if key.renamed_to:
                self.renamed(data, prefix, name, key.renamed_to)
        return values

    def renamed(self, data: dict, prefix: str, old: str, new: str) -> None:
        if new in data:
            self.fail("%s%s is the old name of %s%s; keep %s%s only" % (prefix, old, prefix, new, prefix, new))
        self.notices.append(
            "%s: %s%s is deprecated, write %s%s (the same setting, for embedded topics and a Kafka broker alike)"
            % (self.path, prefix, old, prefix, new)
        )

    def settings(self, data: Any) -> Settings:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail("must be a mapping of settings, e.g. backend: docker; got %r" % (data,))
        for key, why in MISPLACED.items():
            if key in data:
                self.fail("unknown key %s; %s" % (key, why))
        found = self.keys(data, "", TOP_KEYS, tuple(SECTIONS))
        for name, (model, keys, example) in SECTIONS.items():
            section = data.get(name)
            if section is not None and not isinstance(section, dict):
                self.fail("%s must be a mapping, %s" % (name, example))
            found[name] = model(**self.keys(section or {}, name + ".", keys))
        return Settings(self.path, notices=tuple(self.notices), **found)


def load(root: Any) -> Settings:
    """The settings of the project at `root`; the defaults when it has no settings file. UserError naming
    the file and the key when the file is wrong."""
    path = Path(root) / FILE
    if not path.is_file():
        return Settings(path)
    import yaml  # ~15 ms to import: only a project that has the file reads it (`call` imports this module)

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError("%s: cannot read (%s)" % (path, " ".join(str(exc).split()))) from None  # one line
    return _Checker(path).settings(data)


def kafka_brokers(settings: "Settings", option: Any = None) -> tuple[list[str] | None, int]:
    """(brokers, attempts): `option` (DevSession's kafka_brokers: the CLI's flag, or KAFKA_BROKERS through it)
    before the project settings' kafka.brokers; brokers None when neither names one (embedded topics)."""
    brokers = parse_brokers(option, "kafka_brokers") if option else list(settings.kafka.brokers)
    return brokers or None, settings.kafka.max_attempts


def parse_brokers(value: Any, where: str) -> list[str]:
    """Brokers given outside the file (DevSession's kafka_brokers; the CLI's flag or KAFKA_BROKERS): a list;
    UserError naming `where`."""
    try:
        brokers = broker_list(value)
    except ValueError:
        brokers = ()
    if not brokers:
        raise UserError("%s: %r must be %s" % (where, value, BROKERS_MUST))
    return list(brokers)
