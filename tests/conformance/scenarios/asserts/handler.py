def handler(event, context):
    """Refuses "bad" with an assert (a 500), as the pod's interpreter runs asserts."""
    assert event["data"] not in ("bad", b"bad"), "refused"
    return "checked"
