def handler(event, context):
    """The characters of data.txt ("é") read as text in the default encoding: 1 in the pod (UTF-8)."""
    with open("data.txt") as data:
        return str(len(data.read().strip()))
