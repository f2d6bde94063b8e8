def handler(event, context):
    """Python-only scenario: return the kind of value named by the body."""
    kind = event["data"].decode()
    return {
        "none": None,
        "int": 42,
        "dict": {"k": "v"},
        "list": ["a", "b"],
        "bytes": b"raw",
        "tuple": ("accepted", 202),
        "tuple-headers": ("teapot", 418, {"X-Kind": "tuple"}),
    }[kind]
