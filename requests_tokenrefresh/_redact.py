"""Fingerprints and scrubbed errors: how logs, reprs and errors refer to a secret without showing it."""

from __future__ import annotations

import hashlib

import requests

__all__ = ["fingerprint", "without_request"]


def fingerprint(secret: str | None) -> str:
    """Return a short, stable, non-reversible tag for ``secret`` (``"-"`` when there is none).

    Eight hex digits of SHA-256 tell two tokens apart in a log without revealing either.
    """
    if not secret:
        return "-"
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:8]


def without_request(exc: requests.RequestException) -> requests.RequestException:
    """The same kind of error as ``exc`` without its ``request`` and ``response``.

    A requests error keeps the request it failed on; for a refresh that request holds the refresh
    token (body) and the client secret (header).
    """
    try:
        clean = type(exc)(*exc.args)
    except Exception:  # a subclass with another constructor
        clean = requests.ConnectionError(str(exc))
    clean.request = clean.response = None
    return clean
