"""Where tokens live between requests and between runs.

:class:`TokenStorage` is the interface and :class:`RefreshLease` the right to refresh that one
holder has at a time. The backends, one module each:

* :class:`MemoryStorage` (``memory``): the token in this process, for tests and short scripts;
* :class:`KeyringStorage` (``keyring``): one JSON record in the OS keyring, so ``keyring get
  SERVICE USERNAME`` shows it; processes refresh under an OS file lock (``filelease``);
* :class:`FileStorage` (``file``): a 0600 JSON token file, for machines without a keyring;
* :class:`RedisStorage` (``redis``): one record shared by every host, with a fenced lease;
* :class:`EncryptedStorage` (``encrypted``): any of these, with the record encrypted (AES-256-GCM)
  under :class:`EncryptionKeys`.

Every backend failure becomes a :class:`~requests_tokenrefresh.TokenStorageError` with the
original error chained. Importing this package imports neither keyring, filelock, redis nor
cryptography.
"""

from __future__ import annotations

from .base import RefreshLease, TokenStorage
from .encrypted import EncryptedStorage, EncryptionKeys
from .file import FileStorage
from .keyring import KeyringStorage
from .memory import MemoryStorage
from .redis import RedisStorage

__all__ = [
    "EncryptedStorage",
    "EncryptionKeys",
    "FileStorage",
    "KeyringStorage",
    "MemoryStorage",
    "RedisStorage",
    "RefreshLease",
    "TokenStorage",
]
