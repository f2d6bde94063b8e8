import sys


def handler(event, context):
    """Prints a line it does not end (no newline): the runtime's access line follows it on stdout."""
    sys.stdout.write("no newline here")
    sys.stdout.flush()
    return "done"
