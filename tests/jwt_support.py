"""The tests' JWT maker: HS256, with a key long enough that PyJWT does not warn (``filterwarnings = error``)."""

from __future__ import annotations

from typing import Any

import jwt

__all__ = ["KEY", "make_jwt"]

KEY = "unit-test-hs256-signing-key-of-at-least-32-bytes"


def make_jwt(**claims: Any) -> str:
    """Return a JWT of ``claims``, signed with :data:`KEY`."""
    return jwt.encode(claims, KEY, algorithm="HS256")
