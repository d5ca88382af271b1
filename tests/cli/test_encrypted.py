"""The command line over an encrypted record: ``--encrypted``, ``--keys-env``, ``--migrate`` and ``rekey``.

Each test runs against a token file and against a real redis-server on 127.0.0.1
(tests/redis_support.py, one server for the module, a key per test), the commands in this process
(``cli.main(argv)``, tests/cli_support.py) with the keys in the environment of that run only. What
the store holds is read as a user would: the file's bytes, ``GET key`` (and ``redis-cli GET`` once).
"""

from __future__ import annotations

import base64
import json
import shutil
import stat
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from requests_tokenrefresh import EncryptedStorage, FileStorage, RedisStorage, Token, TokenStorage
from requests_tokenrefresh._redact import fingerprint
from requests_tokenrefresh.cli.encryption import KEYS_ENV
from requests_tokenrefresh.testing import AuthServer, MemoryKeyring, use_keyring

from ..cli_support import Background, CommandLine, ReadOnlyKeyring, Result
from ..redis_support import INSTALL_HELP, RedisServer, redis_server_path
from .test_login import DEVICE_URL, approve_device

K1 = bytes(range(32))
K2 = bytes(range(100, 132))
K1_TEXT = base64.b64encode(K1).decode()
K2_TEXT = base64.b64encode(K2).decode()
OLD = {KEYS_ENV: f"k1:{K1_TEXT}"}
ROTATED = {KEYS_ENV: f"k2:{K2_TEXT},k1:{K1_TEXT}"}  # k2 encrypts, k1 still decrypts
NEW_ONLY = {KEYS_ENV: f"k2:{K2_TEXT}"}
USER_ID = "u-4411-private"


@dataclass
class Store:
    """One entry: the options that name it, the library's storage for it, and its bytes as the store shows them."""

    args: list[str]
    plain: TokenStorage
    raw: Callable[[], bytes | None]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if redis_server_path() is None:
        pytest.fail(INSTALL_HELP)
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(params=["file", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "file":
        path = tmp_path / "token.json"
        yield Store(["--file", str(path)], FileStorage(path), lambda: path.read_bytes() if path.exists() else None)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    key = f"example-api:{uuid.uuid4().hex[:8]}"
    client, storage = server.client(), RedisStorage(server.url, key=key)
    yield Store(["--redis", server.url, "--key", key], storage, lambda: client.get(key))
    storage.close()
    client.close()


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CommandLine:
    """``cli(*args, stdin="", env=None)``: run the command in this process, from ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    return CommandLine(capsys, monkeypatch)


@pytest.fixture
def auth_server() -> Iterator[AuthServer]:
    with AuthServer(ttl=3600, rotation="reuse-detection") as srv:
        yield srv


def login_response(server: AuthServer) -> dict[str, Any]:
    return {**server.issue(), "user": {"id": USER_ID}}


def keys(store: Store, keys_env: dict[str, str] = OLD) -> EncryptedStorage:
    """The library's EncryptedStorage over the same entry, as an application would make it."""
    return EncryptedStorage(store.plain, keys={kid: K1 if kid == "k1" else K2 for kid in _ids(keys_env)})


def _ids(keys_env: dict[str, str]) -> list[str]:
    return [entry.partition(":")[0] for entry in keys_env[KEYS_ENV].split(",")]


def kid(store: Store) -> str:
    raw = store.raw()
    assert raw is not None
    return str(json.loads(raw)["extra"]["encrypted"]["kid"])


def assert_shows_no_secret(text: str | bytes, *secrets: str) -> None:
    shown = text.decode() if isinstance(text, bytes) else text
    for secret in (*secrets, USER_ID, K1_TEXT, K2_TEXT, K1_TEXT[:16], K2_TEXT[:16]):
        assert secret not in shown


def assert_error(result: Result, *fragments: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("requests-tokenrefresh: error: ")
    for fragment in fragments:
        assert fragment in line
    assert_shows_no_secret(result.stdout + result.stderr)


def import_encrypted(cli: CommandLine, store: Store, response: dict[str, Any], env: dict[str, str] = OLD) -> None:
    result = cli("import", *store.args, "--encrypted", stdin=json.dumps(response), env=env)
    assert result.returncode == 0, result.stderr


# -- what the store shows, and the commands that read it ------------------------------------------


def test_import_stores_no_byte_of_the_tokens_and_status_reads_them(
    cli: CommandLine, store: Store, auth_server: AuthServer
) -> None:
    response = login_response(auth_server)
    secrets = (response["access_token"], response["refresh_token"])

    import_encrypted(cli, store, response)
    status = cli("status", *store.args, "--encrypted", "--json", env=OLD)

    raw = store.raw()
    assert raw is not None
    assert_shows_no_secret(raw, *secrets)
    assert kid(store) == "k1"
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["has_refresh_token"] is True
    assert info["extra_keys"] == ["user"]
    assert_shows_no_secret(status.stdout, *secrets)
    stored = keys(store).load()  # the application's EncryptedStorage reads what the command stored
    assert stored is not None
    assert (stored.access_token, stored.refresh_token) == secrets


def test_import_refuses_an_encrypted_records_stand_in(cli: CommandLine, store: Store, auth_server: AuthServer) -> None:
    # The stand-in an EncryptedStorage writes is a record whose access token is a marker: imported
    # as a token response, the marker would be sent as a token, with no refresh token behind it.
    import_encrypted(cli, store, login_response(auth_server))
    raw = store.raw()
    assert raw is not None

    result = cli("import", "--file", "copy.json", stdin=raw.decode() if isinstance(raw, bytes) else raw)

    assert_error(result, "stand-in", "not a token response")
    assert not Path("copy.json").exists()


def test_status_reads_what_an_application_stored(cli: CommandLine, store: Store) -> None:
    keys(store, ROTATED).save(Token("at-secret-access", "rt-secret-refresh", expires_at=4_000_000_000.0))

    result = cli("status", *store.args, "--encrypted", "--json", env=ROTATED)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["access_token_fingerprint"] == fingerprint("at-secret-access")
    assert_shows_no_secret(result.stdout, "at-secret-access", "rt-secret-refresh")


def test_redis_cli_get_shows_no_byte_of_the_tokens(
    cli: CommandLine, redis_server: RedisServer, auth_server: AuthServer
) -> None:
    redis_cli = shutil.which("redis-cli") or pytest.fail("redis-cli is not installed (it comes with redis-server)")
    key = f"example-api:{uuid.uuid4().hex[:8]}"
    response = login_response(auth_server)

    result = cli(
        "import", "--redis", redis_server.url, "--key", key, "--encrypted", stdin=json.dumps(response), env=OLD
    )
    shown = subprocess.run(
        [redis_cli, "-h", "127.0.0.1", "-p", str(redis_server.port), "GET", key],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout

    assert result.returncode == 0, result.stderr
    assert '"kid":"k1"' in shown
    assert_shows_no_secret(shown, response["access_token"], response["refresh_token"])


def test_refresh_with_keys_stores_the_new_tokens_encrypted(
    cli: CommandLine, store: Store, auth_server: AuthServer
) -> None:
    import_encrypted(cli, store, login_response(auth_server))

    result = cli("refresh", *store.args, "--encrypted", "--token-url", auth_server.token_url, env=OLD)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refreshed: access token ")
    assert auth_server.refresh_calls == 1
    new = keys(store).load()
    assert new is not None
    assert new.refresh_token == auth_server._families[1].current_refresh  # the rotated one, kept
    raw = store.raw()
    assert raw is not None
    assert_shows_no_secret(raw, new.access_token, new.refresh_token)
    assert_shows_no_secret(result.stdout, new.access_token, new.refresh_token)


def test_device_login_stores_the_token_encrypted(
    cli: CommandLine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token_file = tmp_path / "token.json"
    monkeypatch.setenv(KEYS_ENV, OLD[KEYS_ENV])
    with AuthServer(ttl=3600) as auth:
        auth.device_interval = 0.2
        login = ["login", "--file", str(token_file), "--encrypted", "--issuer", auth.issuer, "--client-id", "cli"]
        command = Background(monkeypatch, *login, "--device")
        try:
            approve_device(auth, command.wait_for(DEVICE_URL))
        finally:
            code = command.finish()

        assert code == 0, command.stderr
        assert command.stdout.startswith("logged in: token ")
        stored = EncryptedStorage(FileStorage(token_file), keys={"k1": K1}).load()
        assert stored is not None
        assert stored.access_token in auth._access
        assert_shows_no_secret(token_file.read_bytes(), stored.access_token, *filter(None, [stored.refresh_token]))
        assert_shows_no_secret(command.stdout + command.stderr, stored.access_token)


# -- keys it lacks, no keys, a record in clear: clear errors, the record untouched ---------------------


def command_args(command: str, server: AuthServer) -> list[str]:
    """What ``command`` needs besides the store: it fails on the record before it uses any of it."""
    return {
        "refresh": ["--token-url", server.token_url],
        "logout": ["--revocation-url", server.url + "/revoke"],
        "login": ["--issuer", server.issuer, "--client-id", "cli", "--device"],
    }.get(command, [])


@pytest.mark.parametrize("command", ["status", "refresh", "rekey", "logout", "import", "login"])
def test_a_wrong_key_set_is_an_error_naming_the_key_id_and_the_record_stays(
    cli: CommandLine, store: Store, auth_server: AuthServer, command: str
) -> None:
    import_encrypted(cli, store, login_response(auth_server))
    before = store.raw()
    encrypted = [] if command == "rekey" else ["--encrypted"]
    extra = command_args(command, auth_server)

    result = cli(command, *store.args, *encrypted, *extra, stdin=json.dumps(auth_server.issue()), env=NEW_ONLY)

    assert_error(result, "key id 'k1'", KEYS_ENV)
    assert store.raw() == before
    assert auth_server.refresh_calls == 0
    assert not auth_server.revoked
    assert auth_server.login_log == []


def test_a_different_key_under_the_same_id_is_an_error_naming_it(cli: CommandLine, store: Store) -> None:
    keys(store).save(Token("at-secret-access", "rt-secret-refresh", expires_at=4_000_000_000.0))
    before = store.raw()

    result = cli("status", *store.args, "--encrypted", env={KEYS_ENV: f"k1:{K2_TEXT}"})

    assert_error(result, "key id 'k1' does not decrypt", "left as it is")
    assert store.raw() == before


@pytest.mark.parametrize("command", ["status", "refresh", "logout", "import", "login"])
def test_without_encrypted_an_encrypted_record_is_named_and_left_alone(
    cli: CommandLine, store: Store, auth_server: AuthServer, command: str
) -> None:
    import_encrypted(cli, store, login_response(auth_server))
    before = store.raw()
    extra = command_args(command, auth_server) + (["--force"] if command in ("import", "login") else [])

    result = cli(command, *store.args, *extra, stdin=json.dumps(auth_server.issue()), env=OLD)

    assert_error(result, "holds an encrypted token (key id 'k1')", "--encrypted")
    assert store.raw() == before  # no token in clear over it, not deleted unrevoked


@pytest.mark.parametrize("encrypted", [[], ["--encrypted"]], ids=["plain", "--encrypted"])
def test_clear_deletes_an_encrypted_record_without_its_key(
    cli: CommandLine, store: Store, encrypted: list[str]
) -> None:
    keys(store).save(Token("at-secret-access", "rt-secret-refresh"))

    result = cli("clear", *store.args, *encrypted)  # no keys in the (cleaned) environment

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("deleted the token in ")
    assert store.raw() is None


@pytest.mark.parametrize(
    ("args", "env", "fragments"),
    [
        ([], {}, [f"environment variable {KEYS_ENV} is not set"]),
        ([], {KEYS_ENV: " "}, [f"environment variable {KEYS_ENV} is empty"]),
        (["--keys-env", "APP_TOKEN_KEYS"], OLD, ["environment variable APP_TOKEN_KEYS is not set"]),
        ([], {KEYS_ENV: f"k1:{K1_TEXT[:-8]}"}, [f"entry 1 of {KEYS_ENV} (key id 'k1')", "bytes long"]),
    ],
    ids=["unset", "blank", "keys-env-unset", "short-key"],
)
def test_missing_or_bad_keys_are_an_error_naming_the_variable(
    cli: CommandLine, tmp_path: Path, args: list[str], env: dict[str, str], fragments: list[str]
) -> None:
    for command in (["status"], ["rekey"], ["import", "-"]):
        result = cli(*command, "--file", str(tmp_path / "t.json"), "--encrypted", *args, stdin="{}", env=env)

        assert_error(result, "--encrypted: ", *fragments)
        assert K1_TEXT[:-8] not in result.stderr
    assert not (tmp_path / "t.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--migrate"], "--migrate needs --encrypted"),
        (["--keys-env", "APP_KEYS"], "--keys-env needs --encrypted"),
        (["--keys-env", "APP_KEYS", "--migrate"], "--keys-env and --migrate need --encrypted"),
        (["--encrypted", "--keys-env", ""], "--keys-env needs the name of an environment variable"),
    ],
)
def test_encryption_options_without_encrypted_are_a_usage_error(
    cli: CommandLine, tmp_path: Path, args: list[str], message: str
) -> None:
    result = cli("status", "--file", str(tmp_path / "t.json"), *args, env=OLD)

    assert result.returncode == 2
    assert result.stderr.rstrip().endswith(message)


def test_a_plaintext_record_is_an_error_without_migrate_and_encrypted_once_with_it(
    cli: CommandLine, store: Store, auth_server: AuthServer
) -> None:
    response = login_response(auth_server)
    assert cli("import", *store.args, stdin=json.dumps(response)).returncode == 0  # in clear, as before
    before = store.raw()

    refused = cli("status", *store.args, "--encrypted", env=OLD)
    assert_error(refused, "in clear", "pass --migrate to encrypt it once", "left as it is")
    assert store.raw() == before

    migrated = cli("status", *store.args, "--encrypted", "--migrate", env=OLD)
    assert migrated.returncode == 0, migrated.stderr
    encrypted = store.raw()
    assert encrypted is not None
    assert_shows_no_secret(encrypted, response["access_token"], response["refresh_token"])
    assert kid(store) == "k1"
    again = cli("status", *store.args, "--encrypted", "--migrate", env=OLD)
    assert again.returncode == 0, again.stderr
    assert store.raw() == encrypted  # encrypted once: an encrypted record is read, not written
    assert cli("status", *store.args, "--encrypted", env=OLD).returncode == 0


# -- rekey -----------------------------------------------------------------------------------------


def test_rekey_moves_the_record_to_the_newest_key_id(cli: CommandLine, store: Store, auth_server: AuthServer) -> None:
    response = login_response(auth_server)
    import_encrypted(cli, store, response)

    moved = cli("rekey", *store.args, env=ROTATED)
    after = store.raw()
    again = cli("rekey", *store.args, "--encrypted", env=ROTATED)  # --encrypted is implied, and allowed

    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.endswith(": key id k1 -> k2\n")
    assert kid(store) == "k2"
    assert after is not None
    assert_shows_no_secret(after, response["access_token"], response["refresh_token"])
    assert again.returncode == 0, again.stderr
    assert "already encrypted with key id k2, the newest: nothing to do" in again.stdout
    assert store.raw() == after
    status = cli("status", *store.args, "--encrypted", env=NEW_ONLY)  # k1 may go now
    assert status.returncode == 0, status.stderr
    stored = keys(store, NEW_ONLY).load()
    assert stored is not None
    assert stored.refresh_token == response["refresh_token"]


def test_rekey_with_keys_env_encrypts_a_plaintext_record_with_migrate(cli: CommandLine, store: Store) -> None:
    store.plain.save(Token("at-secret-access", "rt-secret-refresh"))
    env = {"APP_TOKEN_KEYS": f"k2:{K2_TEXT}"}

    refused = cli("rekey", *store.args, "--keys-env", "APP_TOKEN_KEYS", env=env)
    migrated = cli("rekey", *store.args, "--keys-env", "APP_TOKEN_KEYS", "--migrate", env=env)

    assert_error(refused, "in clear", "--migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "which was in clear, with key id k2" in migrated.stdout
    raw = store.raw()
    assert raw is not None
    assert_shows_no_secret(raw, "at-secret-access", "rt-secret-refresh")


def test_rekey_with_nothing_stored_is_an_error(cli: CommandLine, store: Store) -> None:
    result = cli("rekey", *store.args, env=ROTATED)

    assert_error(result, "holds no token record: nothing to re-encrypt")
    assert store.raw() is None


# -- a token the store could not keep --------------------------------------------------------------


def test_refresh_names_the_import_that_stores_an_unsaved_token_encrypted(
    cli: CommandLine, tmp_path: Path, memory_keyring: MemoryKeyring, auth_server: AuthServer
) -> None:
    entry = ["--service", "example-api", "--username", "alice"]
    env = {"APP_TOKEN_KEYS": f"k1:{K1_TEXT}"}
    encrypted = ["--encrypted", "--keys-env", "APP_TOKEN_KEYS"]
    assert cli("import", *entry, *encrypted, stdin=json.dumps(auth_server.issue()), env=env).returncode == 0
    unsaved = tmp_path / "unsaved.json"

    with use_keyring(ReadOnlyKeyring(memory_keyring)):
        result = cli(
            "refresh",
            *entry,
            *encrypted,
            "--token-url",
            auth_server.token_url,
            "--unsaved-token-file",
            str(unsaved),
            "--timeout",
            "1",  # the save is retried until then before the token goes to the file
            env=env,
        )

    suggested = f"requests-tokenrefresh import {' '.join(entry + encrypted)} {unsaved}"
    assert_error(result, "could not store it", "(in clear, readable by you only)", suggested)
    assert stat.S_IMODE(unsaved.stat().st_mode) == 0o600
    assert cli(*suggested.split()[1:], env=env).returncode == 0
    raw = memory_keyring.get_password("example-api", "alice")
    assert raw is not None
    assert json.loads(unsaved.read_text())["refresh_token"] not in raw
    assert json.loads(raw)["extra"]["encrypted"]["kid"] == "k1"
