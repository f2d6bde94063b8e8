def hello(event, context):
    """Kubeless calls this with the event (data, event-* headers) and the function context."""
    print("called with", event["data"])
    return {"hello": "world", "data": event["data"]} if isinstance(event["data"], dict) else "hello world"
