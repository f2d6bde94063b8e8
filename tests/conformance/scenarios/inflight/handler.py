import os
import time


# Waits (up to 60 s) until the file named by the body exists, then returns data.txt read by a path
# relative to the working folder: a call still in flight while the code is saved.
def handler(event, context):
    release = event["data"].decode()
    deadline = time.monotonic() + 60
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    with open("data.txt") as f:
        return f.read().strip()
