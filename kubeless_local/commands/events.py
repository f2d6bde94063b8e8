"""Events: `emit kafka|nats|cron` and `topic ls|create|delete|publish|replay` (the session's topics: embedded,
or a real broker's)."""

import json
import sys
import time
from pathlib import Path

import click

from kubeless_local.commands.common import json_option, picked_session
from kubeless_local.commands.output import headline, raise_exit, user_errors, worded
from kubeless_local.commands.serving import print_table
from kubeless_local.errors import EngineError, NotFound, UserError

# ---------------------------------------------------------------- events: emit, topic (embedded topics)


def read_event_data(data):
    """(data, content type implied): `--data TEXT`, or `--data @FILE` (bytes; a .json file is JSON)."""
    if not data.startswith("@"):
        return data, None
    path = Path(data[1:])
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise UserError("--data %s: cannot read the file (%s)" % (data, exc.strerror or exc)) from None
    return content, "application/json" if path.suffix == ".json" else None


EMIT_HINTS: dict[tuple[type[EngineError], str], str] = {
    (NotFound, "topic"): "create it with `kubeless-local topic create {name}` or add a trigger for it"
}


def emit_events(source, topic, data, count=1, wait=False, wait_timeout=60.0, content_type=None):
    from kubeless_local.emulator import AdminClient

    data, implied = read_event_data(data)
    session = picked_session(AdminClient.topic_session, topic)
    try:
        result = session.emit(topic, data, source=source, count=count, content_type=content_type or implied)
    except NotFound as exc:
        raise worded(exc, EMIT_HINTS) from None
    click.echo(describe_emitted(result))
    if not result["subscribers"]:
        click.echo("warning: %s" % unsubscribed(result), err=True)
    elif wait and result["tracked"]:
        (stored,) = result["ranges"]
        wait_for_outcome(session, source, topic, stored["first"], stored["last"], wait_timeout)
    elif wait:
        from kubeless_local.emulator.triggers.interface import dead_letter_topic

        click.echo(
            "consumed by %s; with a real broker delivery is tracked by the consumer groups: their lag in "
            "`kubeless-local topic ls`, failed answers in `kubeless-local logs FUNCTION`, messages that failed "
            "every attempt on topic %s" % (", ".join(result["subscribers"]), dead_letter_topic(topic))
        )


def describe_emitted(result):
    """One line: how many events went where (Topics.emit's answer, triggers/interface.py)."""
    count, topic, ranges = result["count"], result["topic"], result["ranges"]
    if result["broker"] is None:  # the embedded log: its sequence numbers
        (stored,) = ranges
        return "%d event(s) stored on topic %s (#%d-#%d)" % (count, topic, stored["first"], stored["last"])
    where = ", ".join("partition %d offsets %d-%d" % (r["partition"], r["first"], r["last"]) for r in ranges)
    return "%d message(s) produced to topic %s on %s (%s)" % (count, topic, result["broker"], where)


def unsubscribed(result):
    if result["broker"] is None:
        return "no %s trigger subscribes to topic %s; stored until one does" % (result["source"], result["topic"])
    return "no KafkaTrigger of this dev consumes topic %s; it stays on the broker" % result["topic"]


FINAL = ("delivered", "dead-lettered")


def wait_for_outcome(client, source, topic, first, last, timeout):
    """Print each event's fate per subscriber as it is settled (and each retry as it happens); exit 1 when an
    event was dead-lettered or is not settled within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    shown: dict = {}
    while True:
        outcome = client.outcome(topic, first, last, source)
        for seq, subscribers in sorted(outcome.items()):
            for name, state in sorted(subscribers.items()):
                if state != "pending" and shown.get((seq, name)) != state:
                    shown[(seq, name)] = state
                    click.echo("#%d %s: %s" % (seq, name, state))
        states = [state for subscribers in outcome.values() for state in subscribers.values()]
        if all(state in FINAL for state in states):
            break
        if time.monotonic() > deadline:
            raise_exit("%d event(s) not settled within %.0f s" % (sum(s not in FINAL for s in states), timeout), 1)
        time.sleep(0.1)
    dead = sum(state == "dead-lettered" for state in states)
    if dead:
        raise_exit("%d event(s) dead-lettered; `kubeless-local topic ls` shows them" % dead, 1)


topic_option = click.option("--topic", required=True, help="Topic name.")
count_option = click.option(
    "--count", type=click.IntRange(1, 1_000_000), default=1, show_default=True, help="Send it N times."
)
data_option = click.option("--data", required=True, help="Event data: text (a JSON object is sent as JSON) or @FILE.")
wait_options = [
    click.option("--wait", is_flag=True, help="Print what happens to each event (delivered, retrying, dead-lettered)."),
    click.option("--wait-timeout", type=float, default=60.0, show_default=True, help="Seconds --wait waits at most."),
    click.option("--content-type", help="application/json: refuse data that is not valid JSON before storing it."),
]


def with_options(options):
    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


@click.group()
def emit():
    """Send events to the running dev's triggers, as Kubeless' event sources would (Kafka, NATS, cron)."""


@emit.command(name="kafka")
@topic_option
@data_option
@count_option
@with_options(wait_options)
@user_errors
def emit_kafka(topic, data, count, wait, wait_timeout, content_type):
    """Publish a Kafka message to TOPIC: every KafkaTrigger on it delivers it to its functions."""
    emit_events("kafka", topic, data, count, wait, wait_timeout, content_type)


@emit.command(name="nats")
@topic_option
@data_option
@count_option
@with_options(wait_options)
@user_errors
def emit_nats(topic, data, count, wait, wait_timeout, content_type):
    """Publish a NATS message to TOPIC: every NATSTrigger on it delivers it to its functions."""
    emit_events("nats", topic, data, count, wait, wait_timeout, content_type)


@click.group()
def topic():
    """The running dev's embedded topics (as `kubeless topic`)."""


@topic.command(name="ls")
@json_option
@user_errors
def topic_ls(output):
    """Topics, their subscribers (position, lag) and dead letters."""
    from kubeless_local.emulator import AdminClient

    client = AdminClient()
    rows = client.topics()
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    columns = [
        ("TOPIC", lambda r: r["name"]),
        ("EVENTS", lambda r: str(r["events"])),
        ("SUBSCRIBERS", lambda r: ", ".join(s["name"] for s in r["subscribers"]) or "-"),
        ("LAG", lambda r: str(sum(s["lag"] for s in r["subscribers"]))),
        ("DEAD", lambda r: str(len(r["dead_letters"]))),
    ]
    print_table(rows, [*columns, ("PROJECT", lambda r: r["project"])] if client.across else columns)
    letters = [letter for row in rows for letter in row["dead_letters"]]
    if letters:
        click.echo("\nDead letters (`kubeless-local topic replay TOPIC [--id ID]` sends them again):")
        print_table(
            letters,
            [
                ("ID", lambda d: str(d["id"])),
                ("TOPIC", lambda d: d["topic"]),
                ("FUNCTION", lambda d: d.get("function") or "-"),
                ("EVENT-ID", lambda d: d["event_id"]),
                ("ATTEMPTS", lambda d: str(d["attempts"])),
                ("STATUS", lambda d: str(d["status"]) + (" (replaying)" if d["replay"] else "")),
                ("BODY", lambda d: headline(d["body"])[:80]),
            ],
        )


@topic.command(name="create")
@click.argument("name")
@user_errors
def topic_create(name):
    """Create topic NAME."""
    from kubeless_local.emulator import AdminClient

    session = picked_session(AdminClient.project_session)
    created = session.create_topic(name)["created"]
    click.echo("topic %s %s" % (name, "created" if created else "already exists"))


@topic.command(name="delete")
@click.argument("name")
@user_errors
def topic_delete(name):
    """Delete topic NAME with its events and dead letters."""
    from kubeless_local.emulator import AdminClient

    session = picked_session(AdminClient.topic_session, name)
    session.delete_topic(name)
    click.echo("topic %s deleted" % name)


@topic.command(name="publish")
@topic_option
@data_option
@with_options(wait_options)
@user_errors
def topic_publish(topic, data, wait, wait_timeout, content_type):
    """Publish one message to a topic (as `kubeless topic publish`)."""
    emit_events("kafka", topic, data, 1, wait, wait_timeout, content_type)


@topic.command(name="replay")
@click.argument("name")
@click.option("--trigger", help="Only the dead letters of this trigger's functions.")
@click.option("--id", "letter_id", type=int, help="Only this dead letter (see `topic ls`).")
@user_errors
def topic_replay(name, trigger, letter_id):
    """Send a topic's dead letters again (same event-id and event-time)."""
    from kubeless_local.emulator import AdminClient

    session = picked_session(AdminClient.topic_session, name)
    count = session.replay(name, trigger, letter_id)["replayed"]
    if letter_id is not None and not count:
        raise UserError(
            "no dead letter %d waiting on topic %s; `kubeless-local topic ls` lists them" % (letter_id, name)
        )
    click.echo("%d dead letter(s) of topic %s sent again" % (count, name))


def describe_run(run):
    """One line for a cron run: what was sent, to which function, and how it answered."""
    sent = "cron trigger %s → function %s: %s (event-id %s)" % (
        run["trigger"],
        run["function"],
        run["method"],
        run["event_id"],
    )
    if run["status"] is None:
        return "%s failed: %s" % (sent, run["error"])
    return "%s answered %d in %.0f ms" % (sent, run["status"], run["duration_ms"])


@emit.command(name="cron")
@click.argument("trigger")
@user_errors
def emit_cron(trigger):
    """Fire the CronJobTrigger TRIGGER now, as its CronJob would; waits for the answer."""
    from kubeless_local.emulator import AdminClient

    session = picked_session(AdminClient.cron_session, trigger)
    run = session.fire_cron(trigger)
    click.echo(describe_run(run))
    if not run["ok"]:
        sys.exit(1)  # like `call`: the event was sent, the function failed it
