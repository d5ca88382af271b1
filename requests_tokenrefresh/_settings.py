"""The adapter's settings: its keyword arguments, checked once, each refusal a sentence.

:class:`Settings` is what :class:`~requests_tokenrefresh.TokenRefreshAdapter` keeps of its
arguments (and what a pickled adapter carries); the helpers turn the forms an argument may take
into the one the adapter reads.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from urllib3.util.retry import Retry

from ._client_auth import ClientAuth, ClientCert, check_client_auth, check_client_cert
from ._clock import Clock
from ._dpop import DPoPPolicy
from ._urls import check_url
from .exceptions import SessionExpiredError
from .storage import TokenStorage
from .tokens import Token

__all__ = [
    "DEFAULT_LEEWAY",
    "DEFAULT_REFRESH_STATUS_CODES",
    "DEFAULT_REFRESH_TIMEOUT",
    "GRANT_TYPES",
    "Refresher",
    "Settings",
    "scope_string",
    "status_codes",
    "without_statuses",
]

log: logging.Logger = logging.getLogger(__name__)

#: Seconds before expiry at which a proactive refresh starts (at most half the token lifetime).
DEFAULT_LEEWAY = 60.0
#: Response status codes that lead to one refresh and one replay.
DEFAULT_REFRESH_STATUS_CODES = (401,)
#: Seconds one refresh may take, retries included.
DEFAULT_REFRESH_TIMEOUT = 30.0
#: The ``grant_type`` values: refresh a user's token, or fetch one for the client itself.
GRANT_TYPES = ("refresh_token", "client_credentials")
#: A ``refresher=``: takes the current token and returns a :class:`~requests_tokenrefresh.Token` or a
#: token-response mapping.
# Nothing in it is quoted: typing.get_type_hints resolves a quoted name in the namespace of the
# module whose annotation names the alias, which may not have imported Mapping.
Refresher = Callable[[Token], Token | Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class Settings:
    storage: TokenStorage
    token_url: str | None
    issuer: str | None
    revocation_url: str | None
    grant_type: str
    refresher: Refresher | None
    client_id: str | None
    client_secret: str | None = dataclasses.field(repr=False)
    client_auth: ClientAuth | None
    scope: str | None
    leeway: float
    refresh_status_codes: frozenset[int]
    refresh_timeout: float
    on_refresh: Callable[[Token], object] | None
    on_session_expired: Callable[[SessionExpiredError], object] | None
    on_refresh_token_expiring: Callable[[Token], object] | None
    base_url: str | None
    allow_insecure_http: bool
    clock: Clock | Callable[[], float]
    dpop: DPoPPolicy | None = None
    client_cert: ClientCert | None = None

    def __post_init__(self) -> None:
        """Refuse what the adapter cannot work with, each with a sentence; seconds become floats."""
        if not isinstance(self.storage, TokenStorage):
            raise ValueError(f"storage must be a TokenStorage, not {type(self.storage).__name__}")
        if sum(x is not None for x in (self.token_url, self.issuer, self.refresher)) != 1:
            raise ValueError("give exactly one of token_url= or issuer= (OAuth 2.0) and refresher= (a callable)")
        if not isinstance(self.allow_insecure_http, bool):
            raise ValueError("allow_insecure_http must be True or False")
        for name in ("token_url", "issuer", "revocation_url"):
            url = getattr(self, name)
            if url is not None:
                check_url(name, url, self.allow_insecure_http)
        if self.base_url is not None:
            check_url("base_url", self.base_url, True)
        if self.grant_type not in GRANT_TYPES:
            raise ValueError(f"grant_type must be one of {GRANT_TYPES}, not {self.grant_type!r}")
        if self.grant_type == "client_credentials" and (self.refresher is not None or self.client_id is None):
            raise ValueError("grant_type='client_credentials' needs token_url= or issuer=, and client_id=")
        for name in ("client_id", "client_secret"):
            text = getattr(self, name)
            if text is not None and (not isinstance(text, str) or not text):
                raise ValueError(f"{name} must be a non-empty string or None")
        check_client_auth(self.client_auth, self.client_id, self.client_secret)
        if self.client_cert is not None:
            check_client_cert(self.client_cert)
        if self.dpop is not None and self.refresher is not None:
            raise ValueError("dpop needs token_url= or issuer=: a refresher= makes its own token requests")
        for name in ("leeway", "refresh_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a finite number of seconds >= 0, not {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("refresher", "on_refresh", "on_session_expired", "on_refresh_token_expiring", "clock"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise ValueError(f"{name} must be callable")


def status_codes(codes: Iterable[int]) -> frozenset[int]:
    try:
        result = frozenset(codes)
    except TypeError:
        raise ValueError(
            f"refresh_status_codes must be a collection of statuses, such as (401,), not {codes!r}"
        ) from None
    if not all(isinstance(c, int) and not isinstance(c, bool) and 400 <= c <= 599 for c in result):
        raise ValueError("refresh_status_codes must be HTTP error statuses (400-599)")
    return result


def scope_string(scope: str | Sequence[str] | AbstractSet[str] | None) -> str | None:
    """A scope string; a sequence or set of scopes is joined with spaces (RFC 6749 §3.3)."""
    if scope is None or isinstance(scope, str):
        return scope or None
    if isinstance(scope, (Sequence, AbstractSet)) and all(isinstance(s, str) and s for s in scope):
        return " ".join(sorted(scope) if isinstance(scope, AbstractSet) else scope) or None
    raise ValueError(f"scope must be a string or a list of strings, not {type(scope).__name__}")


def without_statuses(retries: Any, codes: frozenset[int]) -> Any:
    """``max_retries`` without the refresh statuses in its ``status_forcelist``."""
    if isinstance(retries, Retry) and retries.status_forcelist and codes & set(retries.status_forcelist):
        kept = [c for c in retries.status_forcelist if c not in codes]
        log.debug("max_retries: not retrying %s in urllib3; the adapter refreshes on them", sorted(codes))
        return retries.new(status_forcelist=kept)
    return retries
