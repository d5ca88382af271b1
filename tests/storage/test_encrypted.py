"""EncryptedStorage over every backend: what each store shows, keys and their rotation, refusals, the lease.

Redis is a real redis-server on 127.0.0.1 (tests/redis_support.py); the keyring is the test's
in-memory keyring (tests/conftest.py).
"""

from __future__ import annotations

import base64
import collections
import functools
import json
import os
import pickle
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from requests_tokenrefresh import (
    EncryptedStorage,
    EncryptionKeys,
    FileStorage,
    KeyringStorage,
    MemoryStorage,
    RedisStorage,
    RefreshLease,
    SessionExpiredError,
    Token,
    TokenRefreshAdapter,
    TokenStorage,
    TokenStorageError,
    logout,
)
from requests_tokenrefresh.storage.encrypted import ENCRYPTED_MARKER, INSTALL_HELP
from requests_tokenrefresh.testing import AuthServer, MemoryKeyring

from ..redis_support import INSTALL_HELP as SERVER_HELP
from ..redis_support import RedisServer, redis_server_path

ACCESS = "at-3f9c1e7a-access-secret"
REFRESH = "rt-8b2d4c6e-refresh-secret"
TOKEN = Token(ACCESS, REFRESH, expires_at=1_700_003_600.0, obtained_at=1_700_000_000.0, extra={"user": "u-4411"})
K1 = bytes(range(32))
K2 = bytes(range(100, 132))
K1_TEXT = base64.b64encode(K1).decode()
K2_TEXT = base64.b64encode(K2).decode()
K2_URLSAFE = base64.urlsafe_b64encode(K2).rstrip(b"=").decode()  # a valid key id too: a key written first
SECRETS = (ACCESS, REFRESH, "u-4411")


def assert_no_secret(text: str) -> None:
    for secret in (*SECRETS, K1_TEXT, K2_TEXT, repr(K1), repr(K2)):
        assert secret not in text


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if redis_server_path() is None:
        pytest.fail(SERVER_HELP)
    with RedisServer(tmp_path_factory.mktemp("redis")) as srv:
        yield srv


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[Any]:
    c = redis_server.client()
    yield c
    c.close()


@pytest.fixture
def redis_storage(redis_server: RedisServer) -> Iterator[Callable[[str], RedisStorage]]:
    made: list[RedisStorage] = []

    def make(key: str) -> RedisStorage:
        made.append(RedisStorage(redis_server.url, key=key))
        return made[-1]

    yield make
    for storage in made:
        storage.close()


@pytest.fixture
def inner(
    request: pytest.FixtureRequest, tmp_path: Path, redis_storage: Callable[[str], RedisStorage]
) -> Callable[[str], TokenStorage]:
    """``inner(entry)``: a storage of the test's kind for entry ``entry`` (a file, keyring user, Redis key)."""
    kind = request.param
    if kind == "file":
        return lambda entry: FileStorage(tmp_path / f"{entry}.json")
    if kind == "keyring":
        return lambda entry: KeyringStorage("example-api", entry)
    prefix = uuid.uuid4().hex[:8]
    return lambda entry: redis_storage(f"test-api:{prefix}:{entry}")


def raw_record(storage: TokenStorage, client: Any, memory_keyring: MemoryKeyring) -> str:
    """What the store itself shows: the file's text, ``keyring get``, ``redis-cli GET``."""
    if isinstance(storage, FileStorage):
        return Path(storage.path).read_text(encoding="utf-8")
    if isinstance(storage, KeyringStorage):
        return memory_keyring.get_password(storage.service, storage.username) or ""
    assert isinstance(storage, RedisStorage)
    value = client.get(storage.key)
    return value.decode() if isinstance(value, bytes) else str(value)


def put_raw(storage: TokenStorage, raw: str, client: Any, memory_keyring: MemoryKeyring) -> None:
    if isinstance(storage, FileStorage):
        fd = os.open(storage.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8") as f:
            f.write(raw)
    elif isinstance(storage, KeyringStorage):
        memory_keyring.set_password(storage.service, storage.username, raw)
    else:
        assert isinstance(storage, RedisStorage)
        client.set(storage.key, raw)


BACKENDS = pytest.mark.parametrize("inner", ["file", "keyring", "redis"], indirect=True)


# -- round trip and what each store shows ---------------------------------------------------------


def test_round_trip_over_memory_storage() -> None:
    memory = MemoryStorage()
    storage = EncryptedStorage(memory, keys={"k1": K1})

    assert storage.load() is None
    storage.save(TOKEN)
    stored = memory.load()

    assert stored is not None
    assert stored.access_token == ENCRYPTED_MARKER
    assert stored.refresh_token is None
    assert storage.load().to_record() == TOKEN.to_record()  # type: ignore[union-attr]
    assert_no_secret(json.dumps(stored.to_record()))
    storage.delete()
    assert memory.load() is None
    assert storage.load() is None


@BACKENDS
def test_the_store_shows_no_byte_of_the_tokens(
    inner: Callable[[str], TokenStorage], client: Any, memory_keyring: MemoryKeyring
) -> None:
    plain = inner("alice")
    storage = EncryptedStorage(plain, keys={"k1": K1})

    storage.save(TOKEN)
    raw = raw_record(plain, client, memory_keyring)
    header = json.loads(raw)["extra"]["encrypted"]

    assert_no_secret(raw)
    assert header["v"] == 1
    assert header["kid"] == "k1"
    assert json.loads(raw)["expires_at"] == TOKEN.expires_at  # in clear, for operators
    assert storage.load().to_record() == TOKEN.to_record()  # type: ignore[union-attr]


def test_the_token_file_keeps_its_mode(tmp_path: Path) -> None:
    storage = EncryptedStorage(FileStorage(tmp_path / "token.json"), keys={"k1": K1})

    storage.save(TOKEN)

    assert (tmp_path / "token.json").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["token.json"]  # the temporary file was renamed


def test_every_write_has_a_new_nonce() -> None:
    memory = MemoryStorage()
    storage = EncryptedStorage(memory, keys={"k1": K1})
    seen = set()
    for _ in range(3):
        storage.save(TOKEN)
        seen.add(memory.load().extra["encrypted"]["data"])  # type: ignore[union-attr]

    assert len(seen) == 3


# -- the record format, as earlier versions wrote and read it ---------------------------------------

# TOKEN as EncryptedStorage(KeyringStorage("example-api", "alice"), keys={"k1": K1}) of 0.2 stored it.
RECORD_V1 = (
    '{"access_token":"requests-tokenrefresh-encrypted","expires_at":1700003600.0,"extra":{"encrypted":{"data":'
    '"xGxLVvpP-04q36e7AOysh50CUyzmJHzSAB5oMAmZhHp99nkpcWm8HbkkJVpTC2xfLlFE83LcxqX5r2qw3KmPHamUtNql1zD02dzsGQ5fWx'
    "hAqb7I8dKtKFVg5-zq4XdfrcJiQSHhrCKo83riQ_hpayvhGPVOCT-bwLhGa9aQA2VHUKPH3fzVlbsdXqoyVs0lm3xWxkmjAmk7UPlD_kEu2T"
    "YPdkDG1QlgfGPedPW3KyCTaP0xuhOejYGI4209VSz0LVyU-13JGSJtbxG-MrT5b8U84fZxeMKWMixl1SesIvxLWzau_vMDWGuwC4xIaqBhyG"
    'UA","kid":"k1","v":1}},"obtained_at":1700000000.0,"refresh_token":null,"scope":null,"token_type":"Bearer",'
    '"version":1}'
)


def test_a_record_an_earlier_version_stored_still_loads(memory_keyring: MemoryKeyring) -> None:
    memory_keyring.set_password("example-api", "alice", RECORD_V1)
    storage = EncryptedStorage(KeyringStorage("example-api", "alice"), keys={"k1": K1})

    assert storage.load().to_record() == TOKEN.to_record()  # type: ignore[union-attr]


def test_a_record_stored_now_is_the_format_earlier_versions_read(memory_keyring: MemoryKeyring) -> None:
    """Read as the format is written down, so that hosts still running an earlier version read it."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    memory = MemoryStorage()
    EncryptedStorage(memory, keys={"k1": K1}).save(TOKEN)
    EncryptedStorage(KeyringStorage("example-api", "alice"), keys={"k1": K1}).save(TOKEN)
    stored = json.loads(memory_keyring.get_password("example-api", "alice") or "")
    header = stored["extra"]["encrypted"]
    raw = base64.urlsafe_b64decode(header["data"])  # padded URL-safe base64 of the nonce and the ciphertext
    plain = AESGCM(K1).decrypt(raw[:12], raw[12:], b"requests-tokenrefresh:v1:k1\0keyring\0example-api\0alice\0")

    assert header["data"] == base64.urlsafe_b64encode(raw).decode()
    assert stored == {**json.loads(RECORD_V1), "extra": {"encrypted": {"v": 1, "kid": "k1", "data": header["data"]}}}
    assert json.loads(plain) == TOKEN.to_record()
    stand_in = memory.load()
    assert stand_in is not None
    assert stand_in == Token(
        ENCRYPTED_MARKER, expires_at=TOKEN.expires_at, obtained_at=TOKEN.obtained_at, extra=stand_in.extra
    )
    assert dict(stand_in.extra) == {"encrypted": stand_in.extra["encrypted"]}


# -- keys and rotation -------------------------------------------------------------------------


def test_rotation_old_key_decrypts_and_the_new_one_encrypts_at_the_next_save() -> None:
    memory = MemoryStorage()
    EncryptedStorage(memory, keys={"k1": K1}).save(TOKEN)
    rotated = EncryptedStorage(memory, keys={"k2": K2, "k1": K1})

    assert rotated.load().to_record() == TOKEN.to_record()  # type: ignore[union-attr]
    assert memory.load().extra["encrypted"]["kid"] == "k1"  # type: ignore[union-attr]  # a load writes nothing
    rotated.save(TOKEN)
    assert memory.load().extra["encrypted"]["kid"] == "k2"  # type: ignore[union-attr]


def test_hosts_with_the_old_and_the_new_key_sets_read_each_other_during_a_rotation() -> None:
    """Step 1 deploys k2 to every host as a decrypting key; step 2 makes it the first."""
    memory = MemoryStorage()
    step1 = EncryptedStorage(memory, keys={"k1": K1, "k2": K2})
    step2 = EncryptedStorage(
        memory, keys=EncryptionKeys.from_env("KEYS", environ={"KEYS": f"k2:{K2_TEXT},k1:{K1_TEXT}"})
    )

    for writer, reader in ((step1, step2), (step2, step1), (step1, step1), (step2, step2)):
        writer.save(TOKEN)
        assert reader.load().to_record() == TOKEN.to_record()  # type: ignore[union-attr]


def test_from_env_reads_key_ids_newest_first_in_either_base64_alphabet() -> None:
    urlsafe = base64.urlsafe_b64encode(K2).decode().rstrip("=")
    keys = EncryptionKeys.from_env("KEYS", environ={"KEYS": f" k2:{urlsafe} , k1:{K1_TEXT}"})

    assert keys.ids == ("k2", "k1")
    assert keys == EncryptionKeys({"k2": K2, "k1": K1})


def test_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTR_TEST_KEYS", f"k1:{K1_TEXT}")

    assert EncryptionKeys.from_env("RTR_TEST_KEYS").ids == ("k1",)


@pytest.mark.parametrize(
    ("keys", "match"),
    [
        ({}, "no encryption key"),
        ({"k1": K1[:16]}, "'k1' is 16 bytes long: AES-256-GCM needs 32"),
        ({"k1": K1_TEXT}, "'k1' must be 32 bytes, not str"),
        ({"bad id": K1}, "key id must be"),
        ({"": K1}, "key id must be"),
        ([("k1", K1)], "must be a mapping"),
    ],
    ids=["empty", "short", "text", "space-in-id", "empty-id", "not-a-mapping"],
)
def test_bad_keys_are_a_clear_value_error(keys: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        EncryptionKeys(keys)

    assert_no_secret(str(info.value))


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (None, "KEYS is not set"),
        ("  ", "KEYS is empty"),
        (K1_TEXT, "entry 1 of KEYS is not key_id:base64-key"),
        (f"k1:{K1_TEXT},:{K2_TEXT}", "entry 2 of KEYS is not key_id:base64-key"),
        (f"k1:{K1_TEXT[:-4]}!!!=", r"entry 1 of KEYS \(key id 'k1'\): the key is not valid base64"),
        (f"k1:{base64.b64encode(K1[:31]).decode()}", "the key is 31 bytes long"),
        (f"k1:{K1_TEXT},k1:{K2_TEXT}", "key id 'k1' is given twice"),
        (f"k 1:{K1_TEXT}", "bad key id"),
        (f"k:1:{K1_TEXT}", "bad key id"),
        (f"{K2_URLSAFE}:k1", "a key id as long as a key \\(not shown\\)"),
        (f"{K2_URLSAFE}:{K1_TEXT},{K2_URLSAFE}:{K1_TEXT}", "a key id as long as a key \\(not shown\\) is given twice"),
    ],
    ids=[
        "unset",
        "blank",
        "no-id",
        "empty-id",
        "bad-base64",
        "short",
        "duplicate",
        "bad-id",
        "colon-in-id",
        "key-first",
        "key-first-twice",
    ],
)
def test_bad_environment_variable_is_a_clear_value_error(value: str | None, match: str) -> None:
    environ = {} if value is None else {"KEYS": value}

    with pytest.raises(ValueError, match=match) as info:
        EncryptionKeys.from_env("KEYS", environ=environ)

    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__
    assert_no_secret(str(info.value))
    assert K1_TEXT[:-4] not in str(info.value)
    assert K2_URLSAFE not in str(info.value)


def test_keys_are_immutable_and_not_pickled() -> None:
    keys = EncryptionKeys({"k1": K1})

    with pytest.raises(AttributeError):
        keys._keys = ()  # type: ignore[misc]
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(keys)
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(EncryptedStorage(MemoryStorage(), keys=keys))


def test_reprs_show_key_ids_only(tmp_path: Path) -> None:
    storage = EncryptedStorage(FileStorage(tmp_path / "t.json"), keys={"k2": K2, "k1": K1})
    storage.save(TOKEN)

    assert repr(storage.keys) == "EncryptionKeys(ids=('k2', 'k1'))"
    assert repr(storage) == f"EncryptedStorage(FileStorage({str(tmp_path / 't.json')!r}), keys={storage.keys!r})"
    assert_no_secret(repr(storage) + repr(storage.load()))


# -- refusals: keys it lacks, copied records, plaintext ------------------------------------------


@BACKENDS
def test_a_record_copied_to_another_entry_does_not_decrypt(
    inner: Callable[[str], TokenStorage], client: Any, memory_keyring: MemoryKeyring
) -> None:
    alice, bob = inner("alice"), inner("bob")
    EncryptedStorage(alice, keys={"k1": K1}).save(TOKEN)
    put_raw(bob, raw_record(alice, client, memory_keyring), client, memory_keyring)

    with pytest.raises(TokenStorageError, match="key id 'k1' does not decrypt") as info:
        EncryptedStorage(bob, keys={"k1": K1}).load()

    assert_no_secret(str(info.value))
    assert bob.load() is not None  # left as it is


def test_the_same_file_through_a_symlinked_directory_decrypts(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data", target_is_directory=True)
    EncryptedStorage(FileStorage(tmp_path / "link" / "token.json"), keys={"k1": K1}).save(TOKEN)

    assert EncryptedStorage(FileStorage(tmp_path / "data" / "token.json"), keys={"k1": K1}).load() == TOKEN


def test_context_binds_the_record_of_a_storage_of_unknown_identity() -> None:
    memory = MemoryStorage()
    EncryptedStorage(memory, keys={"k1": K1}, context="alice").save(TOKEN)

    assert EncryptedStorage(memory, keys={"k1": K1}, context="alice").load() is not None
    with pytest.raises(TokenStorageError, match="does not decrypt"):
        EncryptedStorage(memory, keys={"k1": K1}, context="bob").load()


@BACKENDS
def test_a_missing_key_is_an_error_naming_its_id_and_the_record_stays(
    inner: Callable[[str], TokenStorage], client: Any, memory_keyring: MemoryKeyring
) -> None:
    plain = inner("alice")
    EncryptedStorage(plain, keys={"k2": K2}).save(TOKEN)
    before = raw_record(plain, client, memory_keyring)

    with pytest.raises(TokenStorageError, match="key id 'k2', which this EncryptedStorage does not have") as info:
        EncryptedStorage(plain, keys={"k1": K1}).load()

    assert_no_secret(str(info.value))
    assert raw_record(plain, client, memory_keyring) == before


def test_a_wrong_key_under_the_same_id_is_an_error_naming_the_id() -> None:
    memory = MemoryStorage()
    EncryptedStorage(memory, keys={"k1": K1}).save(TOKEN)

    with pytest.raises(TokenStorageError, match="key id 'k1' does not decrypt"):
        EncryptedStorage(memory, keys={"k1": K2}).load()
    lease = EncryptedStorage(memory, keys={"k1": K2}).refresh_lease(5)
    with pytest.raises(TokenStorageError, match="key id 'k1' does not decrypt"), lease:
        lease.load()
    assert memory.load() is not None


def test_an_altered_record_does_not_decrypt() -> None:
    memory = MemoryStorage()
    storage = EncryptedStorage(memory, keys={"k1": K1})
    storage.save(TOKEN)
    record = memory.load().to_record()  # type: ignore[union-attr]
    data = base64.urlsafe_b64decode(record["extra"]["encrypted"]["data"])
    record["extra"]["encrypted"]["data"] = base64.urlsafe_b64encode(data[:-1] + bytes([data[-1] ^ 1])).decode()
    memory.save(Token.from_record(record))

    with pytest.raises(TokenStorageError, match="does not decrypt"):
        storage.load()


@pytest.mark.parametrize(
    ("header", "match"),
    [(None, "no header"), ({"v": 2, "kid": "k1", "data": ""}, "version 2.*newer version"), ({"v": 1}, "bad header")],
    ids=["none", "newer", "incomplete"],
)
def test_a_damaged_or_newer_header_is_a_clear_error(header: Any, match: str) -> None:
    memory = MemoryStorage(Token(ENCRYPTED_MARKER, extra={} if header is None else {"encrypted": header}))

    with pytest.raises(TokenStorageError, match=match):
        EncryptedStorage(memory, keys={"k1": K1}).load()


@BACKENDS
def test_a_plaintext_record_is_refused_and_left_as_it_is(
    inner: Callable[[str], TokenStorage], client: Any, memory_keyring: MemoryKeyring
) -> None:
    plain = inner("alice")
    plain.save(TOKEN)
    storage = EncryptedStorage(plain, keys={"k1": K1})

    with pytest.raises(TokenStorageError, match=r"in clear.*migrate=True") as info:
        storage.load()
    with pytest.raises(TokenStorageError, match="in clear"), storage.refresh_lease(5) as lease:
        lease.load()

    assert_no_secret(str(info.value))
    assert plain.load() == TOKEN


@BACKENDS
def test_migrate_encrypts_a_plaintext_record_once_on_load(
    inner: Callable[[str], TokenStorage], client: Any, memory_keyring: MemoryKeyring
) -> None:
    plain = inner("alice")
    plain.save(TOKEN)
    storage = EncryptedStorage(plain, keys={"k1": K1}, migrate=True)

    assert storage.load().to_record() == TOKEN.to_record()  # type: ignore[union-attr]
    assert_no_secret(raw_record(plain, client, memory_keyring))
    assert EncryptedStorage(plain, keys={"k1": K1}).load().to_record() == TOKEN.to_record()  # type: ignore[union-attr]


def test_migrate_does_not_hide_a_record_encrypted_meanwhile_under_a_key_it_lacks() -> None:
    # The first read finds the record in clear; by the time the lease is taken, another host has
    # encrypted it under a key this one does not have: that is the error, not the stale token.
    encrypted = MemoryStorage()
    EncryptedStorage(encrypted, keys={"k2": K2}).save(TOKEN)

    class EncryptedMeanwhile(MemoryStorage):
        reads = 0

        def load(self) -> Token | None:
            self.reads += 1
            return TOKEN if self.reads == 1 else super().load()

    storage = EncryptedStorage(EncryptedMeanwhile(encrypted.load()), keys={"k1": K1}, migrate=True)
    with pytest.raises(TokenStorageError, match="key id 'k2'"):
        storage.load()


def test_migrate_inside_a_lease_reads_the_plaintext_and_the_holder_saves_it_encrypted() -> None:
    memory = MemoryStorage(TOKEN)
    storage = EncryptedStorage(memory, keys={"k1": K1}, migrate=True)

    with storage.refresh_lease(5) as lease:
        assert lease.load() == TOKEN
        assert storage.load() == TOKEN  # no second lease taken by the thread holding one
        assert memory.load() == TOKEN
        lease.save(TOKEN)

    assert memory.load().access_token == ENCRYPTED_MARKER  # type: ignore[union-attr]


# -- the lease ---------------------------------------------------------------------------------


class RecordingLease(RefreshLease):
    fenced = True

    def __init__(self, storage: TokenStorage) -> None:
        super().__init__(storage)
        self.calls: list[tuple[str, Any]] = []
        self.fence = 41

    def __enter__(self) -> RefreshLease:
        self.calls.append(("enter", None))
        self.lost = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.calls.append(("exit", exc_info[0]))

    def load(self) -> Token | None:
        self.calls.append(("load", None))
        self.interrupted = True
        return super().load()

    def check(self, seconds: float) -> None:
        self.calls.append(("check", seconds))

    def forget(self) -> None:
        self.calls.append(("forget", None))

    def extend(self, seconds: float) -> None:
        self.calls.append(("extend", seconds))

    def save(self, token: Token) -> None:
        self.calls.append(("save", token.access_token))
        super().save(token)


class RecordingStorage(MemoryStorage):
    def refresh_lease(self, timeout: float) -> RefreshLease:
        self.lease = RecordingLease(self)
        return self.lease


def test_the_lease_forwards_every_member_to_the_inner_lease() -> None:
    memory = RecordingStorage()
    storage = EncryptedStorage(memory, keys={"k1": K1})
    storage.save(TOKEN)

    with storage.refresh_lease(5) as lease:
        assert lease.storage is storage
        assert lease.fenced is True
        assert lease.fence == 41
        assert lease.lost is True
        assert lease.interrupted is False
        assert lease.load() == TOKEN
        assert lease.interrupted is True  # set by the inner load
        lease.check(3.0)
        lease.extend(4.0)
        lease.forget()
        lease.save(TOKEN)
        lease.interrupted = False
        assert memory.lease.interrupted is False

    assert memory.lease.calls == [
        ("enter", None),
        ("load", None),
        ("check", 3.0),
        ("extend", 4.0),
        ("forget", None),
        ("save", ENCRYPTED_MARKER),
        ("exit", None),
    ]


def test_the_redis_lease_stays_fenced(redis_storage: Callable[[str], RedisStorage]) -> None:
    plain = redis_storage(f"test-api:{uuid.uuid4().hex[:8]}")
    storage = EncryptedStorage(plain, keys={"k1": K1})
    storage.save(TOKEN)

    with storage.refresh_lease(5) as lease:
        assert lease.fenced is True
        assert lease.load() == TOKEN
        version = lease.version  # type: ignore[attr-defined]
        plain.save(TOKEN)  # another writer
        with pytest.raises(TokenStorageError, match="written by another holder"):
            lease.save(TOKEN)
    assert version > 0


def test_missing_cryptography_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)

    with pytest.raises(ImportError, match=r"pip install requests-tokenrefresh\[crypto\]") as info:
        EncryptedStorage(MemoryStorage(), keys={"k1": K1})

    assert str(info.value) == INSTALL_HELP


# -- with the adapter --------------------------------------------------------------------------


def test_the_adapter_does_not_sign_out_over_a_record_it_cannot_decrypt(tmp_path: Path, expired: Any) -> None:
    with AuthServer(ttl=3600, rotation="reuse-detection") as srv:
        plain = FileStorage(tmp_path / "token.json")
        EncryptedStorage(plain, keys={"k2": K2}).save(expired(srv.issue()))
        before = (tmp_path / "token.json").read_bytes()
        adapter = TokenRefreshAdapter(EncryptedStorage(plain, keys={"k1": K1}), token_url=srv.token_url)
        with requests.Session() as session:
            session.mount(srv.url + "/", adapter)
            for _ in range(2):
                with pytest.raises(TokenStorageError, match="key id 'k2'") as info:
                    session.get(srv.url + "/api/data", timeout=30)
                assert not isinstance(info.value, SessionExpiredError)

        assert srv.refresh_calls == 0
        assert (tmp_path / "token.json").read_bytes() == before


def test_an_adapter_without_the_wrapper_does_not_use_or_delete_an_encrypted_record(
    tmp_path: Path, expired: Any
) -> None:
    # A host deployed without EncryptedStorage (a rollout, a forgotten service) reads the stand-in:
    # its marker must not go out as an access token, and its missing refresh token must not be
    # taken for a sign-out that deletes the record every other host reads.
    with AuthServer(ttl=3600, rotation="reuse-detection") as srv:
        plain = FileStorage(tmp_path / "token.json")
        EncryptedStorage(plain, keys={"k1": K1}).save(expired(srv.issue()))
        before = (tmp_path / "token.json").read_bytes()
        adapter = TokenRefreshAdapter(FileStorage(tmp_path / "token.json"), token_url=srv.token_url)
        with requests.Session() as session:
            session.mount(srv.url + "/", adapter)
            for _ in range(2):
                with pytest.raises(TokenStorageError, match=r"^FileStorage\('.*'\) holds an encrypted record") as info:
                    session.get(srv.url + "/api/data", timeout=30)
                assert not isinstance(info.value, SessionExpiredError)
        with pytest.raises(TokenStorageError, match="encrypted record"):
            adapter.logout()
        with pytest.raises(TokenStorageError, match="encrypted record"):
            logout(FileStorage(tmp_path / "token.json"), revocation_url=srv.url + "/revoke")
        assert (srv.refresh_calls, srv.api_calls) == (0, 0)
        assert (tmp_path / "token.json").read_bytes() == before


@pytest.mark.parametrize("how", ["adapter.logout", "logout"])
def test_a_logout_leaves_a_record_it_cannot_decrypt_and_revokes_nothing(how: str, tmp_path: Path) -> None:
    with AuthServer(ttl=3600) as srv:
        plain = FileStorage(tmp_path / "token.json")
        EncryptedStorage(plain, keys={"k2": K2}).save(Token.from_response(srv.issue()))
        before = (tmp_path / "token.json").read_bytes()
        storage = EncryptedStorage(plain, keys={"k1": K1})
        if how == "logout":
            sign_out = functools.partial(logout, storage, revocation_url=srv.url + "/revoke")
        else:
            sign_out = TokenRefreshAdapter(storage, token_url=srv.token_url, revocation_url=srv.url + "/revoke").logout
        with pytest.raises(TokenStorageError, match="key id 'k2'"):
            sign_out()
        assert srv.revocation_log == []
        assert (tmp_path / "token.json").read_bytes() == before


def test_adapters_over_encrypted_redis_refresh_once(
    redis_storage: Callable[[str], RedisStorage],
    client: Any,
    run_threads: Callable[..., None],
    expired: Callable[..., Token],
) -> None:
    """Two adapters ("hosts") x 12 threads on an expired token: one refresh, stored encrypted."""
    key = f"test-api:{uuid.uuid4().hex[:8]}"
    keys = {"k1": K1}
    with AuthServer(ttl=3600, rotation="reuse-detection") as srv:
        EncryptedStorage(redis_storage(key), keys=keys).save(expired(srv.issue()))
        sessions = []
        for _ in range(2):
            adapter = TokenRefreshAdapter(
                EncryptedStorage(redis_storage(key), keys=keys), token_url=srv.token_url, pool_maxsize=32
            )
            session = requests.Session()
            session.mount(srv.url + "/", adapter)
            sessions.append(session)
        statuses: list[int] = []

        def send(i: int) -> None:
            statuses.append(sessions[i % 2].get(srv.url + "/api/data", timeout=30).status_code)

        run_threads(24, send, timeout=60)

        assert statuses == [200] * 24
        assert srv.refresh_calls == 1
        assert not srv.revoked
        stored = EncryptedStorage(redis_storage(key), keys=keys).load()
        assert stored is not None
        assert stored.refresh_token == srv._families[1].current_refresh
        raw = client.get(key).decode()
        assert stored.access_token not in raw
        assert stored.refresh_token not in raw
        assert json.loads(raw)["access_token"] == ENCRYPTED_MARKER


def test_the_adapter_takes_no_lease_over_an_empty_store_whose_writes_are_atomic() -> None:
    """After a sign-out each request costs one read of a Redis or memory store, not a lease (the inner storage's
    ``_atomic_writes``); a token file is read again inside the lease, since a reader may see it half written."""

    class CountingStorage(MemoryStorage):
        leases = 0

        def refresh_lease(self, timeout: float) -> RefreshLease:
            self.leases += 1
            return super().refresh_lease(timeout)

    counting = CountingStorage()
    adapter = TokenRefreshAdapter(EncryptedStorage(counting, keys={"k1": K1}), token_url="https://auth.example/token")
    with requests.Session() as session:
        session.mount("https://api.example/", adapter)
        for _ in range(2):
            with pytest.raises(SessionExpiredError, match="no token is stored"):
                session.get("https://api.example/items", timeout=5)

    assert counting.leases == 0
    assert EncryptedStorage(FileStorage("/nonexistent/token.json"), keys={"k1": K1})._atomic_writes is False


# -- rekey: the record under the newest key, inside the lease ---------------------------------------


@BACKENDS
def test_rekey_moves_the_record_to_the_newest_key_and_then_writes_nothing(
    inner: Callable[[str], TokenStorage], client: Any, memory_keyring: MemoryKeyring
) -> None:
    plain = inner("alice")
    EncryptedStorage(plain, keys={"k1": K1}).save(TOKEN)
    rotated = EncryptedStorage(plain, keys={"k2": K2, "k1": K1})

    assert rotated.rekey() == ("k1", "k2")
    moved = raw_record(plain, client, memory_keyring)
    assert json.loads(moved)["extra"]["encrypted"]["kid"] == "k2"
    assert_no_secret(moved)
    assert EncryptedStorage(plain, keys={"k2": K2}).load() == TOKEN  # k1 may go now
    assert rotated.rekey() == ("k2", "k2")
    assert raw_record(plain, client, memory_keyring) == moved  # nothing written


@BACKENDS
def test_rekey_leaves_a_record_it_cannot_decrypt_and_names_its_key_id(
    inner: Callable[[str], TokenStorage], client: Any, memory_keyring: MemoryKeyring
) -> None:
    plain = inner("alice")
    EncryptedStorage(plain, keys={"k9": K1}).save(TOKEN)
    before = raw_record(plain, client, memory_keyring)

    with pytest.raises(TokenStorageError, match="key id 'k9', which this EncryptedStorage does not have"):
        EncryptedStorage(plain, keys={"k2": K2, "k1": K1}).rekey()
    with pytest.raises(TokenStorageError, match="key id 'k9' does not decrypt"):
        EncryptedStorage(plain, keys={"k2": K2, "k9": K2}).rekey()

    assert raw_record(plain, client, memory_keyring) == before


def test_rekey_encrypts_a_plaintext_record_only_with_migrate() -> None:
    memory = MemoryStorage(TOKEN)

    with pytest.raises(TokenStorageError, match=r"in clear.*migrate=True"):
        EncryptedStorage(memory, keys={"k1": K1}).rekey()
    assert memory.load() == TOKEN

    assert EncryptedStorage(memory, keys={"k1": K1}, migrate=True).rekey() == (None, "k1")
    assert memory.load().access_token == ENCRYPTED_MARKER  # type: ignore[union-attr]
    assert EncryptedStorage(memory, keys={"k1": K1}).load() == TOKEN


def test_rekey_with_nothing_stored_is_an_error() -> None:
    with pytest.raises(TokenStorageError, match="holds no token record: nothing to re-encrypt"):
        EncryptedStorage(MemoryStorage(), keys={"k1": K1}).rekey()


def test_rekey_reads_and_writes_inside_the_inner_lease() -> None:
    class QuietLease(RecordingLease):  # no earlier holder interrupted, no write lost
        def __enter__(self) -> RefreshLease:
            self.calls.append(("enter", None))
            return self

        def load(self) -> Token | None:
            self.calls.append(("load", None))
            return self.storage.load()

    class QuietStorage(MemoryStorage):
        def refresh_lease(self, timeout: float) -> RefreshLease:
            self.lease = QuietLease(self)
            return self.lease

    memory = QuietStorage()
    EncryptedStorage(memory, keys={"k1": K1}).save(TOKEN)

    EncryptedStorage(memory, keys={"k2": K2, "k1": K1}).rekey()

    assert memory.lease.calls == [("enter", None), ("load", None), ("save", ENCRYPTED_MARKER), ("exit", None)]
    memory.save(TOKEN)  # in clear
    with pytest.raises(TokenStorageError, match="in clear"):
        EncryptedStorage(memory, keys={"k1": K1}).rekey()
    assert memory.lease.calls == [("enter", None), ("load", None), ("exit", TokenStorageError)]


def test_rekey_waits_for_a_refresh_in_flight_and_keeps_its_token(
    redis_storage: Callable[[str], RedisStorage], client: Any
) -> None:
    """A host refreshes under k1 while rekey waits for the lease: rekey then moves the new token, not the old one."""
    key = f"test-api:{uuid.uuid4().hex[:8]}"
    host = EncryptedStorage(redis_storage(key), keys={"k1": K1, "k2": K2})
    host.save(TOKEN)
    refreshed = Token("at-new-access-secret", "rt-new-refresh-secret", expires_at=1_700_007_200.0)
    result: list[Any] = []
    with host.refresh_lease(5) as lease:
        assert lease.load() == TOKEN
        rekeyer = threading.Thread(
            target=lambda: result.append(EncryptedStorage(redis_storage(key), keys={"k2": K2, "k1": K1}).rekey(5)),
            daemon=True,
        )
        rekeyer.start()
        rekeyer.join(0.3)
        assert rekeyer.is_alive()  # waiting for the lease
        lease.save(refreshed)
    rekeyer.join(10)

    assert not rekeyer.is_alive()
    assert result == [("k1", "k2")]
    assert json.loads(client.get(key))["extra"]["encrypted"]["kid"] == "k2"
    assert host.load() == refreshed


def test_rekey_does_not_hide_an_interrupted_refresh(redis_storage: Callable[[str], RedisStorage], client: Any) -> None:
    """A holder that may have sent the refresh token and died leaves a marker; a rekey write would erase it."""
    key = f"test-api:{uuid.uuid4().hex[:8]}"
    plain = redis_storage(key)
    EncryptedStorage(plain, keys={"k1": K1}).save(TOKEN)
    with plain.refresh_lease(5) as lease:
        lease.load()
        lease.check(1.0)  # the refresh request would go now; the holder dies without an answer
    before = client.get(key)

    with pytest.raises(TokenStorageError, match="may not have stored its answer yet"):
        EncryptedStorage(redis_storage(key), keys={"k2": K2, "k1": K1}).rekey(5)

    assert client.get(key) == before
    assert client.get(f"{key}:inflight") is not None


def test_hosts_rotating_keys_while_refreshing_lose_no_token(
    redis_storage: Callable[[str], RedisStorage], client: Any, expired: Callable[..., Token]
) -> None:
    """Two hosts hold {k1, k2} and {k2, k1} (a rotation half rolled out), refresh a token that lives 1 s and
    a third re-encrypts the record back and forth meanwhile: every request succeeds, no refresh token is
    presented twice, and the record stays readable by both."""
    key = f"test-api:{uuid.uuid4().hex[:8]}"
    old_first, new_first = {"k1": K1, "k2": K2}, {"k2": K2, "k1": K1}
    deadline = time.monotonic() + 2.5
    failures: list[str] = []
    rekeys: collections.Counter[tuple[str | None, str]] = collections.Counter()
    with AuthServer(ttl=1, rotation="reuse-detection") as srv:
        EncryptedStorage(redis_storage(key), keys=old_first).save(expired(srv.issue()))
        sessions = []
        for keys in (old_first, new_first):
            adapter = TokenRefreshAdapter(EncryptedStorage(redis_storage(key), keys=keys), token_url=srv.token_url)
            session = requests.Session()
            session.mount(srv.url + "/", adapter)
            sessions.append(session)

        def host(session: requests.Session) -> None:
            while time.monotonic() < deadline:
                try:
                    status = session.get(srv.url + "/api/data", timeout=30).status_code
                except requests.RequestException as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                else:
                    if status != 200:
                        failures.append(f"HTTP {status}")
                time.sleep(0.01)

        def rotate() -> None:
            rotators = [EncryptedStorage(redis_storage(key), keys=keys) for keys in (new_first, old_first)]
            turn = 0
            while time.monotonic() < deadline:
                try:
                    rekeys[rotators[turn % 2].rekey(5)] += 1
                except TokenStorageError as exc:  # none expected: the lease keeps it apart from refreshes
                    failures.append(f"rekey: {exc}")
                turn += 1
                time.sleep(0.05)

        threads = [threading.Thread(target=host, args=(s,), daemon=True) for s in sessions]
        threads.append(threading.Thread(target=rotate, daemon=True))
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)

        assert not [t for t in threads if t.is_alive()]
        assert failures == []
        assert rekeys[("k1", "k2")] >= 3
        assert rekeys[("k2", "k1")] >= 3
        assert srv.refresh_calls >= 3
        assert not srv.revoked
        for keys in (old_first, new_first):
            stored = EncryptedStorage(redis_storage(key), keys=keys).load()
            assert stored is not None
            assert stored.refresh_token == srv._families[1].current_refresh
        for session in sessions:
            session.close()
