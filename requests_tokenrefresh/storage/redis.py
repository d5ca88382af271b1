"""RedisStorage: one token record shared by every host that reaches one Redis (or Valkey).

What is stored
--------------
For a storage ``key`` (``"example-api:alice"``) there are five Redis keys, none with a TTL, so
that no ``volatile-*`` eviction policy can remove them (an ``allkeys-*`` policy is refused at
first use: it could evict the record or the lease):

``key``
    The token record, :meth:`Token.to_record` as compact JSON with sorted keys (the keyring's
    layout), so ``redis-cli GET key`` shows it. It holds the access and refresh tokens in clear.
``key:version``
    A counter bumped by every write of the record, in the same Lua script as the write.
``key:lease``
    The refresh lease: ``"<owner> <expiry>"``, a random owner token and the lease's end in the
    server's own clock (milliseconds of ``TIME``). Scripts take, check, extend and release it by
    comparing the owner and the server's time; the key itself never expires.
``key:fence``
    A counter bumped once per lease taken: the lease's fencing number, for the in-flight marker
    and the logs.
``key:inflight``
    ``"<fence>:<version>"``, set by :meth:`_RedisLease.check` in the same Lua call that found the
    lease still ours, deleted by every write of the record and by its holder when its refresh
    ended without a token to store (:meth:`_RedisLease.forget`). Found by a later holder while
    the record still has that version, it means: a refresh request with this record's refresh
    token may have reached the token endpoint and its answer was not stored (yet): its holder
    crashed or stalls.

The refresh protocol
--------------------
Rule 1: only the lease holder refreshes. Taking the lease (one Lua call) also bumps the fence
        and notes the record's version; :meth:`~_RedisLease.load` reads the record, its version
        and the in-flight marker again (one round trip).
Rule 2: right before the refresh request is sent, :meth:`~_RedisLease.check` asks the server (one
        Lua call) that the lease is still ours with enough time left and that the record was not
        written since it was read; if not, LeaseLostError and nothing is sent.
Rule 3: the rotated token is stored by a conditional write, atomic on the server: only if the
        record's version is still the one noted inside the lease (or lower: Rule 5). A holder that
        stalled past its lease can thus never overwrite a newer token. It is *not* also refused because the lease
        ran out while nobody wrote: its refresh was already sent and its answer holds the only
        refresh token the server still accepts; storing it is what keeps the session alive. For
        the same reason a save that failed may be retried after the lease was released
        (``fenced``).
Rule 4: writes outside a lease (login, import, sign-out) are unconditional but bump the version,
        so a stale holder's conditional write fails after them too.
Rule 5: the version never goes back. This storage remembers the highest version it has seen; a
        record older than that (or none, with the counter gone) means Redis lost writes -- a
        restart without persistence, FLUSHDB, a failover to a replica that lacked the last write
        -- not a sign-out (a sign-out bumps the version). The lease then says ``lost`` and the
        holder restores the token it holds in memory; every write sets the version above the
        highest one seen, so hosts that saw the lost versions adopt the restored record.
Rule 6: a write of the record counts once a replica has it. When the master has replicas, every
        write of the record (a save, a conditional save, a delete) is followed on the same
        connection by ``WAIT`` (``min_replicas``, ``replica_timeout``); a write no replica
        acknowledged in time raises :class:`~requests_tokenrefresh.TokenStorageError`: the
        adapter keeps the token in memory and saves it again (the write is on the master, and
        other hosts read it there), over its own write, or over the older record a replica
        promoted meanwhile holds (Rules 3 and 5). The in-flight marker of Rule 2 is waited for
        too, so that after a failover the next holder knows a refresh may have been sent; a
        marker no replica acknowledged is logged, not refused (a stalled replica would otherwise
        stop every refresh).

Every Redis error, Redis Cluster's included, becomes a
:class:`~requests_tokenrefresh.TokenStorageError` whose message names the key and the server
(never a password) and never contains a token.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
import urllib.parse
from typing import TYPE_CHECKING, Any, NoReturn

from .._clock import SYSTEM_CLOCK, Clock
from .._redact import fingerprint
from ..exceptions import LeaseLostError, TokenStorageError
from ..tokens import Token
from .base import RefreshLease, TokenStorage, describe

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
#: Seconds a write waits for its replicas' acknowledgement (``WAIT``) before it counts as failed.
DEFAULT_REPLICA_TIMEOUT = 0.5
#: Seconds the number of replicas the master reports is used before it is asked again (it is also
#: asked again after an error, a reconnection among them, and after a write no replica acknowledged).
REPLICAS_RECHECK = 10.0

INSTALL_HELP = "RedisStorage needs redis-py: pip install requests-tokenrefresh[redis]"
_SCHEMES = ("redis", "rediss", "unix")
#: The key suffixes besides the record itself.
_SUFFIXES = ("version", "lease", "fence", "inflight")

# The server's time in ms. A script that reads TIME and then writes must replicate its effects,
# not itself (the default from Redis 5 on; replicate_commands() is a no-op, or absent, on 7).
_NOW = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# The owner and expiry of a lease value "<owner> <expiry ms>"; an unparsable one has expiry nil.
_HELD = """
local function held(value)
  if not value then return nil, nil end
  local owner, expiry = string.match(value, '^(%S+) (%d+)$')
  return owner, tonumber(expiry)
end
"""
# KEYS: lease, fence, version. ARGV: owner, ms. Returns {1, fence, version} when taken, or
# {0, ms left, 0} while another owner holds it.
_ACQUIRE = (
    _NOW
    + _HELD
    + """
local value = redis.call('get', KEYS[1])
local owner, expiry = held(value)
if expiry and expiry > now then return {0, expiry - now, 0} end
redis.call('set', KEYS[1], ARGV[1] .. ' ' .. (now + tonumber(ARGV[2])))
return {1, redis.call('incr', KEYS[2]), tonumber(redis.call('get', KEYS[3]) or '0')}
"""
)
# KEYS: lease. ARGV: owner. Returns 1 released, 2 released but it had run out, 0 not ours.
_RELEASE = (
    _NOW
    + _HELD
    + """
local owner, expiry = held(redis.call('get', KEYS[1]))
if owner ~= ARGV[1] then return 0 end
redis.call('del', KEYS[1])
if expiry and expiry > now then return 1 end
return 2
"""
)
# KEYS: lease. ARGV: owner, ms. Returns 1 extended, 0 not ours or run out.
_EXTEND = (
    _NOW
    + _HELD
    + """
local owner, expiry = held(redis.call('get', KEYS[1]))
if owner ~= ARGV[1] or not expiry or expiry <= now then return 0 end
redis.call('set', KEYS[1], ARGV[1] .. ' ' .. (now + tonumber(ARGV[2])))
return 1
"""
)
# KEYS: lease, version, inflight. ARGV: owner, ms needed, version read, fence.
# Returns {status, ms left}: 0 ours (marker set), 1 not ours, 2 too little time, 3 record written.
_CHECK = (
    _NOW
    + _HELD
    + """
local owner, expiry = held(redis.call('get', KEYS[1]))
if owner ~= ARGV[1] or not expiry or expiry <= now then return {1, -1} end
local left = expiry - now
if left < tonumber(ARGV[2]) then return {2, left} end
local version = redis.call('get', KEYS[2]) or '0'
if tonumber(version) ~= tonumber(ARGV[3]) then return {3, left} end
redis.call('set', KEYS[3], ARGV[4] .. ':' .. version)
return {0, left}
"""
)
# KEYS: inflight. ARGV: the marker this lease set. Deletes it if it is still that one.
_FORGET = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# KEYS: record, version, inflight. ARGV: the record, the lowest new version (Rule 5). An
# unconditional write (Rule 4); returns the new version.
_SAVE = """
local version = math.max(tonumber(redis.call('get', KEYS[2]) or '0') + 1, tonumber(ARGV[2]))
redis.call('set', KEYS[1], ARGV[1])
redis.call('del', KEYS[3])
redis.call('set', KEYS[2], version)
return version
"""
# KEYS: record, version, inflight. ARGV: the lowest new version.
_DELETE = """
local version = math.max(tonumber(redis.call('get', KEYS[2]) or '0') + 1, tonumber(ARGV[1]))
redis.call('del', KEYS[1], KEYS[3])
redis.call('set', KEYS[2], version)
return version
"""
# KEYS: record, version, inflight. ARGV: record, the version this lease knows (read, or written by
# it), the lowest new version. Returns the new version, or -1 if the record was written since at a
# higher version (Rule 3). A lower one means that Redis lost writes (Rule 5): a restart without its
# data, or a failover to a replica that lacked them (this lease's own writes that no replica
# acknowledged among them, Rule 6); nothing newer is there, and the token is written back.
_SAVE_IF = """
local current = tonumber(redis.call('get', KEYS[2]) or '0')
if current > tonumber(ARGV[2]) then return -1 end
local version = math.max(current + 1, tonumber(ARGV[3]))
redis.call('set', KEYS[1], ARGV[1])
redis.call('del', KEYS[3])
redis.call('set', KEYS[2], version)
return version
"""
_SCRIPTS = {
    "acquire": _ACQUIRE,
    "release": _RELEASE,
    "extend": _EXTEND,
    "check": _CHECK,
    "forget": _FORGET,
    "save": _SAVE,
    "delete": _DELETE,
    "save_if": _SAVE_IF,
}
#: Eviction policies that may remove a key without a TTL: the record or the lease.
_EVICTING = ("allkeys-lru", "allkeys-lfu", "allkeys-random")


def _import_redis() -> Any:
    try:
        import redis
        import redis.backoff
        import redis.exceptions
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
        client_or_url: a ``redis.Redis`` client (one from a ``Sentinel``'s ``master_for`` too),
            a ``redis.cluster.RedisCluster``, or a ``redis://``, ``rediss://`` or ``unix://`` URL
            for :meth:`redis.Redis.from_url` (connect and answer timeouts of
            ``DEFAULT_SOCKET_TIMEOUT`` seconds unless the URL sets others; one retry).
        key: the Redis key of the record, one per API and user (there is no default: two programs
            that shared one would sign each other out); the lease and counters use
            ``key + ":lease"`` etc. With Redis Cluster, give it a hash tag
            (``"{example-api:alice}"``) so all are in one slot.
        lease_margin: seconds a lease must have left beyond what the adapter asks for before a
            refresh request is sent.
        min_replicas: how many replicas must acknowledge each write of the record (``WAIT``)
            before it counts as saved. ``None`` (the default): one if the master reports a
            connected replica (``INFO replication``, asked again every ``REPLICAS_RECHECK``
            seconds and after an error), none otherwise; ``0``: never wait. A write that is not
            acknowledged in time raises :class:`~requests_tokenrefresh.TokenStorageError`, and
            the adapter keeps the token in memory and saves it again.
        replica_timeout: seconds a write waits for that acknowledgement (at most half the
            client's ``socket_timeout``).
        clock: the monotonic time and sleep of the wait for the lease (a
            :class:`~requests_tokenrefresh.testing.FakeClock` in tests); the lease's own expiry is
            kept in the server's clock.

    Raises:
        ImportError: redis-py is not installed (``pip install requests-tokenrefresh[redis]``).
        ValueError: a bad URL, key or margin.
        TypeError: ``client_or_url`` is neither a string nor a redis client.
        TokenStorageError: a Redis Cluster client and a key without a hash tag: its keys would
            lie in several slots, which one script cannot touch.

    .. versionadded:: 0.2
    """

    _atomic_writes = True  # every write is one script: a reader never sees it half done

    def __init__(
        self,
        client_or_url: str | redis.Redis,
        key: str,
        *,
        lease_margin: float = DEFAULT_LEASE_MARGIN,
        min_replicas: int | None = None,
        replica_timeout: float = DEFAULT_REPLICA_TIMEOUT,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        module = _import_redis()
        if not isinstance(key, str) or not key.strip():
            raise ValueError("RedisStorage key must be a non-empty string")
        if isinstance(lease_margin, bool) or not isinstance(lease_margin, (int, float)):
            raise ValueError("lease_margin must be a number of seconds")
        if not math.isfinite(lease_margin) or lease_margin < 0:
            raise ValueError("lease_margin must be a finite number of seconds >= 0")
        if min_replicas is not None and (
            isinstance(min_replicas, bool) or not isinstance(min_replicas, int) or min_replicas < 0
        ):
            raise ValueError("min_replicas must be None (as many as the master has, at most one) or an int >= 0")
        if isinstance(replica_timeout, bool) or not isinstance(replica_timeout, (int, float)):
            raise ValueError("replica_timeout must be a number of seconds")
        if not math.isfinite(replica_timeout) or replica_timeout <= 0:
            raise ValueError("replica_timeout must be a finite number of seconds > 0")
        self.key = key
        self.lease_margin: float = float(lease_margin)
        self.min_replicas = min_replicas
        self.replica_timeout: float = float(replica_timeout)
        self._clock = clock
        self._redis = module
        # RedisClusterException (a key in no slot, no node reachable) is no RedisError.
        self._errors: tuple[type[BaseException], ...] = (
            module.exceptions.RedisError,
            getattr(module.exceptions, "RedisClusterException", module.exceptions.RedisError),
        )
        self._url: str | None = None
        cluster = getattr(getattr(module, "cluster", None), "RedisCluster", None)
        if isinstance(client_or_url, str):
            self.location: str = _redacted(client_or_url)
            self._client = _from_url(module, client_or_url, self.location)
            self._url = client_or_url
        elif isinstance(client_or_url, module.Redis) or (cluster is not None and isinstance(client_or_url, cluster)):
            self._client = client_or_url
            self.location = _describe_client(client_or_url, key)
        else:
            raise TypeError(
                f"RedisStorage takes a redis.Redis client or a redis:// URL, not {type(client_or_url).__name__}"
            )
        self._keys = {name: f"{key}:{name}" for name in _SUFFIXES}
        self._cluster = cluster is not None and isinstance(self._client, cluster)
        if self._cluster:
            _check_one_slot(self._client, key, self._keys.values())
        self._seen = 0  # the highest version of the record this storage has seen (Rule 5)
        self._seen_lock = threading.Lock()
        self._policy_checked = False
        # Rule 6: the master's online replicas as last asked (None: ask), and when.
        self._replicas: int | None = None
        self._replicas_at = 0.0
        self._replicas_warned = False
        self._scripts = {name: self._client.register_script(source) for name, source in _SCRIPTS.items()}

    # -- TokenStorage --------------------------------------------------------------------------

    def load(self) -> Token | None:
        raw, version, _ = self._read()
        self._saw(version)
        return self._parse(raw)

    def save(self, token: Token) -> None:
        raw = self._encode(token)
        version, missing = self._write("write", "save", [raw, self._seen + 1], token)
        self._saw(version)
        if missing:
            raise self._unreplicated("write", missing)
        log.debug("saved token %s to Redis key %s (version %s)", fingerprint(token.access_token), self.key, version)

    def delete(self) -> None:
        version, missing = self._write("delete", "delete", [self._seen + 1])
        self._saw(version)
        if missing:
            raise self._unreplicated("delete", missing)

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

    def _record_keys(self) -> list[str]:
        return [self.key, self._keys["version"], self._keys["inflight"]]

    def _read(self) -> tuple[Any, int, Any]:
        """(record, version, in-flight marker), read in one call.

        Three GETs in one pipeline, not a script (Redis counts a script's keys as written, and a
        user allowed only to read the record, ``%R~key``, could not load it) nor an MGET (which
        reads a key of another type as missing, where GET says WRONGTYPE).
        """

        def read() -> list[Any]:
            # The version first: a write landing between two GETs (other clients' commands may)
            # then leaves the record newer than the version read, and the check before a refresh
            # fails, rather than a spent refresh token passing it with a newer version.
            with self._client.pipeline(transaction=False) as pipe:
                for name in (self._keys["version"], self._keys["inflight"], self.key):
                    pipe.get(name)
                return list(pipe.execute())

        self._check_policy("read")
        version, marker, raw = self._call("read", read)
        return raw, int(version or 0), marker

    def _script_keys(self, script: str) -> list[str]:
        if script == "acquire":
            return [self._keys["lease"], self._keys["fence"], self._keys["version"]]
        if script in ("release", "extend"):
            return [self._keys["lease"]]
        if script == "forget":
            return [self._keys["inflight"]]
        if script == "check":
            return [self._keys["lease"], self._keys["version"], self._keys["inflight"]]
        return self._record_keys()

    def _run(self, action: str, script: str, args: list[Any], token: Token | None = None) -> Any:
        keys = self._script_keys(script)
        self._check_policy(action)
        return self._call(action, lambda: self._scripts[script](keys=keys, args=args), token)

    def _write(self, action: str, script: str, args: list[Any], token: Token | None = None) -> tuple[Any, int]:
        """Run a script that writes, then ``WAIT`` for the replicas Rule 6 asks for.

        Returns (the script's answer, how many replicas short of ``min_replicas`` the
        acknowledgement fell: 0 when the write counts). The script and ``WAIT`` go down one
        connection, in one pipeline: ``WAIT`` waits for the writes of its own connection only.
        """
        wanted = self._replicas_wanted(action)
        if not wanted:
            return self._run(action, script, args, token), 0
        keys = self._script_keys(script)

        def run() -> tuple[Any, int]:
            node = self._node()
            with node.pipeline(transaction=False) as pipe:
                self._scripts[script](keys=keys, args=args, client=pipe)
                pipe.execute_command("WAIT", wanted, _wait_ms(node, self.replica_timeout))
                answer, acknowledged = pipe.execute()
            return answer, int(acknowledged)

        self._check_policy(action)
        answer, acknowledged = self._call(action, run, token)
        if acknowledged < wanted:
            self._replicas = None  # ask again: the master may have let the replica go
        return answer, max(0, wanted - acknowledged)

    def _replicas_wanted(self, action: str) -> int:
        """How many replicas a write waits for (Rule 6): ``min_replicas``, or one if the master has any."""
        if self.min_replicas is not None:
            return self.min_replicas
        now = self._clock.monotonic()
        count = self._replicas
        if count is None or now - self._replicas_at >= REPLICAS_RECHECK:
            count = self._count_replicas(action)
            self._replicas, self._replicas_at = count, now
        return min(count, 1)

    def _count_replicas(self, action: str) -> int:
        try:
            info = self._node().info("replication")
        except self._redis.exceptions.ResponseError as exc:  # INFO denied (ACLs, managed Redis)
            if not self._replicas_warned:
                self._replicas_warned = True
                log.warning(
                    "cannot ask Redis at %s whether it has replicas (%s): writes do not wait for one; "
                    "with replicas, grant +info or set RedisStorage(min_replicas=1)",
                    self.location,
                    type(exc).__name__,
                )
            return 0
        except self._errors as exc:
            self._fail(action, exc)
        online = [v for k, v in dict(info).items() if _text(k).startswith("slave") and isinstance(v, dict)]
        return sum(1 for replica in online if _text(replica.get("state", "")) == "online")

    def _node(self) -> Any:
        """The client of the server that holds the record: the client, or a cluster's node for the key."""
        if self._cluster:
            return self._client.get_redis_connection(self._client.get_node_from_key(self.key))
        return self._client

    def _unreplicated(self, action: str, missing: int) -> TokenStorageError:
        wanted = self.min_replicas if self.min_replicas is not None else 1
        log.warning(
            "Redis at %s has the %s of key %s, but %d of %d replicas did not acknowledge it within %.2fs",
            self.location,
            action,
            self.key,
            missing,
            wanted,
            self.replica_timeout,
        )
        return TokenStorageError(
            f"cannot {action} Redis key {self.key!r} at {self.location}: the master has it, but {missing} of the "
            f"{wanted} replicas it needs did not acknowledge it within {self.replica_timeout:g}s (WAIT): "
            "a failover now would lose it"
        )

    def _saw(self, version: int) -> None:
        with self._seen_lock:
            self._seen = max(self._seen, int(version))

    def _check_policy(self, action: str) -> None:
        """Refuse, once, a server that may evict keys without a TTL (our record and lease)."""
        if self._policy_checked:
            return
        try:
            answer = self._client.config_get("maxmemory-policy")
        except self._redis.exceptions.ResponseError as exc:  # CONFIG renamed or denied (managed Redis, ACLs)
            log.warning(
                "cannot read the eviction policy of Redis at %s (%s): make sure it is noeviction or volatile-*, "
                "never allkeys-*, which could evict the token record or its lease",
                self.location,
                type(exc).__name__,
            )
            self._policy_checked = True
            return
        except self._errors as exc:
            self._fail(action, exc)
        policies = {_text(v) for k, v in _items(answer) if _text(k) == "maxmemory-policy"}
        evicting = sorted(policies & set(_EVICTING))
        if evicting:
            raise TokenStorageError(
                f"Redis at {self.location} has maxmemory-policy {evicting[0]}: it may evict the token record or "
                f"its refresh lease of key {self.key!r}, and then two hosts spend one refresh token; use a Redis "
                "whose policy is noeviction or volatile-* (CONFIG SET maxmemory-policy noeviction), or a Redis "
                "database that holds no cache"
            )
        self._policy_checked = True

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
                f"the Redis key {self.key!r} at {self.location} does not hold a token record ({describe(exc)}); "
                f"remove it with `redis-cli DEL {self.key}` and log in again"
            ) from exc

    def _call(self, action: str, op: Any, token: Token | None = None) -> Any:
        try:
            return op()
        except self._errors as exc:
            self._fail(action, exc, token)

    def _fail(self, action: str, exc: BaseException, token: Token | None = None) -> NoReturn:
        self._replicas = None  # a reconnection may follow, to another master: ask it (Rule 6)
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
        return {
            "url": self._url,
            "key": self.key,
            "lease_margin": self.lease_margin,
            "min_replicas": self.min_replicas,
            "replica_timeout": self.replica_timeout,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["url"],
            state["key"],
            lease_margin=state["lease_margin"],
            min_replicas=state.get("min_replicas"),
            replica_timeout=state.get("replica_timeout", DEFAULT_REPLICA_TIMEOUT),
        )


class _RedisLease(RefreshLease):
    """One refresh's lease: an owner token with an expiry in the server's clock, a fence and a version read."""

    storage: RedisStorage
    fenced = True  # save() is conditional on the version read (Rule 3)

    def __init__(self, storage: RedisStorage, timeout: float) -> None:
        super().__init__(storage)
        self.owner = secrets.token_hex(16)
        self.fence = 0
        self.version = 0  # of the record when the lease was taken, as load() read it, or as save() wrote it
        self.timeout = timeout
        # A waiter waits out two leases: one whose holder may have crashed just before this waiter
        # began (it runs out after ``timeout``), then the whole refresh of the host that takes it
        # next. Waiting one lease only, a waiter queued just after a holder crashed gave up just
        # as the lease ran out, while another host refreshed.
        self.wait = 2 * timeout

    def __enter__(self) -> RefreshLease:
        s = self.storage
        clock = s._clock
        started = clock.monotonic()
        ms = math.ceil(self.timeout * 1000)
        while True:
            taken, number, version = s._run("take the refresh lease of", "acquire", [self.owner, ms])
            if taken:
                break
            if clock.monotonic() - started + LEASE_POLL_INTERVAL > self.wait:
                raise TokenStorageError(
                    f"timed out after {self.wait:.1f}s waiting for the refresh lease of Redis key {s.key!r} "
                    f"at {s.location}: another host or process holds it and is refreshing the same token"
                )
            clock.sleep(LEASE_POLL_INTERVAL)
        self.fence, self.version = int(number), int(version)
        self.lost = self.version < s._seen
        s._saw(self.version)
        log.debug("took the refresh lease of %s (fence %d) after %.3fs", s.key, self.fence, clock.monotonic() - started)
        return self

    def __exit__(self, *exc_info: object) -> None:
        s = self.storage
        try:
            released = s._run("release the refresh lease of", "release", [self.owner])
        except TokenStorageError as exc:  # it runs out by itself
            log.warning("could not release the refresh lease of %s: %s", s.key, exc)
            return
        if released != 1:
            log.warning("the refresh lease of %s (fence %s) had run out before it was released", s.key, self.fence)

    def load(self) -> Token | None:
        s = self.storage
        raw, version, marker = s._read()
        self.version = version
        self.lost = version < s._seen  # Rule 5: Redis lost writes this host saw
        s._saw(version)
        token = s._parse(raw)
        self.interrupted = False
        if marker is not None:
            text = marker.decode() if isinstance(marker, bytes) else str(marker)
            fence, _, marked_version = text.partition(":")
            if marked_version == str(self.version) and fence != str(self.fence):
                self.interrupted = True
                log.warning(
                    "the refresh lease of %s: holder %s may have sent refresh token %s and not stored the answer",
                    s.key,
                    fence,
                    fingerprint(token.refresh_token if token else None),
                )
        return token

    def check(self, seconds: float) -> None:
        s = self.storage
        need = math.ceil((seconds + s.lease_margin) * 1000)
        args = [self.owner, need, self.version, self.fence]
        (status, left), missing = s._write("check the refresh lease of", "check", args)
        if status == 0 and missing:  # Rule 6: logged, not refused
            log.warning(
                "no replica of Redis at %s acknowledged the in-flight marker of %s within %.2fs: after a failover "
                "now, the next holder would not know that this refresh was sent",
                s.location,
                s.key,
                s.replica_timeout,
            )
        if status == 1:
            raise LeaseLostError(f"the refresh lease of Redis key {s.key!r} ran out: not refreshing")
        if status == 2:
            raise LeaseLostError(
                f"the refresh lease of Redis key {s.key!r} has {max(left, 0)} ms left, less than the {need} ms "
                "a refresh needs: not refreshing"
            )
        if status == 3:
            raise LeaseLostError(f"the Redis key {s.key!r} was written since it was read: not refreshing")

    def forget(self) -> None:
        s = self.storage
        s._run("clear the in-flight marker of", "forget", [f"{self.fence}:{self.version}"])

    def extend(self, seconds: float) -> None:
        s = self.storage
        if not s._run("extend the refresh lease of", "extend", [self.owner, math.ceil(seconds * 1000)]):
            raise LeaseLostError(f"the refresh lease of Redis key {s.key!r} ran out: it cannot be extended")

    def save(self, token: Token) -> None:
        s = self.storage
        raw = s._encode(token)
        version, missing = s._write("write", "save_if", [raw, self.version, s._seen + 1], token)
        if version == -1:
            raise LeaseLostError(f"the Redis key {s.key!r} was written by another holder since it was read")
        self.version = int(version)
        s._saw(self.version)
        if missing:  # on the master only; saved again over it, or over what a failover brings back (Rule 6)
            raise s._unreplicated("write", missing)
        log.debug("saved token %s to Redis key %s (version %s)", fingerprint(token.access_token), s.key, version)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _wait_ms(client: Any, seconds: float) -> int:
    """``seconds`` in ms for ``WAIT``, at most half the client's socket timeout: its answer must arrive."""
    pool = getattr(client, "connection_pool", None)
    socket_timeout = getattr(pool, "connection_kwargs", {}).get("socket_timeout")
    if isinstance(socket_timeout, (int, float)) and socket_timeout > 0:
        seconds = min(seconds, socket_timeout / 2)
    return max(1, math.ceil(seconds * 1000))


def _items(answer: Any) -> list[tuple[Any, Any]]:
    """The (name, value) pairs of a CONFIG GET answer: a dict, or a dict per node (a cluster)."""
    if not isinstance(answer, dict):
        return []
    pairs: list[tuple[Any, Any]] = []
    for name, value in answer.items():
        if isinstance(value, dict):
            pairs.extend(value.items())
        else:
            pairs.append((name, value))
    return pairs


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


def _check_one_slot(client: Any, key: str, others: Any) -> None:
    """A Redis Cluster runs a script on one node: the record and its four keys must share a slot."""
    if len({client.keyslot(name) for name in (key, *others)}) > 1:
        raise TokenStorageError(
            f"the Redis Cluster key {key!r} has no hash tag: its lease and counters would lie in "
            f"other slots; name it with one, such as {'{' + key + '}'!r}"
        )


def _describe_client(client: Any, key: str) -> str:
    """Where ``client`` reaches the record of ``key``: a node of a cluster, a Sentinel service, a server."""
    if hasattr(client, "get_node_from_key"):  # Redis Cluster: the node that holds the key's slot
        try:
            node = client.get_node_from_key(key)
            return f"redis+cluster://{node.host}:{node.port}"
        except Exception:  # only a description: the slot map may not be known yet
            return f"<{type(client).__name__}>"
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if pool is None or kwargs is None:
        return f"<{type(client).__name__}>"
    if getattr(pool, "service_name", None):  # Sentinel's master_for(): no host or port of its own
        return f"redis+sentinel://{pool.service_name}/{kwargs.get('db', 0)}"
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
