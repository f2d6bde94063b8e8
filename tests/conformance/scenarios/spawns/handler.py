import subprocess
import time


def handler(event, context):
    # what a call may leave running: a child, and a shell in a session of its own with a child of its own
    seconds = event["data"].decode()
    subprocess.Popen(["sleep", seconds])
    subprocess.Popen(["sh", "-c", "sleep %s & wait" % seconds], start_new_session=True)
    time.sleep(float(seconds))
    return "done"
