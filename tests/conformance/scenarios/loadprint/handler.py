import sys

# Output at load without a newline: the runtime's next line (in the pod, its log's next line) follows it.
sys.stdout.write("loading config...")
sys.stdout.flush()


def handler(event, context):
    return "hello world"
