import time

held = []  # module state: what earlier calls allocated stays allocated


def handler(event, context):
    """Allocate (and touch) as many MiB more as the body says; answer how many are held, two seconds later."""
    data = event["data"]
    mib = int(data.decode() if isinstance(data, bytes) else data)
    held.extend(bytearray(b"x" * (1 << 20)) for _ in range(mib))
    time.sleep(2)
    return str(len(held))
