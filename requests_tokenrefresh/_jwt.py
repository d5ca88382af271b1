"""Read the ``exp`` claim of a JWT access token, without verifying its signature.

The adapter only needs to know *when* to refresh; the resource server verifies the token.
"""

from __future__ import annotations

import logging
import math

__all__ = ["read_expiry", "read_times"]

log: logging.Logger = logging.getLogger(__name__)


def read_expiry(token: str) -> float | None:
    """Return the ``exp`` claim of ``token`` as epoch seconds, or None if it is not a JWT with one."""
    return read_times(token)[0]


def read_times(token: str) -> tuple[float | None, float | None]:
    """Return the ``exp`` and ``iat`` claims of ``token`` as epoch seconds (None where absent or bad)."""
    if token.count(".") != 2:
        return None, None  # opaque token: not a JWS compact serialisation
    import jwt  # here, not at import time: PyJWT is half the cost of importing this package

    try:
        claims = jwt.decode(token, options={"verify_signature": False, "verify_iat": False})
    except jwt.PyJWTError as exc:
        # The message of a PyJWT error can quote the token's parts; log only the class.
        log.debug("access token looks like a JWT but does not decode (%s)", type(exc).__name__)
        return None, None
    return _seconds(claims.get("exp")), _seconds(claims.get("iat"))


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None
