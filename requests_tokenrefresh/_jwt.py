"""Read the ``exp`` claim of a JWT access token, without verifying its signature.

The adapter only needs to know *when* to refresh; the resource server verifies the token.
"""

from __future__ import annotations

import logging
import math

import jwt

__all__ = ["read_expiry"]

log = logging.getLogger(__name__)


def read_expiry(token: str) -> float | None:
    """Return the ``exp`` claim of ``token`` as epoch seconds, or None if it is not a JWT with one."""
    if token.count(".") != 2:
        return None  # opaque token: not a JWS compact serialisation
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        # The message of a PyJWT error can quote the token's parts; log only the class.
        log.debug("access token looks like a JWT but does not decode (%s)", type(exc).__name__)
        return None
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    try:
        seconds = float(exp)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None
