def handler(event, context):
    if event["data"] == b"boom":
        raise RuntimeError("boom")
    return "ok"
