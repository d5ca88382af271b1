"""The ``refresh`` command: one refresh now, with the adapter's code; a token the store cannot keep goes to a file."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import tempfile
from urllib.parse import urlsplit

import platformdirs

from .._redact import fingerprint
from ..adapters import TokenRefreshAdapter
from ..exceptions import InsecureTransportError, RefreshError, SessionExpiredError
from ..storage import EncryptedStorage, TokenStorage
from ..tokens import Token
from .format import (
    CLIENT_SECRET_ENV,
    PROG,
    _CommandError,
    _file_error,
    _network_reason,
    _shown_url,
    client_cert,
)
from .records import _print_status, describe
from .store import (
    _command_storage,
    _CommandFileStorage,
    _CommandRedisStorage,
    _CommandStorage,
    _entry_args,
    _load_token,
    _store_name,
    _wrap,
)

__all__: list[str] = []


def _write_unsaved(token: Token, path: str | None) -> str:
    """Write ``token``'s record to a new file only the user can read; return its path."""
    data = json.dumps(token.to_record(), indent=2) + "\n"
    if path is None:
        directory = platformdirs.user_data_dir("requests-tokenrefresh")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="unsaved-token-", suffix=".json", dir=directory)  # mode 0600
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never over another file
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(data)
    return path


def _unsaved(
    noting: _CommandStorage | _CommandFileStorage | _CommandRedisStorage,
    storage: TokenStorage,
    new: Token,
    rotated: bool,
    path: str | None,
) -> _CommandError:
    """The error for a refreshed token the store did not store; the token goes to a file first (in clear, 0600).

    ``noting`` is the store, ``storage`` what the command used: the store, or an EncryptedStorage around it.
    """
    store = _store_name(storage)
    why = " ".join(str(noting.save_error).split())
    what = "a new refresh token (the old one is spent)" if rotated else "a new access token"
    written, problems = None, []
    for candidate in dict.fromkeys([path, None]):  # the user's path, else the default place
        try:
            written = _write_unsaved(new, candidate)
            break
        except OSError as exc:
            problems.append(_file_error("write", candidate or "the unsaved-token file", exc))
    if written is None:
        return _CommandError(
            f"the token endpoint issued {what}, but {store} could not store it ({why}) and "
            f"{'; '.join(problems)}: it is lost, log in again"
        )
    readable = "in clear, readable by you only" if isinstance(storage, EncryptedStorage) else "readable by you only"
    return _CommandError(
        f"the token endpoint issued {what}, but {store} could not store it ({why}); it was written to "
        f"{written} ({readable}): when {store} works, run "
        f"`{PROG} import {_entry_args(storage)} {shlex.quote(written)}` and delete the file"
    )


def _refresh(args: argparse.Namespace) -> int:
    noting = _command_storage(args, allow_delete=args.delete_on_invalid_grant)
    storage = _wrap(args, noting)  # an EncryptedStorage saves and deletes through ``noting`` too
    old = _load_token(storage)
    if old.refresh_token is None:
        raise _CommandError("the stored token has no refresh token: log in again and import a new token")
    url = _shown_url(args.token_url)
    insecure = (
        f"refusing to send the refresh token over plain http to {url}, which is not this machine: use an "
        "https token URL, or pass --allow-insecure-http if the network to it is trusted"
    )
    try:
        adapter = TokenRefreshAdapter(
            storage,
            token_url=args.token_url,
            client_id=args.client_id,
            client_secret=args.client_secret or os.environ.get(CLIENT_SECRET_ENV) or None,
            client_auth=args.client_auth,
            client_cert=client_cert(args),
            scope=args.scope,
            refresh_timeout=args.timeout,
            allow_insecure_http=args.allow_insecure_http,
        )
    except InsecureTransportError as exc:
        raise _CommandError(str(exc).replace("allow_insecure_http=True", "--allow-insecure-http")) from exc
    except ValueError as exc:
        if urlsplit(args.token_url).scheme.lower() == "http" and not args.allow_insecure_http:
            raise _CommandError(insecure) from exc
        raise
    try:
        new = adapter.refresh()
    except SessionExpiredError as exc:
        if exc.error != "invalid_grant":
            raise
        fate = (
            "the stored token was deleted"
            if args.delete_on_invalid_grant
            else "the stored token was kept (--delete-on-invalid-grant deletes it)"
        )
        raise _CommandError(
            f"the token endpoint {url} rejected the refresh token ({exc}); {fate}: check --token-url and "
            "--client-id, else log in again and import a new token"
        ) from exc
    except InsecureTransportError as exc:
        raise _CommandError(str(exc).replace("allow_insecure_http=True", "--allow-insecure-http")) from exc
    except RefreshError as exc:
        if exc.error in ("connection_error", "timeout"):
            raise _CommandError(f"cannot reach the token endpoint {url}: {_network_reason(exc)}") from exc
        raise
    finally:
        adapter.close()
    rotated = new.refresh_token != old.refresh_token
    if noting.save_error is not None:
        raise _unsaved(noting, storage, new, rotated, args.unsaved_token_file)
    print(
        f"refreshed: access token {fingerprint(old.access_token)} -> {fingerprint(new.access_token)}, "
        f"refresh token {'rotated' if rotated else 'kept'} "
        f"({fingerprint(old.refresh_token)} -> {fingerprint(new.refresh_token)})"
    )
    _print_status(storage, describe(new))
    return 0
