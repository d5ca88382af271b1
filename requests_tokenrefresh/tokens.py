"""The token value object and its freshness states.

A :class:`Token` is immutable. A refresh makes a new one from the token response and the
previous token (:meth:`Token.from_response`), so a refresh token or user data the response does
not repeat survives the refresh. :meth:`Token.to_record` / :meth:`Token.from_record` are the
one JSON layout every storage backend writes.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import math
import re
import time
import types
from collections.abc import Mapping
from typing import Any

from ._dpop import DPoPKey
from ._jwt import read_times
from ._redact import fingerprint

__all__ = ["RECORD_VERSION", "REFRESH_TOKEN_EXPIRES_AT", "Token", "TokenState", "parse_number"]

log: logging.Logger = logging.getLogger(__name__)

# Expiry times past this (year 9999) are nonsense; they are treated as unknown.
_LATEST = 253402300799.0

#: Version of the stored JSON layout (the ``"version"`` field of :meth:`Token.to_record`).
RECORD_VERSION = 1
#: The ``extra`` key under which a refresh token's expiry (epoch seconds) is kept.
REFRESH_TOKEN_EXPIRES_AT = "refresh_token_expires_at"
# Token response fields that give the refresh token's lifetime in seconds.
_REFRESH_LIFETIMES = ("refresh_token_expires_in", "refresh_expires_in")

# Fields of a token response / record that Token models; everything else is extra data.
_KNOWN = frozenset(
    {
        "access_token",
        "refresh_token",
        "token_type",
        "expires_in",
        "expires_at",
        "obtained_at",
        "scope",
        "dpop_key",
        "dpop_jkt",
    }
)
# A JWK SHA-256 thumbprint: base64url of 32 bytes, without padding.
_JKT = re.compile(r"[A-Za-z0-9_-]{43}")
# Authorization schemes as their RFCs spell them, by their lower case.
_SCHEMES = {"bearer": "Bearer", "dpop": "DPoP"}


class TokenState(enum.Enum):
    """How usable a token is at a given moment (google-auth's words).

    .. versionadded:: 0.1
    """

    #: Valid and outside the refresh window; use it.
    FRESH = "fresh"
    #: Still valid but inside the refresh window; refresh soon, meanwhile keep using it.
    STALE = "stale"
    #: Expired; it must be refreshed before it is used.
    INVALID = "invalid"


@dataclasses.dataclass(frozen=True, repr=False)
class Token:
    """An access token with what is needed to refresh it.

    Attributes:
        access_token: the bearer credential sent in ``Authorization``.
        refresh_token: the credential for the refresh grant, or None.
        token_type: the ``Authorization`` scheme, ``"Bearer"`` by default.
        expires_at: epoch seconds at which the access token expires, or None if unknown.
        scope: the granted scope string, or None.
        obtained_at: epoch seconds at which the token was requested, or None; with
            ``expires_at`` it gives the lifetime that scales the refresh window.
        extra: every other field of the token response or stored record (user data, an
            ``id_token`` ...), read-only.
        dpop_key: the :class:`~requests_tokenrefresh.DPoPKey` the token is bound to (``token_type``
            ``"DPoP"``, or a ``Bearer`` answer to a proof: a downgrade). A key the library made is
            kept in the record, so that every process sharing the record signs with it; a key the
            user holds is not (a token loaded from a record then has None here, and ``dpop_jkt``).

            .. versionadded:: 0.2
        dpop_jkt: the thumbprint (RFC 7638) of that key, set from ``dpop_key`` when it is given,
            and kept in the record (no secret) where the key is not: a token with a ``dpop_jkt``
            is sent, and refreshed, only with a proof of that key.

            .. versionadded:: 0.2

    The repr shows fingerprints, never a secret.

    .. versionadded:: 0.1
    """

    access_token: str
    refresh_token: str | None = None
    token_type: str = "Bearer"
    expires_at: float | None = None
    scope: str | None = None
    obtained_at: float | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    dpop_key: DPoPKey | None = None
    dpop_jkt: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.access_token, str) or not self.access_token:
            raise ValueError("access_token must be a non-empty string")
        if self.refresh_token is not None and (not isinstance(self.refresh_token, str) or not self.refresh_token):
            raise ValueError("refresh_token must be a non-empty string or None")
        if not isinstance(self.token_type, str) or not self.token_type:
            raise ValueError("token_type must be a non-empty string")
        # Checked here, not when a request fails: requests' error for a bad header quotes it whole.
        for name in ("access_token", "token_type"):
            where = _bad_character(getattr(self, name), _HEADER_SAFE)
            if where is not None:
                raise ValueError(
                    f"{name} has a character not allowed in an HTTP header at position {where} "
                    "(a newline or space from a file read without strip()?)"
                )
        where = None if self.refresh_token is None else _bad_character(self.refresh_token, _VSCHAR)
        if where is not None or (self.refresh_token and self.refresh_token != self.refresh_token.strip()):
            raise ValueError(
                "refresh_token has a control character or surrounding white space"
                + (f" at position {where}" if where is not None else "")
            )
        for name in ("expires_at", "obtained_at"):
            value = getattr(self, name)
            if value is not None:
                number = parse_number(value)
                if number is None or not 0 <= number <= _LATEST:
                    raise ValueError(f"{name} must be epoch seconds (a finite number up to year 9999) or None")
                object.__setattr__(self, name, number)
        if self.scope is not None and not isinstance(self.scope, str):
            raise ValueError("scope must be a string or None")
        if not isinstance(self.extra, Mapping):
            raise ValueError("extra must be a mapping")
        if self.dpop_key is not None and not isinstance(self.dpop_key, DPoPKey):
            raise ValueError("dpop_key must be a DPoPKey or None")
        if self.dpop_jkt is not None and (not isinstance(self.dpop_jkt, str) or not _JKT.fullmatch(self.dpop_jkt)):
            raise ValueError("dpop_jkt must be a JWK SHA-256 thumbprint (43 base64url characters) or None")
        if self.dpop_key is not None:
            if self.dpop_jkt is not None and self.dpop_jkt != self.dpop_key.thumbprint:
                raise ValueError("dpop_jkt is not the thumbprint of dpop_key")
            object.__setattr__(self, "dpop_jkt", self.dpop_key.thumbprint)
        object.__setattr__(self, "extra", types.MappingProxyType(dict(self.extra)))

    @classmethod
    def from_response(
        cls,
        response: Mapping[str, Any],
        previous: Token | None = None,
        *,
        now: float | None = None,
    ) -> Token:
        """Build a token from an OAuth 2.0 token response (RFC 6749 §5.1) or a stored record.

        Expiry comes from ``expires_at``, else ``expires_in``, else the JWT ``exp`` claim of
        the access token, else it is unknown (the adapter then relies on 401 responses).

        Args:
            response: the decoded JSON object. ``access_token`` is required.
            previous: the token this one replaces. Its refresh token, scope and extra data are
                kept where ``response`` does not carry new ones; a new refresh token does not
                inherit the old one's expiry (:attr:`refresh_token_expires_at`).
            now: epoch seconds at which the request for this response was *sent*;
                ``expires_in`` counts from there. Defaults to the current time.

        Raises:
            ValueError: ``response`` is not a token response; the message names the field.
        """
        if not isinstance(response, Mapping):
            raise ValueError(f"a token response must be a JSON object, not {type(response).__name__}")
        access = response.get("access_token")
        if not isinstance(access, str) or not access:
            raise ValueError("the token response has no access_token")
        now = time.time() if now is None else now
        refresh = response.get("refresh_token") or (previous.refresh_token if previous else None)
        scope = response.get("scope", previous.scope if previous else None)
        if isinstance(scope, list):  # some servers send a JSON array
            scope = " ".join(str(s) for s in scope)
        token_type = response.get("token_type") or "Bearer"
        if isinstance(token_type, str) and token_type.lower() in _SCHEMES:
            token_type = _SCHEMES[token_type.lower()]  # RFC 6750 spells "Bearer", RFC 9449 "DPoP"; servers vary
        expires_at, obtained_at = _expiry(response, access, now)
        extra = dict(previous.extra) if previous else {}
        if previous is not None and refresh != previous.refresh_token:
            # A new refresh token has a life of its own: what the server said of the old one's
            # (its end, or a lifetime counted from obtained_at) says nothing of the new one's.
            for name in (REFRESH_TOKEN_EXPIRES_AT, *_REFRESH_LIFETIMES):
                extra.pop(name, None)
        extra.update((k, v) for k, v in response.items() if k not in _KNOWN and k != "version")
        if isinstance(response.get("extra"), Mapping):  # a stored record nests its extra data
            del extra["extra"]
            extra.update(response["extra"])
        for name in _REFRESH_LIFETIMES:
            lifetime = parse_number(response.get(name))
            if lifetime is not None and lifetime > 0 and now + lifetime < _LATEST:
                # Relative to this response: kept as a time, so a later refresh whose answer
                # does not repeat it (obtained_at moves on) does not stretch it.
                extra[REFRESH_TOKEN_EXPIRES_AT] = now + lifetime
                break
        return cls(
            access_token=access,
            refresh_token=refresh,
            token_type=token_type,
            expires_at=expires_at,
            scope=scope,
            obtained_at=obtained_at,
            extra=extra,
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Token:
        """Rebuild a token from :meth:`to_record` output.

        Raises:
            ValueError: the record is not one this version can read.
        """
        if not isinstance(record, Mapping):
            raise ValueError(f"a token record must be a JSON object, not {type(record).__name__}")
        version = record.get("version")
        if version != RECORD_VERSION:
            raise ValueError(f"unsupported token record version {version!r} (expected {RECORD_VERSION})")
        extra = record.get("extra", {})
        if not isinstance(extra, Mapping):
            raise ValueError("the token record's extra field must be an object")
        times = {}
        for name in ("expires_at", "obtained_at"):
            value = record.get(name)
            number = None if value is None else parse_number(value)
            if value is not None and (number is None or not 0 <= number <= _LATEST):
                # Written by an older version or by hand (milliseconds?): unknown, not unreadable.
                log.warning("ignoring the stored %s: not epoch seconds up to year 9999", name)
                number = None
            times[name] = number
        key = None
        if record.get("dpop_key") is not None:
            key = DPoPKey.from_jwk(record["dpop_key"])
        return cls(
            access_token=record.get("access_token"),  # type: ignore[arg-type]  # checked in __post_init__
            refresh_token=record.get("refresh_token"),
            token_type=record.get("token_type") or "Bearer",
            scope=record.get("scope"),
            extra=extra,
            dpop_key=key,
            dpop_jkt=record.get("dpop_jkt"),
            **times,
        )

    def to_record(self) -> dict[str, Any]:
        """Return the JSON-ready record that storage backends save (secrets included, a DPoP key too)."""
        record = {
            "version": RECORD_VERSION,
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": self.token_type,
            "expires_at": self.expires_at,
            "obtained_at": self.obtained_at,
            "scope": self.scope,
            "extra": dict(self.extra),
        }
        if self.dpop_jkt is not None:
            record["dpop_jkt"] = self.dpop_jkt
        if self.dpop_key is not None and self.dpop_key.storable:
            record["dpop_key"] = self.dpop_key.to_jwk()
        return record

    def refresh_window(self, leeway: float) -> float:
        """Seconds before expiry at which a refresh starts: ``leeway``, at most half the lifetime."""
        if self.expires_at is not None and self.obtained_at is not None:
            return max(0.0, min(leeway, (self.expires_at - self.obtained_at) / 2))
        return leeway

    def state(self, now: float, leeway: float) -> TokenState:
        """Return how usable this token is at ``now`` given a refresh window of ``leeway``."""
        if self.expires_at is None:
            return TokenState.FRESH
        remaining = self.expires_at - now
        if remaining <= 0:
            return TokenState.INVALID
        if remaining <= self.refresh_window(leeway):
            return TokenState.STALE
        return TokenState.FRESH

    @property
    def refresh_token_expires_at(self) -> float | None:
        """When the refresh token expires (epoch seconds), if the server said; else None.

        Servers that say send ``refresh_token_expires_in`` (GitHub, Microsoft) or
        ``refresh_expires_in`` (Keycloak) with the token; :meth:`from_response` keeps it as a time
        in ``extra["refresh_token_expires_at"]``.

        .. versionadded:: 0.2
        """
        value = parse_number(self.extra.get(REFRESH_TOKEN_EXPIRES_AT))
        return value if value is not None and 0 <= value <= _LATEST else None

    @functools.cached_property
    def authorization(self) -> str:
        """The ``Authorization`` header value (made once: it is read on every request)."""
        return f"{self.token_type} {self.access_token}"

    def __repr__(self) -> str:
        return (
            f"Token(token_type={self.token_type!r}, access_token=<{fingerprint(self.access_token)}>, "
            f"refresh_token=<{fingerprint(self.refresh_token)}>, expires_at={self.expires_at!r}, "
            f"scope={self.scope!r}, extra_keys={sorted(self.extra)!r}"
            + (f", dpop_jkt={self.dpop_jkt!r})" if self.dpop_jkt is not None else ")")
        )

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("Token objects are not pickled: they hold secrets; store them with a TokenStorage")

    def __copy__(self) -> Token:
        return self  # immutable

    def __deepcopy__(self, memo: dict[int, Any]) -> Token:
        return self


def parse_number(value: Any) -> float | None:
    """Return ``value`` as a finite float, accepting numeric strings; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range
            return None
        return number if math.isfinite(number) else None
    return None


def _expiry(response: Mapping[str, Any], access: str, now: float) -> tuple[float | None, float | None]:
    """Return ``(expires_at, obtained_at)`` for a token response."""
    # A bad expiry field never rejects the response: that would throw away a rotated refresh
    # token. It is ignored, and the JWT's exp (or a 401) tells when to refresh.
    if response.get("expires_at") is not None:
        expires_at = parse_number(response["expires_at"])
        obtained = response.get("obtained_at")
        obtained_at = parse_number(obtained) if obtained is not None else None
        if expires_at is not None and 0 <= expires_at <= _LATEST:
            if obtained_at is not None and not 0 <= obtained_at <= _LATEST:
                obtained_at = None
            return expires_at, obtained_at
        log.warning("ignoring expires_at from the token response: not epoch seconds up to year 9999")
    elif response.get("expires_in") is not None:
        expires_in = parse_number(response["expires_in"])
        if expires_in is not None and expires_in > 0 and now + expires_in < _LATEST:
            return now + expires_in, now
        log.warning("ignoring expires_in from the token response: not a positive number of seconds")
    exp, iat = read_times(access)
    if exp is None or not 0 <= exp <= _LATEST:
        return None, None
    if iat is not None and exp > iat:
        # The lifetime the server granted, counted on our clock: a clock ahead of or behind the
        # server's then costs nothing (exp alone would be read in the wrong time base).
        return now + (exp - iat), now
    if exp <= now:
        # Just issued, yet expired by our clock: our clock is ahead of the server's. Rely on 401.
        log.warning("the new access token's exp is already past by this machine's clock; expiry unknown")
        return None, None
    return exp, now


# What may stand in an Authorization header value: visible ASCII (RFC 6750 b64token is narrower).
_HEADER_SAFE = frozenset(chr(c) for c in range(0x21, 0x7F))
# RFC 6749 Appendix A VSCHAR, plus space (a refresh token goes in a form body).
_VSCHAR = frozenset(chr(c) for c in range(0x20, 0x7F))


def _bad_character(value: str, allowed: frozenset[str]) -> int | None:
    """The position of the first character of ``value`` outside ``allowed``, or None."""
    # Both sets are printable ASCII (one without space): str's own checks clear a good value in
    # C, 60 times faster than the loop below for a 1-kB JWT, which every stored record is read with.
    if value.isascii() and value.isprintable() and (" " in allowed or " " not in value):
        return None
    for position, char in enumerate(value):
        if char not in allowed:
            return position
    return None
