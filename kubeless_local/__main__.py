import os
import sys

# `python -m` puts the working folder first on sys.path, so a user's uuid.py or json.py in the function's folder
# would be imported in place of the standard module (by this command and by the background session that `function
# deploy` starts there). Leave it out unless this package was found there: a checkout run without an install.
_checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path and os.path.abspath(sys.path[0] or os.curdir) == os.getcwd() != _checkout:
    del sys.path[0]

from kubeless_local.commands.entry import entry  # noqa: E402  (after the path is made safe)

entry()
