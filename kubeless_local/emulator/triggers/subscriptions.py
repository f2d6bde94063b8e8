"""Who receives a topic's events: one subscription per (KafkaTrigger or NATSTrigger, Function its
`functionSelector` selects in the trigger's namespace), named as the Kubeless Kafka controller names that
pair's consumer group, `<namespace>_<trigger>_<function>_<topic>`. The one model of the embedded topics
(delivery.py: a subscriber's stored position) and of the real broker (kafka_bridge.py: a consumer group).
"""

from dataclasses import dataclass

SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True)
class Subscription:
    name: str  # the consumer group (embedded: the subscriber whose position is stored)
    trigger: str
    kind: str  # KafkaTrigger / NATSTrigger
    source: str  # kafka / nats: the envelope its function gets
    namespace: str
    function: str
    topic: str


def group_name(namespace, trigger, function, topic, source="kafka"):
    """The Kubeless Kafka controller's consumer group; NATS subscribers are prefixed so the two kinds'
    triggers may share a name."""
    name = "%s_%s_%s_%s" % (namespace, trigger, function, topic)
    return name if source == "kafka" else "%s:%s" % (source, name)


def selector_matches(labels, match_labels, expressions=()):
    """Kubernetes LabelSelector semantics: every matchLabels pair and every expression must hold; an empty
    selector matches every function."""
    if any(labels.get(key) != value for key, value in match_labels.items()):
        return False
    for expression in expressions:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator not in SELECTOR_OPERATORS:
            return False  # the API server rejects such a selector; never match on it
    return True


def selects(trigger, function):
    """The trigger's functionSelector selects `function`: the controller lists Functions in its namespace."""
    return function.namespace == trigger.namespace and selector_matches(
        function.labels, trigger.selector, trigger.expressions
    )


def subscriptions(triggers, functions, suffix=""):
    """(subscriptions, triggers that select no Function): one per trigger × Function it selects, its group
    named as Kubeless names it, + `suffix` (the broker bridge's own groups: kafka_bridge.LOCAL_SUFFIX)."""
    found, unmatched = [], []
    for trigger in triggers:
        matched = [fn for fn in functions if selects(trigger, fn)]
        if not matched:
            unmatched.append(trigger)
        for fn in matched:
            ns, topic = trigger.namespace, trigger.topic
            name = group_name(ns, trigger.name, fn.name, topic, trigger.source) + suffix
            found.append(Subscription(name, trigger.name, type(trigger).__name__, trigger.source, ns, fn.name, topic))
    return found, unmatched
