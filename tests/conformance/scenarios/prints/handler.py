def handler(event, context):
    """Prints a line naming its data, then answers the data."""
    data = event["data"]
    text = data.decode() if isinstance(data, bytes) else str(data)
    print("handling " + text)
    return text
