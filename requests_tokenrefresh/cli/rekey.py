"""The ``rekey`` command: the stored record encrypted again with the newest key, inside the refresh lease.

After a key rotation (a new key put first in the keys' variable) the record moves to the new key
at the next refresh; ``rekey`` moves it now, with :meth:`~requests_tokenrefresh.EncryptedStorage.rekey`,
so that the old key can go. It reports the old and the new key id (ids are not secret).
"""

from __future__ import annotations

import argparse

from ..storage import EncryptedStorage
from .store import _reading, _storage, _where

__all__ = ["REKEY_EPILOG"]

REKEY_EPILOG = """\
The keys come from REQUESTS_TOKENREFRESH_KEYS (or --keys-env NAME), key_id:base64 entries, newest
first: the record is decrypted with any of them and encrypted with the first. A record already
under the first key is left as it is. exit status: 0 if the record is under the newest key now;
1 if nothing is stored, the record does not decrypt with these keys (the message names its key id),
it is in clear (--migrate encrypts it), or on any error; the record is then left as it is."""


def _rekey(args: argparse.Namespace) -> int:
    storage = _storage(args)
    assert isinstance(storage, EncryptedStorage)  # --encrypted is implied
    old, new = _reading(storage, storage.rekey)
    where = _where(storage)
    if old == new:
        print(f"the token in {where} is already encrypted with key id {new}, the newest: nothing to do")
    elif old is None:
        print(f"encrypted the token in {where}, which was in clear, with key id {new}")
    else:
        print(f"re-encrypted the token in {where}: key id {old} -> {new}")
    return 0
