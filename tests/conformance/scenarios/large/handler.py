def handler(event, context):
    return str(len(event["data"]))
