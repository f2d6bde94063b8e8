"""Errors a user can cause: the CLI prints the message on one line and exits with code 2.

The engine raises the typed ones (`NotFound`, `Conflict`, `BadRequest`, `Unavailable`, `Failed`) in its own
words, and says what is no error as a `Notice`; what to type next (a command, a flag) is the caller's to add —
the CLI adds it (`with_hint`, `hinted`), a dashboard or a pytest plugin words it otherwise. The admin API
carries the type as its status code, `what` and `name` beside the message, and the client raises the same type
again.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the message names the file/field and the fix."""

    exit_code = 2


class EngineError(UserError):
    """A UserError of a kind a caller may act on: `what` names the kind of thing concerned (`topic`,
    `function`…), `name` which one; both None when the message says it all."""

    def __init__(self, message: str, what: str | None = None, name: str | None = None):
        super().__init__(message)
        self.what, self.name = what, name

    def with_hint(self, hint: str) -> EngineError:
        """The same error with the caller's words after it (see `hinted`). A hinted error is worded, so it has no
        `what` any more (no second hint)."""
        return type(self)(hinted(str(self), hint), None, self.name)


def disk_full(exc: BaseException) -> bool:
    """Whether an SQLite error (sqlite3's) says its disk is full: the user's to make room, not a damaged file."""
    return getattr(exc, "sqlite_errorname", None) == "SQLITE_FULL" or "disk is full" in str(exc)


def hinted(text: str, hint: str) -> str:
    """`text; hint`, or `text` and the hint as it is when it starts with a space, a comma or a newline
    (` (see …)`, `, or …`)."""
    return text + (hint if hint[:1] in (" ", ",", "\n") else "; " + hint)


class Notice(str):
    """What the engine tells that is no error (an image built from older runtime files), in its own words, with
    `what` and `name` as an EngineError has them, so that the caller may add what helps."""

    what: str | None
    name: str | None

    def __new__(cls, text: str, what: str | None = None, name: str | None = None) -> Notice:
        notice = super().__new__(cls, text)
        notice.what, notice.name = what, name
        return notice


class BadRequest(EngineError):
    """The request itself is wrong: a field missing or out of range, a body that is not JSON."""


class NotFound(EngineError):
    """What the request names does not exist (a topic, a function, a trigger, an endpoint)."""


class Conflict(EngineError):
    """The request contradicts what exists (a topic still used by a trigger)."""


class Unavailable(EngineError):
    """The part of the session that would answer does not run (no embedded topics, the Kafka bridge stopped)."""


class Failed(EngineError):
    """What was asked was tried and did not work out (a runtime image's build); the message says what failed."""


HTTP_STATUS: dict[type[EngineError], int] = {  # the admin API's answer to each; any other UserError answers 400
    BadRequest: 400,
    NotFound: 404,
    Conflict: 409,
    Unavailable: 503,
}


def status_of(error: UserError) -> int:
    return next((HTTP_STATUS[kind] for kind in type(error).__mro__ if kind in HTTP_STATUS), 400)
