"""Getting the first token, and giving it back: browser and device logins, revocation, logout.

:func:`login_browser` runs the authorization code grant with PKCE (RFC 7636) and a loopback
redirect (RFC 8252); :func:`login_device` the device authorization grant (RFC 8628), for
machines with no browser (:func:`should_use_device_flow`). Both return a :class:`~.Token` and,
given a ``storage``, save it where the adapter reads it. :func:`logout` revokes the stored tokens
(RFC 7009) and deletes the record. Endpoints come from the arguments or from the ``issuer``'s
metadata (:func:`discover`).

Nothing is stored when a login fails. No code, verifier, device code, token or client secret
appears in a message, a log record or a repr.
"""

from __future__ import annotations

from .._discovery import DEFAULT_TIMEOUT, ProviderMetadata, discover
from .._revocation import revoke_token
from ..exceptions import LoginError as LoginError  # documented with the flows that raise it
from ..exceptions import RevocationError as RevocationError
from .browser import login_browser
from .common import DEFAULT_DEVICE_INTERVAL, DEFAULT_LOGIN_TIMEOUT, DEVICE_CODE_GRANT, refresh_token_expires_at
from .device import login_device, should_use_device_flow
from .logout import logout

__all__ = [
    "DEFAULT_DEVICE_INTERVAL",
    "DEFAULT_LOGIN_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "DEVICE_CODE_GRANT",
    "ProviderMetadata",
    "discover",
    "login_browser",
    "login_device",
    "logout",
    "refresh_token_expires_at",
    "revoke_token",
    "should_use_device_flow",
]
