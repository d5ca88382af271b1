"""requests-tokenrefresh: a requests transport adapter that keeps OAuth 2.0 / JWT access tokens fresh.

Mount :class:`TokenRefreshAdapter` on a :class:`requests.Session`; tokens live in a
:class:`TokenStorage` (the OS keyring by default through :class:`KeyringStorage`).
"""

from __future__ import annotations

import logging

from ._filestorage import FileStorage
from ._grant import Refresher
from ._redis import RedisStorage
from .adapters import TokenRefreshAdapter
from .exceptions import (
    InsecureTransportError,
    LeaseLostError,
    RefreshError,
    SessionExpiredError,
    TokenRefreshError,
    TokenStorageError,
)
from .storage import KeyringStorage, MemoryStorage, RefreshLease, TokenStorage
from .tokens import Token, TokenState

__version__ = "0.1.0"

__all__ = [
    "FileStorage",
    "InsecureTransportError",
    "KeyringStorage",
    "LeaseLostError",
    "MemoryStorage",
    "RedisStorage",
    "RefreshError",
    "RefreshLease",
    "Refresher",
    "SessionExpiredError",
    "Token",
    "TokenRefreshAdapter",
    "TokenRefreshError",
    "TokenState",
    "TokenStorage",
    "TokenStorageError",
    "__version__",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
