"""URL decisions: which URLs get a token (``base_url``), and where plain http is allowed (loopback)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

__all__ = ["check_url", "is_loopback", "is_secure", "is_under", "origin"]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine: 127.0.0.0/8, ::1 or a localhost name."""
    host = host.lower()
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_secure(url: str) -> bool:
    """Whether a token may travel to ``url``: https, or plain http to a loopback host."""
    parts = urlsplit(url)
    return parts.scheme.lower() == "https" or is_loopback(parts.hostname or "")


def check_url(name: str, url: str, allow_http: bool) -> None:
    """Raise ValueError unless ``url`` (the ``name`` argument) is an absolute, allowed http(s) URL."""
    if not isinstance(url, str):
        raise ValueError(f"{name} must be a URL string")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an absolute http(s) URL, not {url!r}")
    if not allow_http and not is_secure(url):
        raise ValueError(f"{name} must use https (plain http is allowed for loopback hosts only)")


def _default_port(parts: Any) -> int | None:
    return parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())


def is_under(url: str, base: str) -> bool:
    """Whether ``url`` is ``base`` or below it: same scheme, host and port; path on a segment boundary."""
    u, b = urlsplit(url), urlsplit(base)
    try:
        if (u.scheme.lower(), u.hostname, _default_port(u)) != (b.scheme.lower(), b.hostname, _default_port(b)):
            return False
    except ValueError:  # an invalid port
        return False
    if "@" in u.netloc:
        return False  # user info: not the same server, whatever the host part says
    path, prefix = _resolved(u.path), _resolved(b.path).rstrip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")


def _resolved(path: str) -> str:
    """The path a server sees once dot segments are removed (RFC 3986 §5.2.4), "%2e" included."""
    segments: list[str] = []
    parts = re.sub("%2e", ".", path, flags=re.IGNORECASE).split("/")
    for segment in parts[1:] if path.startswith("/") else parts:
        if segment == "..":
            if segments:
                segments.pop()
        elif segment != ".":
            segments.append(segment)
    if parts[-1] in (".", ".."):
        segments.append("")  # "/a/b/.." resolves to "/a/", a directory
    return "/" + "/".join(segments)


def origin(url: str) -> str:
    """The scheme, host and port of ``url``, for messages (no user info, path or query)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"
