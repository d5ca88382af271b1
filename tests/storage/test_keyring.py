"""Unit tests of MemoryStorage and KeyringStorage, against in-memory keyring backends (or the Secret Service).

With ``RTR_TEST_KEYRING=secretservice`` (tox -e secretservice) the keyring these tests select is the
Secret Service of a private gnome-keyring daemon (see tests/conftest.py); the fakes stay fakes.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from typing import Any

import keyring
import keyring.backends.fail
import keyring.errors
import pytest

from requests_tokenrefresh import KeyringStorage, MemoryStorage, Token, TokenStorage, TokenStorageError
from requests_tokenrefresh.testing import MemoryKeyring

SERVICE = "example-api"
USERNAME = "alice@example.com"
ACCESS = "at-3f9c1e7a-access-secret"
REFRESH = "rt-8b2d4c6e-refresh-secret"
TOKEN = Token(ACCESS, REFRESH, expires_at=1_700_003_600.0, obtained_at=1_700_000_000.0, extra={"user": {"id": 7}})


OPERATIONS: list[Any] = [
    pytest.param(lambda storage: storage.load(), id="load"),
    pytest.param(lambda storage: storage.save(TOKEN), id="save"),
    pytest.param(lambda storage: storage.delete(), id="delete"),
]

Operation = Callable[[TokenStorage], Any]


def assert_no_secret(exc: BaseException) -> None:
    assert ACCESS not in str(exc)
    assert REFRESH not in str(exc)


# --- MemoryStorage ---------------------------------------------------------------------------


def test_memory_storage_load_save_delete() -> None:
    storage = MemoryStorage()
    assert storage.load() is None

    storage.save(TOKEN)
    assert storage.load() is TOKEN

    replacement = Token("at-other")
    storage.save(replacement)
    assert storage.load() is replacement

    storage.delete()
    storage.delete()
    assert storage.load() is None


def test_memory_storage_starts_with_the_given_token() -> None:
    assert MemoryStorage(TOKEN).load() is TOKEN


@pytest.mark.parametrize("storage", [MemoryStorage(), KeyringStorage(SERVICE, USERNAME)], ids=["memory", "keyring"])
@pytest.mark.parametrize("value", [ACCESS, TOKEN.to_record(), None])
def test_save_of_a_non_token_raises_type_error(storage: TokenStorage, value: Any) -> None:
    with pytest.raises(TypeError, match="Token") as excinfo:
        storage.save(value)

    assert_no_secret(excinfo.value)
    assert storage.load() is None


def test_pickled_memory_storage_comes_back_empty_and_usable() -> None:
    data = pickle.dumps(MemoryStorage(TOKEN))

    assert ACCESS.encode() not in data
    assert REFRESH.encode() not in data
    copy = pickle.loads(data)  # noqa: S301  # our own bytes
    assert copy.load() is None
    copy.save(TOKEN)
    assert copy.load() is TOKEN


def test_memory_storage_repr_shows_no_secret() -> None:
    text = repr(MemoryStorage(TOKEN))

    assert ACCESS not in text
    assert REFRESH not in text


# --- KeyringStorage: the keyring under test ---------------------------------------------------


def test_the_keyring_is_the_one_asked_for(memory_keyring: MemoryKeyring, keyring_under_test: str) -> None:
    """RTR_TEST_KEYRING=secretservice runs these tests on the Secret Service, never on a fallback."""
    KeyringStorage(SERVICE, USERNAME).save(TOKEN)

    assert keyring.get_keyring() is memory_keyring
    if keyring_under_test == "secretservice":
        import secretstorage
        from keyring.backends import SecretService

        assert isinstance(memory_keyring.inner, SecretService.Keyring)  # type: ignore[attr-defined]
        # The daemon holds the record: read it on a connection of our own, past keyring.
        connection = secretstorage.dbus_init()
        try:
            collection = secretstorage.get_default_collection(connection)
            [item] = collection.search_items({"service": SERVICE, "username": USERNAME})
            assert json.loads(item.get_secret()) == TOKEN.to_record()
        finally:
            connection.close()
    else:
        assert keyring_under_test == "memory"
        assert not hasattr(memory_keyring, "inner")
        assert json.loads(memory_keyring.entries[(SERVICE, USERNAME)]) == TOKEN.to_record()


# --- KeyringStorage: the stored record -------------------------------------------------------


def test_save_writes_one_json_record_readable_with_keyring(memory_keyring: MemoryKeyring) -> None:
    KeyringStorage(SERVICE, USERNAME).save(TOKEN)

    assert list(memory_keyring.entries) == [(SERVICE, USERNAME)]
    record = json.loads(keyring.get_password(SERVICE, USERNAME))
    assert record == {
        "version": 1,
        "access_token": ACCESS,
        "refresh_token": REFRESH,
        "token_type": "Bearer",
        "expires_at": 1_700_003_600.0,
        "obtained_at": 1_700_000_000.0,
        "scope": None,
        "extra": {"user": {"id": 7}},
    }


def test_load_round_trips_and_save_replaces(memory_keyring: MemoryKeyring) -> None:
    storage = KeyringStorage(SERVICE, USERNAME)
    storage.save(Token("at-first", "rt-first"))
    storage.save(TOKEN)

    assert storage.load() == TOKEN
    assert KeyringStorage(SERVICE, USERNAME).load() == TOKEN  # another instance, same entry
    assert len(memory_keyring.entries) == 1


def test_load_of_nothing_is_none() -> None:
    assert KeyringStorage(SERVICE, USERNAME).load() is None


def test_entries_are_per_service_and_username() -> None:
    KeyringStorage(SERVICE, USERNAME).save(TOKEN)

    assert KeyringStorage(SERVICE, "bob@example.com").load() is None
    assert KeyringStorage("other-api", USERNAME).load() is None


def test_delete_is_idempotent() -> None:
    storage = KeyringStorage(SERVICE, USERNAME)
    storage.save(TOKEN)

    storage.delete()
    storage.delete()

    assert storage.load() is None
    assert keyring.get_password(SERVICE, USERNAME) is None


def test_delete_of_nothing_is_fine() -> None:
    storage = KeyringStorage(SERVICE, USERNAME)

    storage.delete()

    assert storage.load() is None


# --- KeyringStorage: a corrupted entry -------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(f"{ACCESS}:{REFRESH}", id="not-json"),
        pytest.param(json.dumps([ACCESS, REFRESH]), id="json-array"),
        pytest.param(json.dumps(ACCESS), id="json-string"),
        pytest.param(json.dumps({"version": 0, "access_token": ACCESS, "refresh_token": REFRESH}), id="old-version"),
        pytest.param(json.dumps({"version": 1, "refresh_token": REFRESH}), id="no-access-token"),
    ],
)
def test_corrupted_entry_raises_storage_error_saying_how_to_clear_it(value: str) -> None:
    keyring.set_password(SERVICE, USERNAME, value)

    with pytest.raises(TokenStorageError) as excinfo:
        KeyringStorage(SERVICE, USERNAME).load()

    message = str(excinfo.value)
    assert f"{SERVICE!r}/{USERNAME!r}" in message
    assert f"requests-tokenrefresh clear --service {SERVICE} --username {USERNAME}" in message
    assert f"keyring del {SERVICE} {USERNAME}" in message
    assert value not in message
    assert_no_secret(excinfo.value)
    assert isinstance(excinfo.value.__cause__, ValueError)


@pytest.mark.parametrize(
    ("value", "advice"),
    [
        pytest.param(json.dumps({"version": 99, "access_token": ACCESS}), "upgrade", id="newer-version"),
        pytest.param(json.dumps({"access_token": ACCESS, "refresh_token": REFRESH}), "import", id="no-version"),
    ],
)
def test_an_entry_that_can_still_be_read_is_never_advised_to_be_deleted(value: str, advice: str) -> None:
    keyring.set_password(SERVICE, USERNAME, value)

    with pytest.raises(TokenStorageError) as excinfo:
        KeyringStorage(SERVICE, USERNAME).load()

    message = str(excinfo.value)
    assert advice in message
    assert "del" not in message
    assert "clear" not in message
    assert value not in message
    assert_no_secret(excinfo.value)
    assert isinstance(excinfo.value.__cause__, ValueError)


def test_corrupted_entry_can_be_overwritten() -> None:
    keyring.set_password(SERVICE, USERNAME, "garbage")
    storage = KeyringStorage(SERVICE, USERNAME)

    storage.save(TOKEN)

    assert storage.load() == TOKEN


# --- KeyringStorage: backend failures --------------------------------------------------------


@pytest.mark.parametrize("operation", OPERATIONS)
def test_backend_error_becomes_storage_error_with_the_cause_chained(operation: Operation) -> None:
    error = OSError("org.freedesktop.secrets was not provided by any .service files")
    backend = MemoryKeyring()
    backend.fail(error=error)  # like a broken platform backend
    storage = KeyringStorage(SERVICE, USERNAME, backend=backend)

    with pytest.raises(TokenStorageError, match="OSError") as excinfo:
        operation(storage)

    assert excinfo.value.__cause__ is error
    assert f"{SERVICE!r}/{USERNAME!r}" in str(excinfo.value)
    assert_no_secret(excinfo.value)


def test_error_of_the_selected_keyring_becomes_storage_error() -> None:
    error = keyring.errors.KeyringLocked("the collection is locked")
    backend = MemoryKeyring()
    backend.fail(error=error)
    keyring.set_keyring(backend)

    with pytest.raises(TokenStorageError) as excinfo:
        KeyringStorage(SERVICE, USERNAME).save(TOKEN)

    assert excinfo.value.__cause__ is error
    assert_no_secret(excinfo.value)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_no_keyring_backend_names_the_ways_out(operation: Operation) -> None:
    keyring.set_keyring(keyring.backends.fail.Keyring())

    with pytest.raises(TokenStorageError) as excinfo:
        operation(KeyringStorage(SERVICE, USERNAME))

    message = str(excinfo.value)
    for way_out in ("keyrings.alt", "MemoryStorage", "Secret Service"):
        assert way_out in message
    assert isinstance(excinfo.value.__cause__, keyring.errors.NoKeyringError)
    assert_no_secret(excinfo.value)


# --- KeyringStorage: construction ------------------------------------------------------------


def test_backend_argument_is_used_instead_of_the_selected_keyring() -> None:
    own = MemoryKeyring()
    storage = KeyringStorage(SERVICE, USERNAME, backend=own)

    storage.save(TOKEN)

    assert (SERVICE, USERNAME) in own.entries
    assert keyring.get_password(SERVICE, USERNAME) is None
    assert storage.load() == TOKEN
    storage.delete()
    assert own.entries == {}


@pytest.mark.parametrize(
    ("service", "username", "named"),
    [
        ("", USERNAME, "service"),
        (None, USERNAME, "service"),
        (SERVICE, "", "username"),
        (SERVICE, 42, "username"),
    ],
)
def test_invalid_service_or_username_raises_value_error(service: Any, username: Any, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        KeyringStorage(service, username)


def test_keyring_storage_repr_shows_service_and_username_only() -> None:
    storage = KeyringStorage(SERVICE, USERNAME, backend=MemoryKeyring())
    storage.save(TOKEN)

    assert repr(storage) == f"KeyringStorage(service={SERVICE!r}, username={USERNAME!r})"
