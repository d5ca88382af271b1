"""EncryptedStorage: any TokenStorage, with the token record encrypted (AES-256-GCM) before it is stored.

What is stored
--------------
The inner storage still stores a :class:`Token`, so it keeps its own guarantees (the token file's
atomic rename, Redis' versioned writes and fenced lease, the keyring's size check). That token
holds no secret: its ``access_token`` is the marker :data:`ENCRYPTED_MARKER`, it has no refresh
token, and its ``extra`` data holds one field::

    "encrypted": {"v": 1, "kid": "<key id>", "data": "<base64url of nonce + ciphertext>"}

The ciphertext is the whole :meth:`Token.to_record` (as compact JSON), encrypted with the first
key under a random 96-bit nonce per write. ``expires_at`` and ``obtained_at`` are copied in clear
for an operator's eyes only: they are not secret and a load never reads them (the decrypted record
is the truth). The associated data binds the record to the inner storage's identity -- the
keyring's service and username, the token file's path, the Redis key, else the class name -- and
to ``context``, so a record copied to another entry does not decrypt there.

Rules
-----
Rule 1: no silent plaintext. A plaintext record is an error (never used, never deleted) unless
        ``migrate=True``; then it is used and encrypted once, inside the inner refresh lease
        (a conditional write on Redis), so the migration never overwrites a newer token.
Rule 2: a record that does not decrypt (key id unknown, wrong key, copied, altered) is a
        :class:`~requests_tokenrefresh.TokenStorageError` naming the key id. It is not "no token":
        the adapter then neither signs out nor deletes the record.
Rule 3: the refresh lease is the inner storage's; this module only encrypts what its ``save``
        writes and decrypts what its ``load`` reads, and forwards everything else. A write of its
        own (a migration, :meth:`EncryptedStorage.rekey`) happens inside that lease, so it never
        overwrites a token another holder refreshed in the meantime.

``cryptography`` is imported when an EncryptedStorage is made (``pip install
requests-tokenrefresh[crypto]``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import threading
import types
from collections.abc import Iterator, Mapping
from typing import Any

from ..exceptions import TokenStorageError
from ..tokens import Token
from .base import ENCRYPTED_MARKER, NEWER_RECORD_ADVICE, RefreshLease, TokenStorage, describe
from .file import FileStorage
from .keyring import KeyringStorage
from .redis import RedisStorage

__all__ = ["ENCRYPTED_MARKER", "INSTALL_HELP", "EncryptedStorage", "EncryptionKeys"]

log: logging.Logger = logging.getLogger(__name__)

INSTALL_HELP = "EncryptedStorage needs cryptography: pip install requests-tokenrefresh[crypto]"
#: Seconds the one-time encryption of a plaintext record (``migrate=True``) holds the refresh lease.
MIGRATE_LEASE_TIMEOUT = 2.0
#: Seconds :meth:`EncryptedStorage.rekey` may wait for the refresh lease: the adapter's default lease
#: (``refresh_timeout`` 30 s + 10 s), so that it waits out a refresh another holder is making.
REKEY_LEASE_TIMEOUT = 40.0

#: Key ids at least this long are not quoted in errors: a 32-byte key in base64 is 43 or 44 characters.
_SHOWN_ID_LENGTH = 40
_FIELD = "encrypted"
_VERSION = 1
_KEY_BYTES = 32
_NONCE_BYTES = 12
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# The record's data is base64.urlsafe_b64encode's output (padded); these are its tables, applied
# here around binascii directly: the same bytes, without the base64 module's layers at every load.
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
# The plaintext, as json.dumps(record, separators=(",", ":"), sort_keys=True) writes it; one
# encoder instead of one per save (an encoder keeps no state between calls).
_PLAINTEXT = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


class EncryptionKeys:
    """The AES-256 keys of an :class:`EncryptedStorage`, by key id; the first encrypts, all decrypt.

    Args:
        keys: ``{key_id: 32 bytes}``, newest first. Key ids are 1-64 letters, digits, ``.``, ``_``
            or ``-``.

    Raises:
        ValueError: no key, a bad key id, or a key that is not 32 bytes. The message never holds
            key bytes.

    The repr shows the key ids only.

    .. versionadded:: 0.2
    """

    __slots__ = ("_keys",)
    _keys: tuple[tuple[str, bytes], ...]

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        if isinstance(keys, EncryptionKeys):
            found = keys._keys
        else:
            if not isinstance(keys, Mapping):
                raise ValueError(f"encryption keys must be a mapping {{key_id: 32 bytes}}, not {type(keys).__name__}")
            found = tuple((kid, _check_key(kid, key)) for kid, key in keys.items())
        if not found:
            raise ValueError("no encryption key given: give at least one {key_id: 32 bytes}")
        object.__setattr__(self, "_keys", found)

    @classmethod
    def from_env(cls, name: str, *, environ: Mapping[str, str] | None = None) -> EncryptionKeys:
        """The keys in environment variable ``name``: ``key_id:base64,key_id:base64``, newest first.

        Each key is the standard or URL-safe base64 of 32 random bytes, for example the output of
        ``python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"``.

        Raises:
            ValueError: the variable is unset or empty, or an entry is malformed; the message
                names the variable and the entry's position (and its key id), never its key.
        """
        value = (os.environ if environ is None else environ).get(name)
        if value is None or not value.strip():
            state = "is not set" if value is None else "is empty"
            raise ValueError(f"environment variable {name} {state}: it should hold key_id:base64-key entries")
        keys: dict[str, bytes] = {}
        for position, entry in enumerate(value.split(","), 1):
            kid, colon, encoded = entry.strip().rpartition(":")  # base64 has no ':'; a key id may not either
            where = f"entry {position} of {name}"
            if not colon or not kid:
                raise ValueError(f"{where} is not key_id:base64-key")
            if not _KEY_ID.fullmatch(kid):
                raise ValueError(f"{where} has a bad key id: use 1-64 letters, digits, '.', '_' or '-'")
            # An entry written key first ("KEY:k1") has the key where the id should be: an id as
            # long as a key is not quoted.
            shown = f"key id {kid!r}" if len(kid) < _SHOWN_ID_LENGTH else "a key id as long as a key (not shown)"
            if kid in keys:
                raise ValueError(f"{where}: {shown} is given twice")
            keys[kid] = _decode_key(encoded.strip(), f"{where} ({shown})")
        return cls(keys)

    @property
    def ids(self) -> tuple[str, ...]:
        """The key ids, newest (the one that encrypts) first."""
        return tuple(kid for kid, _ in self._keys)

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        return iter(self._keys)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("EncryptionKeys is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("EncryptionKeys is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EncryptionKeys) and other._keys == self._keys

    def __hash__(self) -> int:
        return hash(self.ids)

    def __repr__(self) -> str:
        return f"EncryptionKeys(ids={self.ids!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("EncryptionKeys are not pickled: they are secrets")


def _check_key(kid: Any, key: Any) -> bytes:
    if not isinstance(kid, str) or not _KEY_ID.fullmatch(kid):
        raise ValueError("a key id must be 1-64 letters, digits, '.', '_' or '-'")
    if not isinstance(key, (bytes, bytearray)):
        raise ValueError(f"encryption key {kid!r} must be 32 bytes, not {type(key).__name__}")
    if len(key) != _KEY_BYTES:
        raise ValueError(f"encryption key {kid!r} is {len(key)} bytes long: AES-256-GCM needs {_KEY_BYTES}")
    return bytes(key)


def _decode_key(encoded: str, where: str) -> bytes:
    text = encoded.replace("-", "+").replace("_", "/")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: the key is not valid base64") from None
    if len(key) != _KEY_BYTES:
        raise ValueError(f"{where}: the key is {len(key)} bytes long: AES-256-GCM needs {_KEY_BYTES}")
    return key


class EncryptedStorage(TokenStorage):
    """Wraps a :class:`TokenStorage` so that what it stores is encrypted with AES-256-GCM.

    ``redis-cli GET key``, the token file and ``keyring get`` then show no byte of the access or
    refresh token. The refresh lease (and so the single refresh among hosts) is the inner
    storage's, unchanged.

    Args:
        inner: the storage that keeps the encrypted record.
        keys: ``{key_id: 32 bytes}`` (newest first) or :class:`EncryptionKeys`, such as
            ``EncryptionKeys.from_env("TOKEN_KEYS")``. The first key encrypts; every key decrypts.
        context: a string bound into every record besides the inner storage's identity; give one
            naming the entry for a storage of your own (which has no identity known here).
        migrate: accept a plaintext record on load, and encrypt it once. Without it, a plaintext
            record is a TokenStorageError.

    After a key rotation the record moves to the new key at the next refresh, or at once with
    :meth:`rekey`.

    Example::

        keys = EncryptionKeys.from_env("TOKEN_KEYS")   # "k2:BASE64,k1:BASE64"
        storage = EncryptedStorage(RedisStorage(url, key="example-api:alice"), keys=keys)
        adapter = TokenRefreshAdapter(storage, token_url="https://auth.example.com/oauth/token")

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        inner: TokenStorage,
        *,
        keys: EncryptionKeys | Mapping[str, bytes],
        context: str | None = None,
        migrate: bool = False,
    ) -> None:
        if not isinstance(inner, TokenStorage):
            raise ValueError(f"EncryptedStorage wraps a TokenStorage, not {type(inner).__name__}")
        if context is not None and not isinstance(context, str):
            raise ValueError("context must be a string or None")
        try:
            from cryptography.exceptions import InvalidTag
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as exc:
            raise ImportError(INSTALL_HELP) from exc
        self.inner: TokenStorage = inner
        self.keys: EncryptionKeys = keys if isinstance(keys, EncryptionKeys) else EncryptionKeys(keys)
        self.context = context
        self.migrate = migrate
        self._ciphers: dict[str, Any] = {kid: AESGCM(key) for kid, key in self.keys}
        self._identity = f"{_identity(inner)}\0{context or ''}"
        # Made once, not at every load and save: the associated data of each key id, and what seals.
        self._associated: dict[str, bytes] = {kid: self._associated_data(kid) for kid in self._ciphers}
        newest = self.keys.ids[0]
        self._sealer: tuple[str, Any, bytes] = (newest, self._ciphers[newest], self._associated[newest])
        self._undecryptable = (InvalidTag, binascii.Error, ValueError)
        self._holders: dict[int, int] = {}  # thread id -> leases it holds (no migration inside one)
        self._holders_lock = threading.Lock()
        # How messages name the entry, the keys and the migrate option; the command line names its own.
        self._entry = repr(inner)
        self._keys_name = "this EncryptedStorage"
        self._migrate_option = "migrate=True"

    @property
    def _atomic_writes(self) -> bool:
        """Whether a reader never sees a write half done: the inner storage's (one write per save here too).

        The adapter reads it (``getattr``): after a load that finds nothing in a store whose writes
        are atomic, it does not take the refresh lease to read again.
        """
        return bool(getattr(self.inner, "_atomic_writes", False))

    # -- TokenStorage --------------------------------------------------------------------------

    def load(self) -> Token | None:
        stored = self.inner.load()
        if stored is None or stored.access_token == ENCRYPTED_MARKER:
            return self._open(stored)
        self._refuse_plaintext()
        return self._migrate(stored)

    def save(self, token: Token) -> None:
        self.inner.save(self._seal(token))

    def delete(self) -> None:
        self.inner.delete()

    def refresh_lease(self, timeout: float) -> RefreshLease:
        """The inner storage's lease, whose ``load`` decrypts and ``save`` encrypts."""
        return _EncryptedLease(self, self.inner.refresh_lease(timeout))

    # -- rotation ------------------------------------------------------------------------------

    def rekey(self, timeout: float = REKEY_LEASE_TIMEOUT) -> tuple[str | None, str]:
        """Encrypt the stored record again with the newest key (the first), inside the refresh lease.

        A record under an older key is decrypted and written under the newest; one already under
        the newest is left as it is (nothing is written). The lease is the inner storage's, as
        for a refresh, so a token that another holder refreshes meanwhile is never overwritten
        with the older one it replaced (on Redis the write is conditional on the record read).

        Args:
            timeout: seconds to wait for the refresh lease (on Redis also its lifetime).

        Returns:
            The key id the record was encrypted with (None for a record in clear, encrypted now
            because ``migrate`` is true) and the newest key id. Equal ids: nothing was written.

        Raises:
            TokenStorageError: nothing is stored; the record does not decrypt with these keys
                (the message names its key id); it is in clear and ``migrate`` is false; an
                earlier refresh by another holder may not have stored its answer yet (the lease
                says ``interrupted``), so nothing is written now; the lease was not had within
                ``timeout``; or the store failed. The record is left as it is.
            LeaseLostError: the record was written by another holder after it was read (Redis):
                nothing was written; call again.
        """
        newest = self.keys.ids[0]
        with self.inner.refresh_lease(timeout) as lease:
            stored = lease.load()
            if stored is None:
                raise TokenStorageError(f"{self._entry} holds no token record: nothing to re-encrypt")
            old: str | None = None
            if stored.access_token == ENCRYPTED_MARKER:
                old = self._header(stored)[0]
                token = self._open(stored)
                if old == newest:
                    log.debug("the token record of %r is already encrypted with key id %s", self.inner, newest)
                    return old, newest
            else:
                self._refuse_plaintext()
                token = stored
            if lease.interrupted or lease.lost:
                raise TokenStorageError(
                    f"{self._entry}: an earlier refresh by another holder may not have stored its answer yet "
                    "(or the store lost writes); not re-encrypted now, so that the next refresh still knows: "
                    "try again after a refresh"
                )
            assert token is not None
            lease.save(self._seal(token))
        log.info("re-encrypted the token record of %r: key id %s -> %s", self.inner, old or "(in clear)", newest)
        return old, newest

    # -- the record ----------------------------------------------------------------------------

    def _seal(self, token: Token) -> Token:
        if not isinstance(token, Token):
            raise TypeError(f"save() takes a Token, not {type(token).__name__}")
        kid, cipher, associated = self._sealer
        try:
            plain = _PLAINTEXT.encode(token.to_record()).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise TokenStorageError(
                f"cannot write {self._entry}: the token's extra data is not JSON ({type(exc).__name__})"
            ) from exc
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + cipher.encrypt(nonce, plain, associated)
        data = binascii.b2a_base64(sealed, newline=False).translate(_TO_URLSAFE).decode("ascii")
        return _stand_in(token, {"v": _VERSION, "kid": kid, "data": data})

    def _open(self, stored: Token | None) -> Token | None:
        """The token that ``stored`` (an encrypted stand-in, or None) holds."""
        if stored is None:
            return None
        kid, data = self._header(stored)
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise TokenStorageError(
                f"{self._entry} holds a record encrypted with key id {kid!r}, which {self._keys_name} "
                f"does not have (it has {', '.join(map(repr, self.keys.ids))}): add that key; "
                "the record is left as it is"
            )
        try:
            raw = binascii.a2b_base64(data.encode("ascii").translate(_FROM_URLSAFE))
            plain = cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], self._associated[kid])
        except self._undecryptable as exc:
            raise TokenStorageError(
                f"{self._entry} holds a record that key id {kid!r} does not decrypt: a different key under that "
                "id, a record copied from another entry, or an altered one; it is left as it is"
            ) from exc
        try:
            return Token.from_record(json.loads(plain))
        except (ValueError, RecursionError) as exc:
            raise TokenStorageError(
                f"{self._entry} holds an encrypted record that is no token record ({describe(exc)})"
            ) from exc

    def _header(self, stored: Token) -> tuple[str, str]:
        """The key id and the data of an encrypted stand-in."""
        header = stored.extra.get(_FIELD)
        if not isinstance(header, Mapping) or not isinstance(header.get("v"), int):
            raise TokenStorageError(f"{self._entry} holds a damaged encrypted record (no header): {self._advice}")
        if header["v"] != _VERSION:
            raise TokenStorageError(
                f"{self._entry} holds an encrypted record of version {header['v']}: {NEWER_RECORD_ADVICE}"
            )
        kid, data = header.get("kid"), header.get("data")
        if not isinstance(kid, str) or not isinstance(data, str):
            raise TokenStorageError(f"{self._entry} holds a damaged encrypted record (bad header): {self._advice}")
        return kid, data

    def _associated_data(self, kid: str) -> bytes:
        return f"requests-tokenrefresh:v{_VERSION}:{kid}\0{self._identity}".encode()

    @property
    def _advice(self) -> str:
        return "it is left as it is: delete it and log in again"

    def _refuse_plaintext(self) -> None:
        if not self.migrate:
            raise TokenStorageError(
                f"{self._entry} holds a token record in clear, which an EncryptedStorage does not use: pass "
                f"{self._migrate_option} to encrypt it once, or delete it and log in again; it is left as it is"
            )

    def _migrate(self, plain: Token) -> Token | None:
        """Encrypt a plaintext record once, inside the inner lease (conditional on Redis): Rule 1."""
        if self._holds_lease():
            return plain  # this thread's lease holder saves it (encrypted) itself
        try:
            with self.inner.refresh_lease(MIGRATE_LEASE_TIMEOUT) as lease:
                stored = lease.load()
                encrypted_meanwhile = stored is None or stored.access_token == ENCRYPTED_MARKER
                if stored is not None and not encrypted_meanwhile:
                    if lease.interrupted or lease.lost:
                        return stored  # the refresh that follows saves it (encrypted)
                    lease.save(self._seal(stored))
        except TokenStorageError as exc:  # LeaseLostError too: the next load tries again
            log.warning("could not encrypt the plaintext record of %r yet: %s", self.inner, exc)
            return plain
        if encrypted_meanwhile:  # another host did it (or deleted it): read that, its errors too
            return self._open(stored)
        log.info("encrypted the plaintext token record of %r with key id %s", self.inner, self.keys.ids[0])
        return stored

    def _holds_lease(self) -> bool:
        with self._holders_lock:
            return self._holders.get(threading.get_ident(), 0) > 0

    def _held(self, change: int) -> None:
        ident = threading.get_ident()
        with self._holders_lock:
            count = self._holders.get(ident, 0) + change
            if count > 0:
                self._holders[ident] = count
            else:
                self._holders.pop(ident, None)

    def __repr__(self) -> str:
        return f"EncryptedStorage({self.inner!r}, keys={self.keys!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("an EncryptedStorage is not pickled: it holds its keys")


# The fields of a stand-in token that are the same in every one (and equal to Token's defaults).
_STAND_IN_FIELDS = dict(vars(Token(ENCRYPTED_MARKER)))


def _stand_in(token: Token, header: dict[str, Any]) -> Token:
    """``Token(ENCRYPTED_MARKER, expires_at=, obtained_at=, extra={"encrypted": header})``, made without its checks.

    Its checks cost a save more than the cipher does, and here they pass by construction: the
    marker and the defaults were checked once, above; the times are ``token``'s, checked when it
    was made; and ``extra`` is what ``Token.__post_init__`` makes of a dict. A test compares the
    result with the checked construction.
    """
    stand_in = object.__new__(Token)
    vars(stand_in).update(
        _STAND_IN_FIELDS,
        expires_at=token.expires_at,
        obtained_at=token.obtained_at,
        extra=types.MappingProxyType({_FIELD: header}),
    )
    return stand_in


def _identity(inner: TokenStorage) -> str:
    """What names ``inner``'s entry: a record copied to another entry does not decrypt there."""
    if isinstance(inner, KeyringStorage):
        return f"keyring\0{inner.service}\0{inner.username}"
    if isinstance(inner, FileStorage):
        # The file's directory as the system resolves it: the same file named through a symlinked
        # directory (or macOS's /tmp, /private/tmp) is the same entry.
        directory, name = os.path.split(inner.path)
        return f"file\0{os.path.join(os.path.realpath(directory), name)}"
    if isinstance(inner, RedisStorage):
        return f"redis\0{inner.key}"
    return f"class\0{type(inner).__qualname__}"


class _EncryptedLease(RefreshLease):
    """The inner storage's lease: load decrypts, save encrypts, every other member is the inner lease's."""

    storage: EncryptedStorage

    def __init__(self, storage: EncryptedStorage, inner: RefreshLease) -> None:
        # RefreshLease.__init__ is not called: interrupted and lost are the inner lease's.
        self.storage = storage
        self._inner = inner

    # The attributes the inner lease updates in load() and __enter__.
    @property
    def fenced(self) -> bool:
        return self._inner.fenced

    @fenced.setter
    def fenced(self, value: bool) -> None:
        self._inner.fenced = value

    @property
    def interrupted(self) -> bool:
        return self._inner.interrupted

    @interrupted.setter
    def interrupted(self, value: bool) -> None:
        self._inner.interrupted = value

    @property
    def lost(self) -> bool:
        return self._inner.lost

    @lost.setter
    def lost(self, value: bool) -> None:
        self._inner.lost = value

    def __getattr__(self, name: str) -> Any:  # fence, version, owner, timeout, path ...
        if name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __enter__(self) -> RefreshLease:
        self._inner = self._inner.__enter__()
        self.storage._held(+1)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.storage._held(-1)
        self._inner.__exit__(*exc_info)

    def load(self) -> Token | None:
        stored = self._inner.load()
        if stored is None or stored.access_token == ENCRYPTED_MARKER:
            return self.storage._open(stored)
        self.storage._refuse_plaintext()
        return stored  # migrate=True: this holder's save writes it encrypted

    def check(self, seconds: float) -> None:
        self._inner.check(seconds)

    def forget(self) -> None:
        self._inner.forget()

    def extend(self, seconds: float) -> None:
        self._inner.extend(seconds)

    def save(self, token: Token) -> None:
        self._inner.save(self.storage._seal(token))
