import importlib
import json

# Packages kubeless-local itself uses; a function that did not declare them must not see them.
TOOL_PACKAGES = ("yaml", "click", "rich", "requests", "docker", "watchdog")


def handler(event, context):
    imported = []
    for name in TOOL_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        imported.append(name)
    return json.dumps(imported)
