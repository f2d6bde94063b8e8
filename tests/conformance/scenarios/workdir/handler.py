import time


def handler(event, context):
    if event["data"] == b"sleep":
        time.sleep(30)  # a runaway call
    with open("data.txt") as f:  # relative to the working folder, as /kubeless in the pod
        return f.read().strip()
