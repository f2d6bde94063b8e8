import json


def handler(event, context):
    data = event["data"]
    if isinstance(data, bytes):
        data = data.decode()
    elif not isinstance(data, str):
        data = json.dumps(data)
    keys = ("event-id", "event-type", "event-time", "event-namespace")
    return {"data": data, **{k: event[k] for k in keys}}
