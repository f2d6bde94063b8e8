import json

import bs4  # beautifulsoup4: needs soupsieve and typing_extensions
import decorator  # the runtime image's Python has it (a dependency of Debian's python3-prometheus-client)
import requests  # needs urllib3, idna, certifi, charset_normalizer
import typing_extensions


def handler(event, context):
    return json.dumps({m.__name__: m.__file__ for m in (bs4, decorator, requests, typing_extensions)})
