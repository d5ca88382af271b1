"""URL decisions: which URLs get a token (``base_url``), and where plain http is allowed (loopback)."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from requests.utils import get_environ_proxies, select_proxy

__all__ = ["check_url", "is_loopback", "is_secure", "is_under", "origin", "proxy_for", "without_userinfo"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine: a literal loopback address, or ``localhost`` resolving only to one.

    No other name counts, whatever it resolves to now: ``x.localhost``, ``localhost.`` or
    ``ip6-localhost`` may be sent to DNS, and a name checked here is resolved again when the
    connection is made (DNS rebinding). ``localhost`` itself is answered by the hosts file.
    """
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if host.lower() != "localhost":
        return False
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return False
    return bool(addresses) and all(_literal_loopback(str(a)) for a in addresses)


def _literal_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def proxy_for(url: str, proxies: Mapping[str, str] | None, trust_env: bool = False) -> str | None:
    """The proxy URL that requests would send ``url`` through (``proxies``, and the environment if trusted)."""
    chosen = dict(get_environ_proxies(url)) if trust_env else {}
    chosen.update(proxies or {})
    return select_proxy(url, chosen) if chosen else None


def is_secure(url: str, proxies: Mapping[str, str] | None = None, trust_env: bool = False) -> bool:
    """Whether a token may travel to ``url``: https, or plain http to a loopback host over no other host.

    Through a proxy, plain http bytes go to the proxy: it must be loopback too.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() == "https":
        return True
    if not is_loopback(parts.hostname or ""):
        return False
    proxy = proxy_for(url, proxies, trust_env)
    if proxy is None:
        return True
    try:
        return is_loopback(urlsplit(proxy if "://" in proxy else "http://" + proxy).hostname or "")
    except ValueError:
        return False


def check_url(name: str, url: str, allow_http: bool) -> None:
    """Raise ValueError unless ``url`` (the ``name`` argument) is an absolute, allowed http(s) URL."""
    if not isinstance(url, str):
        raise ValueError(f"{name} must be a URL string")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an absolute http(s) URL, not {url!r}")
    if not allow_http and not is_secure(url):
        raise ValueError(
            f"{name} must use https (plain http is allowed for loopback hosts only, or with allow_insecure_http=True)"
        )


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
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


def without_userinfo(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``, for reprs and logs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()
