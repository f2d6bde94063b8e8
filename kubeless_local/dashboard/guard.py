"""Who may use the dashboard: every request is checked here before anything answers it.

A page on localhost is reachable by every site the user visits, so: the Host must be this server's
loopback name and port (DNS rebinding: evil.example resolving to 127.0.0.1 sends its own Host); a request
another site's page sends (a foreign `Origin`, `Sec-Fetch-Site: cross-site`) is refused; and everything
else needs the session cookie, which only a one-time login token (printed by `dev`, or minted for
`kubeless-local dashboard`) turns into. The cookie is HttpOnly and SameSite=Strict: page scripts cannot
read it and no other site's request carries it. A read-only dashboard (screen sharing) refuses every action.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl, urlencode, urlsplit

COOKIE = "kubeless_local_dashboard"
MAX_LOGIN_TOKENS = 32  # unused login links kept; the oldest forgotten first

# Every answer carries these: only this server's own files run, in no frame, sending no referrer.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@dataclass(frozen=True)
class Verdict:
    """None status: let the request through. Otherwise answer `status` with `reason` (or, for 303, go to
    `location` with `cookie` set)."""

    status: int | None = None
    reason: str = ""
    location: str = ""
    cookie: str = ""


ALLOW = Verdict()


class Guard:
    def __init__(self, port: int, read_only: bool = False) -> None:
        self.port, self.read_only = port, read_only
        self.secret = secrets.token_urlsafe(32)  # the cookie's value for this dashboard's life
        self.logins: list[str] = []  # one-time login tokens not used yet
        self.lock = threading.Lock()
        self.hosts = {"127.0.0.1:%d" % port, "localhost:%d" % port, "[::1]:%d" % port}
        self.origins = {"http://" + host for host in self.hosts}

    def login_token(self) -> str:
        """A new one-time token for a login link (?token=…)."""
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.logins = [*self.logins, token][-MAX_LOGIN_TOKENS:]
        return token

    def login_url(self, host: str = "127.0.0.1") -> str:
        return "http://%s:%d/?token=%s" % (host, self.port, self.login_token())

    def cookie_header(self) -> str:
        return "%s=%s; HttpOnly; SameSite=Strict; Path=/" % (COOKIE, self.secret)

    def _use_login(self, token: str) -> bool:
        with self.lock:
            for known in self.logins:
                if hmac.compare_digest(known.encode(), token.encode()):
                    self.logins.remove(known)  # once only: a link in shell history or a screenshot is spent
                    return True
        return False

    def site(self, headers: dict[str, str]) -> Verdict:
        """The request is addressed to this server by its loopback name and comes from no other site's page."""
        if headers.get("host", "") not in self.hosts:
            return Verdict(403, "this dashboard answers only to %s" % ", ".join(sorted(self.hosts)))
        origin = headers.get("origin")
        if origin is not None and origin not in self.origins:
            return Verdict(403, "requests from another site's page are refused")
        if headers.get("sec-fetch-site", "") == "cross-site":
            return Verdict(403, "requests from another site's page are refused")
        return ALLOW

    def check(self, method: str, target: str, headers: dict[str, str], acts: bool = False) -> Verdict:
        """The verdict on one request. `headers`: names in lower case; `acts`: the route changes something
        (emit, fire, replay, call), refused when read-only."""
        verdict = self.site(headers)
        if verdict.status is not None:
            return verdict
        url = urlsplit(target)
        query = parse_qsl(url.query, keep_blank_values=True)
        token = next((value for key, value in query if key == "token"), None)
        if token is not None and method == "GET":
            if not self._use_login(token) and not self._has_cookie(headers):
                return Verdict(401, "this login link was used already; `kubeless-local dashboard` opens a new one")
            rest = urlencode([(key, value) for key, value in query if key != "token"])
            return Verdict(303, location=url.path + ("?" + rest if rest else ""), cookie=self.cookie_header())
        if not self._has_cookie(headers):
            return Verdict(401, "open the link that `kubeless-local dev` printed, or run `kubeless-local dashboard`")
        if acts and self.read_only:
            return Verdict(403, "this dashboard is read-only (dev --read-only)")
        return ALLOW

    def _has_cookie(self, headers: dict[str, str]) -> bool:
        try:
            jar = SimpleCookie(headers.get("cookie", ""))
        except CookieError:
            return False
        morsel = jar.get(COOKIE)
        return morsel is not None and hmac.compare_digest(morsel.value.encode(), self.secret.encode())
