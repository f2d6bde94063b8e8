import os


def handler(event, context):
    keys = ("function-name", "timeout", "runtime", "memory-limit")
    return {**{k: context[k] for k in keys}, "env": os.environ.get("MY_VAR"), "hostname": os.environ.get("HOSTNAME")}
