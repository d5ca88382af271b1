"""What the login flows share: their constants, the client, saving, and small helpers."""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from typing import Any, TextIO

from .._redact import fingerprint
from ..storage import TokenStorage
from ..tokens import Token, parse_number

__all__ = [
    "DEFAULT_DEVICE_INTERVAL",
    "DEFAULT_LOGIN_TIMEOUT",
    "DEVICE_CODE_GRANT",
    "refresh_token_expires_at",
]

log: logging.Logger = logging.getLogger(__name__)

#: Seconds a login waits for the user (the browser's redirect, or the device's approval).
DEFAULT_LOGIN_TIMEOUT = 300.0
#: Seconds between two device-flow polls when the server names no ``interval`` (RFC 8628 §3.2).
DEFAULT_DEVICE_INTERVAL = 5.0
#: The ``grant_type`` of a device-flow token request (RFC 8628 §3.4).
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
# A device code that names no lifetime is given this one.
_DEVICE_EXPIRY = 900.0
# Consecutive failed polls (network, 5xx) a device login rides out before it gives up.
_POLL_FAILURES = 3
# Files that only exist inside a container (Docker, Podman).
_CONTAINER_MARKERS = ("/.dockerenv", "/run/.containerenv")
# Seconds the login gives the browser launcher, most of which return at once, to say that no
# browser opened before it says it waits; the timeout runs meanwhile.
_LAUNCH_GRACE = 1.0
_NO_BROWSER = "(No browser could be opened: copy the address into one.)"
# Parameters each flow sets itself: extra_params must not replace them. scope has its own argument.
_BROWSER_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "scope",
    "dpop_jkt",
)
_DEVICE_PARAMS = ("client_id", "client_secret", "scope")


def _say(stream: TextIO, text: str) -> None:
    stream.write(text + "\n")
    stream.flush()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _seconds(value: Any) -> float | None:
    """A duration the server sent (``interval``, ``expires_in`` ...): a positive finite number, or None."""
    number = parse_number(value)
    return number if number is not None and number > 0 else None


def _extra(extra_params: Mapping[str, str] | None, reserved: tuple[str, ...]) -> dict[str, str]:
    """``extra_params`` as a dict, refusing any parameter the flow sets itself."""
    extra = dict(extra_params or {})
    for name in reserved:
        if name in extra:
            hint = "; pass scope= instead" if name == "scope" else ", which the login sets itself"
            raise ValueError(f"extra_params must not set {name}{hint}")
    return extra


def _save(storage: TokenStorage | None, token: Token) -> None:
    if storage is not None:
        storage.save(token)
        log.info("stored the new token %s", fingerprint(token.access_token))


def refresh_token_expires_at(token: Token) -> float | None:
    """When ``token``'s refresh token expires, if the server said (epoch seconds), else None.

    The same as :attr:`Token.refresh_token_expires_at
    <requests_tokenrefresh.Token.refresh_token_expires_at>`; for a record stored before that
    existed, it counts ``refresh_token_expires_in`` or ``refresh_expires_in`` in ``extra`` from
    ``obtained_at``.

    .. versionadded:: 0.2
    """
    if token.refresh_token_expires_at is not None:
        return token.refresh_token_expires_at
    if token.obtained_at is None:
        return None
    for name in ("refresh_token_expires_in", "refresh_expires_in"):
        seconds = _seconds(token.extra.get(name))
        if seconds is not None:
            return token.obtained_at + seconds
    return None
