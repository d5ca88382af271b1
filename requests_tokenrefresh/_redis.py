"""RedisStorage: one token record shared by every host that reaches one Redis (or Valkey).

What is stored
--------------
For a storage ``key`` (``"example-api:alice"``) there are four Redis keys, none with a TTL
except the lease:

``key``
    The token record, :meth:`Token.to_record` as compact JSON with sorted keys (the keyring's
    layout), so ``redis-cli GET key`` shows it. It holds the access and refresh tokens in clear.
``key:version``
    A counter bumped (INCR) by every write of the record, in the same Lua script as the write.
``key:lease``
    The refresh lease: a random owner token, ``SET NX PX`` (redis-py's :class:`redis.lock.Lock`),
    expiring after the lease time unless its owner releases it first (compare-and-delete).
``key:fence``
    A counter bumped once per lease taken: the lease's fencing number, for the in-flight marker
    and the logs.
``key:inflight``
    ``"<fence>:<version>"``, set by :meth:`_RedisLease.check` in the same Lua call that found the
    lease still ours, deleted by every write of the record. Found by a later holder while the
    record still has that version, it means: a refresh request with this record's refresh token
    may have reached the token endpoint and its answer was never stored.

The refresh protocol
--------------------
Rule 1: only the lease holder refreshes. Taking the lease, it notes the fence and the record's
        version (one MULTI); :meth:`~_RedisLease.load` reads the record and its version again.
Rule 2: right before the refresh request is sent, :meth:`~_RedisLease.check` asks the server (one
        Lua call) that the lease is still ours with enough time left and that the record was not
        written since it was read; if not, LeaseLostError and nothing is sent.
Rule 3: the rotated token is stored by a conditional write, atomic on the server: only if the
        record's version is still the one noted inside the lease. A holder that stalled past its
        lease can thus never overwrite a newer token. It is *not* also refused because the lease
        ran out while nobody wrote: its refresh was already sent and its answer holds the only
        refresh token the server still accepts; storing it is what keeps the session alive.
Rule 4: writes outside a lease (login, import, sign-out) are unconditional but bump the version,
        so a stale holder's conditional write fails after them too.

Every Redis error becomes a :class:`~requests_tokenrefresh.TokenStorageError` whose message names
the key and the server (never a password) and never contains a token.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
import urllib.parse
from typing import TYPE_CHECKING, Any, NoReturn

from ._redact import fingerprint
from .exceptions import LeaseLostError, TokenStorageError
from .storage import RefreshLease, TokenStorage, _describe
from .tokens import Token

if TYPE_CHECKING:
    import redis

__all__ = ["RedisStorage"]

log: logging.Logger = logging.getLogger(__name__)

#: Seconds a client built from a URL waits to connect, and for each answer.
DEFAULT_SOCKET_TIMEOUT = 5.0
#: Seconds :meth:`_RedisLease.check` wants left on the lease beyond what the caller asks for:
#: the time the refresh request takes to reach the token endpoint.
DEFAULT_LEASE_MARGIN = 1.0
#: Seconds between two attempts to take a lease another host holds.
LEASE_POLL_INTERVAL = 0.02

INSTALL_HELP = "RedisStorage needs redis-py: pip install requests-tokenrefresh[redis]"
_SCHEMES = ("redis", "rediss", "unix")

# KEYS: record, version, inflight. ARGV: the record. An unconditional write (Rule 4).
_SAVE = """
redis.call('set', KEYS[1], ARGV[1])
redis.call('del', KEYS[3])
return redis.call('incr', KEYS[2])
"""
# KEYS: record, version, inflight.
_DELETE = """
redis.call('del', KEYS[1], KEYS[3])
return redis.call('incr', KEYS[2])
"""
# KEYS: record, version, inflight. ARGV: record, version read. Returns the new version, or -1
# if the record was written since it was read (Rule 3).
_SAVE_IF = """
if tonumber(redis.call('get', KEYS[2]) or '0') ~= tonumber(ARGV[2]) then return -1 end
redis.call('set', KEYS[1], ARGV[1])
redis.call('del', KEYS[3])
return redis.call('incr', KEYS[2])
"""
# KEYS: lease, version, inflight. ARGV: owner, ms needed, version read, fence.
# Returns {status, ms left}: 0 ours (marker set), 1 not ours, 2 too little time, 3 record written.
_CHECK = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return {1, -1} end
local left = redis.call('pttl', KEYS[1])
if left < tonumber(ARGV[2]) then return {2, left} end
local version = redis.call('get', KEYS[2]) or '0'
if tonumber(version) ~= tonumber(ARGV[3]) then return {3, left} end
redis.call('set', KEYS[3], ARGV[4] .. ':' .. version)
return {0, left}
"""


def _import_redis() -> Any:
    try:
        import redis
        import redis.backoff
        import redis.exceptions
        import redis.lock
        import redis.retry
    except ImportError as exc:
        raise ImportError(INSTALL_HELP) from exc
    return redis


class RedisStorage(TokenStorage):
    """Keeps the token as one JSON record in Redis, shared by every host, with a refresh lease.

    Hosts that share one integration's tokens (web app replicas, Celery workers, pods) each mount
    an adapter over a ``RedisStorage`` with the same ``key``; the lease makes one of them refresh
    per expiry and the others adopt the stored result. Requests cost no Redis round trip: the
    adapter reads the record at start, inside the lease and after a 401 only.

    ::

        storage = RedisStorage("redis://127.0.0.1:6379/0", key="example-api:alice")
        adapter = TokenRefreshAdapter(storage, token_url="https://auth.example.com/token")

    Args:
        client_or_url: a ``redis.Redis`` client, or a ``redis://``, ``rediss://`` or ``unix://``
            URL for :meth:`redis.Redis.from_url` (connect and answer timeouts of
            ``DEFAULT_SOCKET_TIMEOUT`` seconds unless the URL sets others; one retry).
        key: the Redis key of the record; the lease and counters use ``key + ":lease"`` etc. With
            Redis Cluster, give it a hash tag (``"{example-api:alice}"``) so all are in one slot.
        lease_margin: seconds a lease must have left beyond what the adapter asks for before a
            refresh request is sent.

    Raises:
        ImportError: redis-py is not installed (``pip install requests-tokenrefresh[redis]``).
        ValueError: a bad URL, key or margin.
        TypeError: ``client_or_url`` is neither a string nor a redis client.

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        client_or_url: str | redis.Redis,
        key: str = "example-api:alice",
        *,
        lease_margin: float = DEFAULT_LEASE_MARGIN,
    ) -> None:
        module = _import_redis()
        if not isinstance(key, str) or not key.strip():
            raise ValueError("RedisStorage key must be a non-empty string")
        if isinstance(lease_margin, bool) or not isinstance(lease_margin, (int, float)):
            raise ValueError("lease_margin must be a number of seconds")
        if not math.isfinite(lease_margin) or lease_margin < 0:
            raise ValueError("lease_margin must be a finite number of seconds >= 0")
        self.key = key
        self.lease_margin: float = float(lease_margin)
        self._redis = module
        self._url: str | None = None
        if isinstance(client_or_url, str):
            self.location: str = _redacted(client_or_url)
            self._client = _from_url(module, client_or_url, self.location)
            self._url = client_or_url
        elif isinstance(client_or_url, module.Redis) or type(client_or_url).__name__ == "RedisCluster":
            self._client = client_or_url
            self.location = _describe_client(client_or_url)
        else:
            raise TypeError(
                f"RedisStorage takes a redis.Redis client or a redis:// URL, not {type(client_or_url).__name__}"
            )
        self._keys = {name: f"{key}:{name}" for name in ("version", "lease", "fence", "inflight")}
        client = self._client
        self._save_script = client.register_script(_SAVE)
        self._delete_script = client.register_script(_DELETE)
        self._save_if_script = client.register_script(_SAVE_IF)
        self._check_script = client.register_script(_CHECK)

    # -- TokenStorage --------------------------------------------------------------------------

    def load(self) -> Token | None:
        raw = self._call("read", lambda: self._client.get(self.key))
        return self._parse(raw)

    def save(self, token: Token) -> None:
        raw = self._encode(token)
        keys = [self.key, self._keys["version"], self._keys["inflight"]]
        version = self._call("write", lambda: self._save_script(keys=keys, args=[raw]), token)
        log.debug("saved token %s to Redis key %s (version %s)", fingerprint(token.access_token), self.key, version)

    def delete(self) -> None:
        keys = [self.key, self._keys["version"], self._keys["inflight"]]
        self._call("delete", lambda: self._delete_script(keys=keys))

    def refresh_lease(self, timeout: float) -> RefreshLease:
        """A lease on ``key:lease`` for ``timeout`` seconds, waited for at most ``2 * timeout`` seconds.

        Twice: a holder that crashed just before this call keeps the lease for up to ``timeout``,
        and the host that takes it next may hold it for a whole refresh.
        """
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise ValueError("the lease timeout must be a number of seconds")
        if not math.isfinite(timeout) or timeout <= 0:
            raise ValueError("the lease timeout must be a finite number of seconds > 0")
        return _RedisLease(self, float(timeout))

    # -- helpers -------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connections of a client this storage made from a URL (not of one it was given)."""
        if self._url is not None:
            self._client.close()

    def _encode(self, token: Token) -> str:
        if not isinstance(token, Token):
            raise TypeError(f"save() takes a Token, not {type(token).__name__}")
        try:
            return json.dumps(token.to_record(), separators=(",", ":"), sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise TokenStorageError(
                f"cannot write Redis key {self.key!r}: the token's extra data is not JSON ({type(exc).__name__})"
            ) from exc

    def _parse(self, raw: Any) -> Token | None:
        if raw is None:
            return None
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
            return Token.from_record(json.loads(text))
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError too
            raise TokenStorageError(
                f"the Redis key {self.key!r} at {self.location} does not hold a token record ({_describe(exc)}); "
                f"remove it with `redis-cli DEL {self.key}` and log in again"
            ) from exc

    def _call(self, action: str, op: Any, token: Token | None = None) -> Any:
        try:
            return op()
        except self._redis.exceptions.RedisError as exc:
            self._fail(action, exc, token)

    def _fail(self, action: str, exc: BaseException, token: Token | None = None) -> NoReturn:
        detail = str(exc)
        secrets_ = [token.access_token, token.refresh_token] if token else []
        if self._url is not None:
            secrets_.append(urllib.parse.urlsplit(self._url).password)
        for secret in secrets_:
            if secret:  # an error that echoes what it was given must not leak it
                detail = detail.replace(secret, "***")
        error = TokenStorageError(
            f"cannot {action} Redis key {self.key!r} at {self.location}: {type(exc).__name__}: {detail[:200]}"
        )
        if detail == str(exc):
            raise error from exc
        raise error  # without the cause: it quotes a secret

    def __repr__(self) -> str:
        return f"RedisStorage({self.location!r}, key={self.key!r})"

    def __getstate__(self) -> dict[str, Any]:
        if self._url is None:
            raise TypeError("a RedisStorage made from a client cannot be pickled; make it from a URL")
        return {"url": self._url, "key": self.key, "lease_margin": self.lease_margin}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["key"], lease_margin=state["lease_margin"])  # type: ignore[misc]


class _RedisLease(RefreshLease):
    """One refresh's lease: a redis-py Lock with an owner token, a fence and a version read."""

    storage: RedisStorage

    def __init__(self, storage: RedisStorage, timeout: float) -> None:
        super().__init__(storage)
        self.owner = secrets.token_hex(16)
        self.fence = 0
        self.version = 0  # of the record when the lease was taken, or as load() read it since
        # A waiter waits out two leases: one whose holder may have crashed just before this waiter
        # began (it runs out after ``timeout``), then the whole refresh of the host that takes it
        # next. Waiting one lease only, a waiter queued behind a crashed holder gave up just as the
        # lease ran out, while another host refreshed.
        self.wait = 2 * timeout
        self._lock = storage._redis.lock.Lock(
            storage._client,
            storage._keys["lease"],
            timeout=timeout,
            sleep=LEASE_POLL_INTERVAL,
            blocking_timeout=self.wait,
            thread_local=False,
        )

    def __enter__(self) -> RefreshLease:
        s = self.storage
        started = time.monotonic()
        if not s._call("take the refresh lease of", lambda: self._lock.acquire(token=self.owner)):
            raise TokenStorageError(
                f"timed out after {self.wait:.1f}s waiting for the refresh lease of Redis key {s.key!r} "
                f"at {s.location}: another host or process holds it and is refreshing the same token"
            )

        def fence() -> list[Any]:
            with s._client.pipeline(transaction=True) as pipe:
                pipe.incr(s._keys["fence"]).get(s._keys["version"])
                return list(pipe.execute())

        try:
            number, version = s._call("take the refresh lease of", fence)
        except BaseException:
            self._release()
            raise
        self.fence, self.version = int(number), int(version or 0)
        log.debug("took the refresh lease of %s (fence %d) after %.3fs", s.key, self.fence, time.monotonic() - started)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._release()

    def _release(self) -> None:
        s = self.storage
        try:
            self._lock.release()
        except s._redis.exceptions.LockNotOwnedError:
            log.warning("the refresh lease of %s (fence %s) had run out before it was released", s.key, self.fence)
        except s._redis.exceptions.RedisError as exc:  # it runs out by itself
            log.warning("could not release the refresh lease of %s: %s", s.key, type(exc).__name__)

    def load(self) -> Token | None:
        s = self.storage

        def read() -> list[Any]:
            with s._client.pipeline(transaction=True) as pipe:
                pipe.get(s.key).get(s._keys["version"]).get(s._keys["inflight"])
                return list(pipe.execute())

        raw, version, marker = s._call("read", read)
        self.version = int(version or 0)
        token = s._parse(raw)
        if marker is not None:
            text = marker.decode() if isinstance(marker, bytes) else str(marker)
            fence, _, marked_version = text.partition(":")
            if marked_version == str(self.version) and fence != str(self.fence):
                self.interrupted = True
                log.warning(
                    "the refresh lease of %s: holder %s may have sent refresh token %s and never stored the answer",
                    s.key,
                    fence,
                    fingerprint(token.refresh_token if token else None),
                )
        return token

    def check(self, seconds: float) -> None:
        s = self.storage
        need = math.ceil((seconds + s.lease_margin) * 1000)
        keys = [s._keys["lease"], s._keys["version"], s._keys["inflight"]]
        args = [self.owner, need, self.version, self.fence]
        status, left = s._call("check the refresh lease of", lambda: s._check_script(keys=keys, args=args))
        if status == 1:
            raise LeaseLostError(f"the refresh lease of Redis key {s.key!r} ran out: not refreshing")
        if status == 2:
            raise LeaseLostError(
                f"the refresh lease of Redis key {s.key!r} has {max(left, 0)} ms left, less than the {need} ms "
                "a refresh needs: not refreshing"
            )
        if status == 3:
            raise LeaseLostError(f"the Redis key {s.key!r} was written since it was read: not refreshing")

    def extend(self, seconds: float) -> None:
        s = self.storage
        try:
            self._lock.extend(seconds, replace_ttl=True)
        except s._redis.exceptions.LockError as exc:  # LockNotOwnedError included
            raise LeaseLostError(f"the refresh lease of Redis key {s.key!r} ran out: it cannot be extended") from exc
        except s._redis.exceptions.RedisError as exc:
            s._fail("extend the refresh lease of", exc)

    def save(self, token: Token) -> None:
        s = self.storage
        raw = s._encode(token)
        keys = [s.key, s._keys["version"], s._keys["inflight"]]
        version = s._call("write", lambda: s._save_if_script(keys=keys, args=[raw, self.version]), token)
        if version == -1:
            raise LeaseLostError(f"the Redis key {s.key!r} was written by another holder since it was read")
        self.version = int(version)
        log.debug("saved token %s to Redis key %s (version %s)", fingerprint(token.access_token), s.key, version)


def _from_url(module: Any, url: str, location: str) -> Any:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(f"a Redis URL starts with redis://, rediss:// or unix://, not {location!r}")
    retry = module.retry.Retry(module.backoff.ExponentialBackoff(cap=0.5, base=0.05), retries=1)
    try:
        return module.Redis.from_url(
            url,
            socket_timeout=DEFAULT_SOCKET_TIMEOUT,
            socket_connect_timeout=DEFAULT_SOCKET_TIMEOUT,
            retry=retry,
        )
    except (ValueError, TypeError) as exc:
        error = ValueError(f"not a usable Redis URL: {location!r} ({type(exc).__name__})")
    raise error  # outside the except clause: redis-py's message may quote the URL and its password


def _redacted(url: str) -> str:
    """``url`` with any password (in the authority or the query string) replaced by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, hostport = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{hostport}"
        query = urllib.parse.urlencode(
            [
                (k, "***" if k.lower() == "password" else v)
                for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            ],
            safe="*",
        )
        shown = f"{parts.scheme}://{netloc}{parts.path}"  # urlunsplit drops unix://'s empty authority
        return shown + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
    except ValueError:  # a malformed authority (a bad port ...): show no part of it
        return "<a malformed URL>"


def _describe_client(client: Any) -> str:
    try:
        kwargs = client.connection_pool.connection_kwargs
    except AttributeError:
        return f"<{type(client).__name__}>"
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
