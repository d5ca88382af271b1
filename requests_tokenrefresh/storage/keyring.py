"""KeyringStorage: one JSON record in the OS keyring, so that ``keyring get SERVICE USERNAME`` shows it.

Every backend failure becomes a :class:`~requests_tokenrefresh.TokenStorageError` with the
original error chained; processes on one machine refresh under an OS file lock
(:mod:`.filelease`). keyring itself is imported where it is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

from .._redact import fingerprint
from ..exceptions import TokenStorageError
from ..tokens import Token
from .base import NEWER_RECORD_ADVICE, RefreshLease, TokenStorage, describe, record_kind
from .filelease import FileLease, default_lock_dir, load_filelock

__all__ = ["NO_KEYRING_HELP", "WINDOWS_CREDENTIAL_BYTES", "KeyringStorage"]

log: logging.Logger = logging.getLogger(__name__)

#: Bytes one Windows Credential Manager entry holds (CRED_MAX_CREDENTIAL_BLOB_SIZE).
WINDOWS_CREDENTIAL_BYTES = 2560

NO_KEYRING_HELP = (
    "no usable keyring backend: start and unlock a Secret Service (GNOME Keyring, KWallet) or "
    "macOS/Windows keychain; or install an alternative backend such as keyrings.alt or "
    "keyrings.cryptfile and select it with PYTHON_KEYRING_BACKEND; or use MemoryStorage()"
)


class KeyringStorage(TokenStorage):
    """Keeps the token as one JSON record in the OS keyring, under ``service`` and ``username``.

    The record is :meth:`Token.to_record` as compact JSON, so ``keyring get SERVICE USERNAME``
    prints it. The keyring backend is the one ``keyring`` selects (``keyring.get_keyring()``) at
    each call, unless ``backend`` is given.

    Args:
        service: the keyring service name, for example the API's name.
        username: the keyring user name, for example the signed-in account.
        backend: a ``keyring.backend.KeyringBackend`` to use instead of the selected one.
        lock_dir: where the inter-process refresh lock file goes; by default the user cache
            directory (``~/.cache/requests-tokenrefresh/locks`` on Linux).
        max_record_bytes: refuse to save a record larger than this (UTF-8 bytes). The Windows
            Credential Manager's limit (2,560 bytes of UTF-16) applies by itself.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        service: str,
        username: str,
        *,
        backend: Any = None,
        lock_dir: str | os.PathLike[str] | None = None,
        max_record_bytes: int | None = None,
    ) -> None:
        for name, value in (("service", service), ("username", username)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"KeyringStorage {name} must be a non-empty string")
        self.service = service
        self.username = username
        self.backend = backend
        self.max_record_bytes = max_record_bytes
        directory = os.fspath(lock_dir) if lock_dir is not None else default_lock_dir()
        entry = hashlib.sha256(f"{service}\0{username}".encode()).hexdigest()[:24]
        #: The inter-process refresh lock file (it holds no secret; the OS frees it if its holder dies).
        self.lock_path: str = os.path.join(directory, f"{entry}.lock")
        load_filelock()

    def refresh_lease(self, timeout: float) -> RefreshLease:
        """An OS file lock (``flock`` / ``LockFileEx``) on :attr:`lock_path`, released if the holder dies."""
        return FileLease(self, self.lock_path, timeout)

    def _keyring(self) -> Any:
        import keyring

        return self.backend if self.backend is not None else keyring.get_keyring()

    def load(self) -> Token | None:
        raw = self._call("read", lambda kr: kr.get_password(self.service, self.username))
        if raw is None:
            return None
        record: Any = None
        try:
            record = json.loads(raw)
            return Token.from_record(record)
        except (ValueError, RecursionError) as exc:  # json.JSONDecodeError is a ValueError too
            raise TokenStorageError(
                f"the keyring entry {self.service!r}/{self.username!r} does not hold a token record "
                f"({describe(exc)}); {self._advice(record)}"
            ) from exc

    def _advice(self, record: Any) -> str:
        """What to do about an entry that holds ``record`` (parsed JSON, or None), which is no token record."""
        names = f"--service {self.service} --username {self.username}"
        kind = record_kind(record)
        if kind == "newer":
            return NEWER_RECORD_ADVICE
        if kind == "response":
            return (
                "it looks like a token response stored by hand: keep the token by importing it, "
                f"`keyring get {self.service} {self.username} | requests-tokenrefresh import {names} -`"
            )
        return (
            f"remove it with `requests-tokenrefresh clear {names}` (or `keyring del {self.service} "
            f"{self.username}`) and log in again"
        )

    def save(self, token: Token) -> None:
        if not isinstance(token, Token):
            raise TypeError(f"save() takes a Token, not {type(token).__name__}")
        try:
            raw = json.dumps(token.to_record(), separators=(",", ":"), sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise TokenStorageError(
                f"cannot write keyring entry {self.service!r}/{self.username!r}: the token's extra data "
                f"is not JSON ({type(exc).__name__})"
            ) from exc
        self._check_size(raw)
        self._call("write", lambda kr: kr.set_password(self.service, self.username, raw), token)

    def _check_size(self, raw: str) -> None:
        limit, encoding, which = self.max_record_bytes, "utf-8", "max_record_bytes"
        if limit is None and type(self._keyring()).__name__ == "WinVaultKeyring":
            limit, encoding = WINDOWS_CREDENTIAL_BYTES, "utf-16-le"  # it stores UTF-16
            which = "the Windows Credential Manager limit"
        size = len(raw.encode(encoding))
        if limit is not None and size > limit:
            raise TokenStorageError(
                f"cannot write keyring entry {self.service!r}/{self.username!r}: the token record is "
                f"{size} bytes and this keyring backend holds at most {limit} bytes per entry ({which}); "
                "use a backend without that limit (keyrings.cryptfile, a Secret Service) or a custom TokenStorage"
            )

    def delete(self) -> None:
        try:
            self._call("delete", lambda kr: kr.delete_password(self.service, self.username))
        except TokenStorageError as exc:
            import keyring.errors

            if not isinstance(exc.__cause__, keyring.errors.PasswordDeleteError):
                raise
            # keyring raises PasswordDeleteError when there is nothing to delete.
            log.debug("nothing to delete in keyring entry %s/%s", self.service, self.username)

    def _call(self, action: str, op: Any, token: Token | None = None) -> Any:
        import keyring.errors

        try:
            return op(self._keyring())
        except keyring.errors.NoKeyringError as exc:
            raise TokenStorageError(
                f"cannot {action} keyring entry {self.service!r}/{self.username!r}: {NO_KEYRING_HELP}"
            ) from exc
        except Exception as exc:
            # Backends raise whatever their platform raises (D-Bus, Win32, OSError ...);
            # translate at this boundary and keep the cause chained.
            detail = str(exc)
            for secret in (token.access_token, token.refresh_token) if token else ():
                if secret:  # a backend that echoes what it was given must not leak it
                    detail = detail.replace(secret, f"<{fingerprint(secret)}>")
            error = TokenStorageError(
                f"cannot {action} keyring entry {self.service!r}/{self.username!r}: "
                f"the keyring backend raised {type(exc).__name__}: {detail[:200]}"
            )
            if detail == str(exc):
                raise error from exc
        # The backend's own error quotes a token: raised here, outside the except clause, the
        # translation neither chains it nor keeps it as __context__.
        raise error

    def __repr__(self) -> str:
        return f"KeyringStorage(service={self.service!r}, username={self.username!r})"
