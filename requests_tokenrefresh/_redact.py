"""Fingerprints: how logs, reprs and errors refer to a secret without showing it."""

from __future__ import annotations

import hashlib

__all__ = ["fingerprint"]


def fingerprint(secret: str | None) -> str:
    """Return a short, stable, non-reversible tag for ``secret`` (``"-"`` when there is none).

    Eight hex digits of SHA-256 tell two tokens apart in a log without revealing either.
    """
    if not secret:
        return "-"
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:8]
