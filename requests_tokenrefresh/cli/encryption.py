"""The encryption options of the commands that read or write the record: ``--encrypted``, ``--keys-env``, ``--migrate``.

``--encrypted`` wraps the store the other options name in an
:class:`~requests_tokenrefresh.EncryptedStorage`, with the keys of the environment variable
``REQUESTS_TOKENREFRESH_KEYS`` (or the one ``--keys-env NAME`` names): key material is never
taken from argv, where other users see it, and never printed. ``--migrate`` lets it use a record
found in clear, and encrypt it once. Without ``--encrypted``, a command that finds an encrypted
record says so (:func:`_key_id`) rather than show the stand-in or store a token in clear over it.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Mapping

from ..storage import EncryptedStorage, EncryptionKeys, TokenStorage
from ..storage.encrypted import ENCRYPTED_MARKER
from ..tokens import Token
from .format import _CommandError

__all__ = ["ENCRYPTED_ADVICE", "KEYS_ENV", "add_encryption_options"]

#: Environment variable read for the keys of ``--encrypted``: ``key_id:base64,key_id:base64``, newest first.
KEYS_ENV = "REQUESTS_TOKENREFRESH_KEYS"
#: What the commands say to do with an encrypted record found without ``--encrypted``.
ENCRYPTED_ADVICE = f"pass --encrypted, with the keys in {KEYS_ENV} (or in the variable --keys-env NAME names)"


class _CommandEncryptedStorage(EncryptedStorage):
    """An EncryptedStorage whose messages name the store, the keys' variable and ``--migrate`` as the commands do."""

    def __init__(self, inner: TokenStorage, *, keys: EncryptionKeys, migrate: bool, keys_env: str, entry: str) -> None:
        super().__init__(inner, keys=keys, migrate=migrate)
        self.keys_env = keys_env
        self._entry = entry
        self._keys_name = keys_env
        self._migrate_option = "--migrate"


def add_encryption_options(sub: argparse.ArgumentParser, *, implied: bool = False) -> None:
    """Add ``--encrypted``, ``--keys-env`` and ``--migrate``; ``implied``: the command always decrypts (``rekey``)."""
    group = sub.add_argument_group("an encrypted record (EncryptedStorage, AES-256-GCM)")
    group.add_argument(
        "--encrypted",
        action="store_true",
        default=implied,
        help="implied: rekey only works on an encrypted record"
        if implied
        else f"the record is encrypted: read and write it with the keys in {KEYS_ENV}",
    )
    given = "" if implied else "with --encrypted: "
    group.add_argument(
        "--keys-env",
        metavar="NAME",
        help=f"{given}the environment variable that holds the keys, key_id:base64 entries newest first "
        f"(default: {KEYS_ENV})",
    )
    group.add_argument(
        "--migrate",
        action="store_true",
        help=f"{given}use a record found in clear and encrypt it once (without it, a record in clear is an error)",
    )


def _encryption_problem(args: argparse.Namespace) -> str | None:
    """Why the encryption options do not fit together, or None."""
    if args.keys_env is not None and not args.keys_env.strip():
        return "--keys-env needs the name of an environment variable"
    if args.encrypted:
        return None
    given = [name for name, value in (("--keys-env", args.keys_env is not None), ("--migrate", args.migrate)) if value]
    if given:
        return f"{' and '.join(given)} {'needs' if len(given) == 1 else 'need'} --encrypted"
    return None


def _encrypted(args: argparse.Namespace, inner: TokenStorage, entry: str) -> TokenStorage:
    """``inner``, in an EncryptedStorage with ``--encrypted``; ``entry`` names it in messages."""
    if not args.encrypted:
        return inner
    keys_env = args.keys_env or KEYS_ENV
    try:
        keys = EncryptionKeys.from_env(keys_env)  # its message names the variable, never a key
    except ValueError as exc:
        raise _CommandError(f"--encrypted: {exc}") from None
    try:
        return _CommandEncryptedStorage(inner, keys=keys, migrate=args.migrate, keys_env=keys_env, entry=entry)
    except ImportError as exc:  # cryptography is an optional extra: its message names it
        raise _CommandError(str(exc)) from exc


def _encryption_args(storage: TokenStorage) -> str:
    """The options that read ``storage`` as the command was given them: `` --encrypted ...`` or nothing."""
    if not isinstance(storage, EncryptedStorage):
        return ""
    keys_env = _keys_env(storage)
    return " --encrypted" + ("" if keys_env == KEYS_ENV else f" --keys-env {shlex.quote(keys_env)}")


def _keys_env(storage: EncryptedStorage) -> str:
    """The environment variable ``storage``'s keys came from."""
    return storage.keys_env if isinstance(storage, _CommandEncryptedStorage) else KEYS_ENV


def _key_id(token: Token | None) -> str | None:
    """The key id of an encrypted record (``"?"`` if its header is damaged); None for a token in clear, or none."""
    if token is None or token.access_token != ENCRYPTED_MARKER:
        return None
    header = token.extra.get("encrypted")
    kid = header.get("kid") if isinstance(header, Mapping) else None
    return kid if isinstance(kid, str) else "?"
