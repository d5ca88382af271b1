"""Keyring entry size limits (the Windows Credential Manager holds 2,560 bytes) and store reads."""

from __future__ import annotations

import time
from typing import Any

import keyring
import pytest
import requests

from requests_tokenrefresh import KeyringStorage, Token, TokenRefreshAdapter, TokenStorageError
from requests_tokenrefresh.testing import AuthServer, MemoryKeyring

from ..jwt_support import make_jwt


class WinVaultKeyring(MemoryKeyring):
    """Simulates Windows' backend (KeyringStorage knows it by name): UTF-16, at most 2,560 bytes a credential."""

    def set_password(self, service: str, username: str, password: str) -> None:
        if len(password.encode("utf-16-le")) > 2560:
            raise OSError(1783, "CredWrite", "The stub received bad data.")
        super().set_password(service, username, password)


def big_jwt(size: int) -> str:
    return make_jwt(exp=int(time.time()) + 3600, blob="x" * size)


def test_an_8kb_jwt_on_the_windows_backend_fails_clearly_before_writing() -> None:
    backend = WinVaultKeyring()
    storage = KeyringStorage("api", "dave", backend=backend)
    token = Token(big_jwt(8 * 1024), "refresh")
    with pytest.raises(TokenStorageError, match=r"at most 2560 bytes") as caught:
        storage.save(token)
    assert "Windows Credential Manager" in str(caught.value)
    assert token.access_token not in str(caught.value)
    assert backend.entries == {}  # nothing half-written


def test_a_small_token_fits_the_windows_backend() -> None:
    backend = WinVaultKeyring()
    storage = KeyringStorage("api", "dave", backend=backend)
    token = Token(big_jwt(100), "refresh")
    storage.save(token)
    assert storage.load() == token


def test_max_record_bytes_sets_the_limit_for_any_backend() -> None:
    storage = KeyringStorage("api", "erin", max_record_bytes=1000)
    with pytest.raises(TokenStorageError, match="at most 1000 bytes"):
        storage.save(Token(big_jwt(2000), "refresh"))
    assert keyring.get_password("api", "erin") is None


def test_steady_state_reads_the_keyring_once_and_a_401_once_more(memory_keyring: Any) -> None:
    with AuthServer(ttl=3600) as srv:
        storage = KeyringStorage("api", "frank")
        storage.save(Token.from_response(srv.issue()))
        session = requests.Session()
        session.mount(srv.url + "/", TokenRefreshAdapter(storage, token_url=srv.token_url))
        for _ in range(50):
            assert session.get(f"{srv.url}/api").status_code == 200
        assert memory_keyring.reads == 1  # first use only: no keyring read per request
        srv.revoke_access_tokens()
        assert session.get(f"{srv.url}/api").status_code == 200
        assert memory_keyring.reads == 2  # the 401 led to one read inside the refresh lock
        for _ in range(50):
            session.get(f"{srv.url}/api")
        assert memory_keyring.reads == 2
        session.close()


def test_a_deeply_nested_stored_value_is_a_storage_error() -> None:
    keyring.set_password("api", "gina", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(TokenStorageError, match="nested too deeply"):
        KeyringStorage("api", "gina").load()


def test_extra_data_that_is_not_json_is_a_storage_error_not_a_type_error() -> None:
    storage = KeyringStorage("api", "hana")
    with pytest.raises(TokenStorageError, match="not JSON"):
        storage.save(Token("a", "r", extra={"when": object()}))
    assert keyring.get_password("api", "hana") is None
