"""Who gets served: the web config's rate limit, then basic auth with cached bcrypt verdicts.

A bcrypt check takes 70-300 ms, so :class:`Admission` decides on the server's I/O thread from a
cached verdict, and hands out only the uncached checks, to be run on threads of their own (the
server's auth workers) so that password guessing cannot occupy the threads that serve
authenticated scrapes. It also bounds how many such checks may wait.
"""

from __future__ import annotations

import base64
import binascii
import collections
import functools
import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final

from pqd.http.parse import RequestHead, ServerLimits, simple_response
from pqd.http.webconfig import BCRYPT_MAX_PASSWORD_BYTES, RateLimit, WebConfig
from pqd.http.webconfig_watch import LoadedWebConfig

__all__ = [
    "AUTH_EXEMPT_PATHS",
    "Admission",
    "BasicAuth",
    "BcryptCheck",
    "TokenBucket",
    "unauthorized_response",
]

#: Answered without basic auth (TLS, a property of the connection, still applies): liveness and
#: readiness probes (the kubelet's, Docker's HEALTHCHECK) carry no credentials, and these
#: pages say only whether pqd is healthy and ready.
AUTH_EXEMPT_PATHS: Final = frozenset({"/-/healthy", "/-/ready"})
_REALM: Final = 'Basic realm="pqd"'
# The start of a bcrypt hash of the default cost, for when there is no user's hash to copy it from.
_DEFAULT_HASH: Final = "$2b$10$"
# Marks a BcryptCheck of an unknown user; followed by the cost of its stand-in hash.
_UNKNOWN_USER: Final = b"unknown-user:"


@dataclass(frozen=True)
class BcryptCheck:
    """A login whose verdict is not cached: the bcrypt check still to be made (on an auth
    worker). ``key`` is where :meth:`BasicAuth.verify` remembers the verdict."""

    user: str
    password: bytes = field(repr=False)
    hashed: bytes = field(repr=False)
    known_user: bool
    key: bytes


@functools.lru_cache(maxsize=32)
def _unknown_user_hash(cost: int) -> bytes:
    # An unknown user is checked against a hash of the same cost as a real one, so the time a
    # failed login takes does not tell whether the user exists.
    import bcrypt  # only a pqd with basic auth users gets here

    return bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=cost))


def basic_credentials(header: str | None) -> tuple[str, bytes] | None:
    """User and password from an ``Authorization: Basic`` header; None if there are none."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
        user_b, sep, password = decoded.partition(b":")
        user = user_b.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    return (user, password) if sep else None


class BasicAuth:
    """Remembers bcrypt verdicts so that a scrape every second pays the 70-300 ms only once.

    Keyed by an HMAC-SHA256 (with a per-process random key) of user, password and hash: a rotated
    hash or password misses the cache by construction, and the memory holds no password.
    Failures are remembered too, so repeating a wrong password costs nothing either.
    """

    def __init__(self, cache_size: int) -> None:
        self._secret = secrets.token_bytes(32)
        self._size = cache_size
        self._ok: collections.OrderedDict[bytes, str] = collections.OrderedDict()
        self._failed: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._lock = threading.Lock()

    def cached_verdict(self, header: str | None, config: WebConfig) -> str | BcryptCheck | None:
        """The user if cached as good, None to refuse now, or a check to run on a worker."""
        credentials = basic_credentials(header)
        if credentials is None:
            return None
        user, password = credentials
        hashed_text = config.password_hash(user)
        if hashed_text is None:
            # The cost of the first user's hash ("$2b$NN$..."), for a stand-in hashed on the worker.
            first = config.basic_auth_users[0][1] if config.basic_auth_users else _DEFAULT_HASH
            hashed = _UNKNOWN_USER + first[4:6].encode()
        else:
            hashed = hashed_text.encode("ascii")
        digest = self._cache_key(user, hashed, password)
        with self._lock:
            if digest in self._ok:
                self._ok.move_to_end(digest)
                return self._ok[digest]
            if digest in self._failed:
                self._failed.move_to_end(digest)
                return None
        return BcryptCheck(user, password, hashed, hashed_text is not None, digest)

    def _cache_key(self, user: str, hashed: bytes, password: bytes) -> bytes:
        key = hmac.new(self._secret, digestmod=hashlib.sha256)
        for part in (user.encode(), hashed, password):
            key.update(len(part).to_bytes(8, "big"))
            key.update(part)
        return key.digest()

    def verify(self, check: BcryptCheck) -> bool:
        """The slow part: run on an auth worker, never on the I/O thread."""
        # bcrypt runs for an unknown user too: the time taken must not tell who exists.
        ok = _bcrypt_matches(check.password, check.hashed) and check.known_user
        with self._lock:
            if ok:
                self._ok[check.key] = check.user
                cache: (
                    collections.OrderedDict[bytes, str] | collections.OrderedDict[bytes, None]
                ) = self._ok
            else:
                self._failed[check.key] = None
                cache = self._failed
            while len(cache) > self._size:
                cache.popitem(last=False)
        return ok


def _bcrypt_matches(password: bytes, hashed: bytes) -> bool:
    if hashed.startswith(_UNKNOWN_USER):
        cost = hashed.removeprefix(_UNKNOWN_USER)
        hashed = _unknown_user_hash(int(cost) if cost.isdigit() else 10)
    import bcrypt  # only a pqd with basic auth users gets here

    try:
        # Go's bcrypt refuses passwords beyond 72 bytes rather than truncating them; so does pqd,
        # whatever the installed bcrypt package would do.
        return len(password) <= BCRYPT_MAX_PASSWORD_BYTES and bcrypt.checkpw(password, hashed)
    except ValueError:  # a hash bcrypt cannot parse
        return False


class TokenBucket:
    """The toolkit's rate_limit (golang.org/x/time/rate): ``burst`` tokens, one per interval."""

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self._tokens = float(limit.burst)
        self._at = now

    def allow(self, now: float) -> bool:
        self._tokens = min(
            float(self.limit.burst), self._tokens + (now - self._at) / self.limit.interval
        )
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def unauthorized_response(web: LoadedWebConfig, *, keep_alive: bool, head_only: bool) -> bytes:
    return simple_response(
        HTTPStatus.UNAUTHORIZED,
        "",
        keep_alive=keep_alive,
        extra_headers=(*web.config.http.headers, ("WWW-Authenticate", _REALM)),
        head_only=head_only,
    )


class Admission:
    """Decides on the I/O thread whether a request is served: rate limit, then basic auth.

    A :class:`BcryptCheck` it hands out counts as pending until :meth:`check_done`; beyond
    ``max_pending_auth`` of them, further uncached logins get 503 at once.
    """

    def __init__(self, limits: ServerLimits) -> None:
        self.auth = BasicAuth(limits.auth_cache_size)
        self._max_pending = limits.max_pending_auth
        self._pending = 0
        self._bucket: TokenBucket | None = None

    def admit(
        self, head: RequestHead, web: LoadedWebConfig, *, keep_alive: bool, now: float
    ) -> bytes | tuple[str | None, BcryptCheck | None]:
        """The response refusing the request, or who is asking: ``(user, None)`` when known (or
        no login is needed), ``(None, check)`` when an auth worker must check the password."""
        head_only = head.method == "HEAD"
        headers = web.config.http.headers
        if not self._rate_allows(web.config.rate_limit, now):
            return simple_response(
                HTTPStatus.TOO_MANY_REQUESTS,
                "",
                keep_alive=keep_alive,
                extra_headers=headers,
                head_only=head_only,
            )
        if not web.config.basic_auth_users or head.path_info in AUTH_EXEMPT_PATHS:
            return None, None
        verdict = self.auth.cached_verdict(head.header("authorization"), web.config)
        if verdict is None:
            return unauthorized_response(web, keep_alive=keep_alive, head_only=head_only)
        if isinstance(verdict, str):
            return verdict, None
        if self._pending >= self._max_pending:
            return simple_response(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "too many logins being checked, retry",
                keep_alive=keep_alive,
                extra_headers=(*headers, ("Retry-After", "1")),
                head_only=head_only,
            )
        self._pending += 1
        return None, verdict

    def check_done(self) -> None:
        """A check handed out by :meth:`admit` has been run (or dropped)."""
        self._pending -= 1

    def _rate_allows(self, limit: RateLimit | None, now: float) -> bool:
        if limit is None:
            return True
        if self._bucket is None or self._bucket.limit != limit:
            self._bucket = TokenBucket(limit, now)
        return self._bucket.allow(now)
