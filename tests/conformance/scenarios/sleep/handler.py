import time


def handler(event, context):
    time.sleep(float(event["data"]))
    return "done"
