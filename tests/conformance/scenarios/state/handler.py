calls = 0


def handler(event, context):
    global calls
    calls += 1
    return str(calls)
