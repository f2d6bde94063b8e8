"""An htpasswd file (what an ingress's basic-auth Secret holds under `auth`) and its password check.

The formats Apache's `htpasswd` writes and nginx reads: `$apr1$` (MD5, `-m`, the default), bcrypt (`$2y$`,
`-B`), `{SHA}` (`-s`) and `{PLAIN}`. apr1 is Apache's published MD5-crypt variant, written out here with
hashlib; bcrypt uses the `bcrypt` package. Comparisons take constant time.
"""

import base64
import hashlib
import hmac
from typing import Callable

from kubeless_local.errors import UserError

ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
APR1 = "$apr1$"
BCRYPT = ("$2y$", "$2b$", "$2a$")


def _to64(value: int, count: int) -> str:
    out = []
    for _ in range(count):
        out.append(ITOA64[value & 0x3F])
        value >>= 6
    return "".join(out)


def apr1(password: bytes, salt: bytes) -> str:
    """The `$apr1$salt$hash` of a password (Apache's apr_md5_encode)."""
    salt = salt[:8]
    magic = APR1.encode()
    context = password + magic + salt
    final = hashlib.md5(password + salt + password).digest()
    for left in range(len(password), 0, -16):
        context += final[: min(16, left)]
    bits = len(password)
    while bits:
        context += b"\x00" if bits & 1 else password[:1]
        bits >>= 1
    final = hashlib.md5(context).digest()
    for i in range(1000):
        step = password if i & 1 else final
        if i % 3:
            step += salt
        if i % 7:
            step += password
        step += final if i & 1 else password
        final = hashlib.md5(step).digest()
    encoded = "".join(
        _to64((final[a] << 16) | (final[b] << 8) | final[c], 4)
        for a, b, c in ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5))
    )
    return "%s%s$%s%s" % (APR1, salt.decode("ascii", "replace"), encoded, _to64(final[11], 2))


def _apr1_check(stored: str, password: bytes) -> bool:
    salt = stored[len(APR1) :].split("$", 1)[0].encode()
    return hmac.compare_digest(apr1(password, salt).encode(), stored.encode())


def _bcrypt_check(stored: str, password: bytes) -> bool:
    import bcrypt

    try:
        return bcrypt.checkpw(password, ("$2b$" + stored[4:]).encode())
    except ValueError:
        return False


def _sha_check(stored: str, password: bytes) -> bool:
    digest = base64.b64encode(hashlib.sha1(password).digest()).decode()
    return hmac.compare_digest(digest.encode(), stored[len("{SHA}") :].encode())


def _plain_check(stored: str, password: bytes) -> bool:
    return hmac.compare_digest(stored[len("{PLAIN}") :].encode(), password)


def scheme_of(stored: str) -> tuple:
    """(name, check) of a stored hash, or (None, None) for a format nginx reads but this does not (crypt)."""
    if stored.startswith(APR1):
        return "apr1-md5", _apr1_check
    if stored.startswith(BCRYPT):
        return "bcrypt", _bcrypt_check
    if stored.startswith("{SHA}"):
        return "sha1", _sha_check
    if stored.startswith("{PLAIN}"):
        return "plain", _plain_check
    return None, None


class Htpasswd:
    """user → (scheme, check, stored hash); call it with (user, password)."""

    def __init__(self, entries: dict):
        self.entries = entries

    @classmethod
    def parse(cls, data: bytes, where: str) -> "Htpasswd":
        """UserError naming `where` and the line for a line that is not `user:hash` in a known format."""
        entries: dict = {}
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError("%s: not UTF-8 text; write it with htpasswd" % where) from None
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, stored = line.partition(":")
            name, check = scheme_of(stored)
            if not sep or not user or check is None:
                raise UserError(
                    "%s: line %d is not USER:HASH in apr1 (htpasswd -m), bcrypt (-B) or SHA (-s)" % (where, number)
                )
            entries[user] = (name, check, stored)
        if not entries:
            raise UserError("%s: no user in it; add one with `htpasswd auth USER`" % where)
        return cls(entries)

    def __call__(self, user: str, password: str) -> bool:
        entry = self.entries.get(user)
        if entry is None:
            return False
        check: Callable = entry[1]
        return bool(check(entry[2], password.encode("utf-8")))

    def scheme(self, user: str):
        entry = self.entries.get(user)
        return entry[0] if entry else None
