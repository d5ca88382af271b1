"""requests-tokenrefresh: a requests transport adapter that keeps OAuth 2.0 / JWT access tokens fresh.

Mount :class:`TokenRefreshAdapter` on a :class:`requests.Session`; tokens live in a
:class:`TokenStorage` (the OS keyring by default through :class:`KeyringStorage`).
"""

from __future__ import annotations

import logging

from ._client_auth import ClientAssertion, PrivateKeyJWT
from ._dpop import DPoPKey
from .adapters import Refresher, TokenRefreshAdapter
from .exceptions import (
    EndpointError,
    InsecureTransportError,
    LeaseLostError,
    LoginError,
    RefreshError,
    RevocationError,
    SessionExpiredError,
    TokenRefreshError,
    TokenStorageError,
)
from .login import ProviderMetadata, discover, login_browser, login_device, logout
from .storage import (
    EncryptedStorage,
    EncryptionKeys,
    FileStorage,
    KeyringStorage,
    MemoryStorage,
    RedisStorage,
    RefreshLease,
    TokenStorage,
)
from .tokens import Token, TokenState

__version__ = "0.2.0"

__all__ = [
    "ClientAssertion",
    "DPoPKey",
    "EncryptedStorage",
    "EncryptionKeys",
    "EndpointError",
    "FileStorage",
    "InsecureTransportError",
    "KeyringStorage",
    "LeaseLostError",
    "LoginError",
    "MemoryStorage",
    "PrivateKeyJWT",
    "ProviderMetadata",
    "RedisStorage",
    "RefreshError",
    "RefreshLease",
    "Refresher",
    "RevocationError",
    "SessionExpiredError",
    "Token",
    "TokenRefreshAdapter",
    "TokenRefreshError",
    "TokenState",
    "TokenStorage",
    "TokenStorageError",
    "__version__",
    "discover",
    "login_browser",
    "login_device",
    "logout",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
