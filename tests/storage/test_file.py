"""FileStorage: the token record in a private JSON file, replaced atomically, shared between processes.

The processes are real (tests/file_worker.py): a writer and a reader racing on one file, a holder
of the refresh lease, and three adapters of eight threads each against the loopback token server.
"""

from __future__ import annotations

import json
import os
import pickle
import shlex
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import filelock
import pytest
import requests

from requests_tokenrefresh import FileStorage, Token, TokenRefreshAdapter, TokenStorage, TokenStorageError
from requests_tokenrefresh.testing import AuthServer
from tests.file_worker import token as record

WORKER = Path(__file__).resolve().parents[1] / "file_worker.py"
ACCESS = "at-3f9c1e7a-access-secret"
REFRESH = "rt-8b2d4c6e-refresh-secret"
TOKEN = Token(ACCESS, REFRESH, expires_at=1_700_003_600.0, obtained_at=1_700_000_000.0, extra={"user": {"id": 7}})

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


def assert_no_secret(exc: BaseException) -> None:
    for text in (str(exc), repr(exc)):
        assert ACCESS not in text
        assert REFRESH not in text
        assert "[Errno" not in text


def mode_of(path: Path | str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def worker(*args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def summary(process: subprocess.Popen[str], timeout: float = 90) -> dict[str, Any]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    assert process.returncode == 0, err[-2000:]
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "config" / "token.json"


@pytest.fixture
def umask_000() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


# --- the file ----------------------------------------------------------------------------------


def test_round_trip_in_the_keyrings_layout(path: Path) -> None:
    storage = FileStorage(path)
    storage.save(TOKEN)

    assert storage.load() == TOKEN
    assert json.loads(path.read_text(encoding="utf-8")) == TOKEN.to_record()
    assert path.read_text(encoding="utf-8") == json.dumps(TOKEN.to_record(), separators=(",", ":"), sort_keys=True)
    replacement = Token("at-other", refresh_token="rt-other")
    storage.save(replacement)
    assert storage.load() == replacement
    assert isinstance(storage, TokenStorage)


def test_missing_file_or_directory_is_none(path: Path) -> None:
    assert FileStorage(path).load() is None
    assert not path.parent.exists()  # a load creates nothing


@posix_only
@pytest.mark.usefixtures("umask_000")
def test_the_file_is_0600_and_a_new_directory_0700_even_with_umask_000(path: Path) -> None:
    storage = FileStorage(path)
    storage.save(TOKEN)
    assert mode_of(path) == 0o600
    assert mode_of(path.parent) == 0o700

    storage.save(TOKEN)  # a replacement too
    assert mode_of(path) == 0o600
    assert sorted(os.listdir(path.parent)) == ["token.json"]  # no temporary file left behind


@posix_only
def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    FileStorage(tmp_path / "token.json").save(TOKEN)
    assert mode_of(tmp_path) == 0o755
    assert mode_of(tmp_path / "token.json") == 0o600


def test_a_save_replaces_a_file_that_had_a_wider_mode(path: Path) -> None:
    path.parent.mkdir()
    path.write_text("{}", encoding="utf-8")
    path.chmod(0o644)
    FileStorage(path).save(TOKEN)
    assert FileStorage(path).load() == TOKEN
    if os.name == "posix":
        assert mode_of(path) == 0o600


def test_tilde_is_expanded_and_the_path_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    storage = FileStorage("~/.config/my-app/token.json")
    assert storage.path == str(tmp_path / ".config" / "my-app" / "token.json")
    assert storage.lock_path == storage.path + ".lock"
    monkeypatch.chdir(tmp_path)
    assert FileStorage(Path("token.json"), lock_path="locks/t.lock").lock_path == str(tmp_path / "locks" / "t.lock")


@pytest.mark.parametrize("value", ["", b"token.json", None])
def test_a_path_that_is_no_path_is_refused(value: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        FileStorage(value)


@posix_only
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o660, 0o644, 0o666])
def test_a_file_others_may_read_or_write_is_refused_with_the_chmod_advice(path: Path, mode: int) -> None:
    storage = FileStorage(path)
    storage.save(TOKEN)
    path.chmod(mode)
    before = path.read_bytes()

    with pytest.raises(TokenStorageError) as excinfo:
        storage.load()

    message = str(excinfo.value)
    assert str(path) in message
    assert f"chmod 600 {shlex.quote(str(path))}" in message
    assert f"mode {mode:03o}" in message
    assert_no_secret(excinfo.value)
    assert path.read_bytes() == before
    assert mode_of(path) == mode  # refused, never repaired behind the user's back
    path.chmod(0o600)
    assert storage.load() == TOKEN


@pytest.mark.parametrize(
    ("content", "says"),
    [
        pytest.param(b"", "not valid JSON at character 0", id="empty"),
        pytest.param(b'{"version":1,"access_token":"' + ACCESS.encode(), "not valid JSON", id="truncated"),
        pytest.param(b"\xff\xfe" + ACCESS.encode(), "not UTF-8", id="binary"),
        pytest.param(b"[1, 2]", "must be a JSON object, not list", id="list"),
        pytest.param(json.dumps({**TOKEN.to_record(), "version": 7}).encode(), "newer version", id="newer"),
        pytest.param(json.dumps({"access_token": ACCESS, "refresh_token": REFRESH}).encode(), "by hand", id="response"),
        pytest.param(json.dumps({**TOKEN.to_record(), "access_token": 5}).encode(), "access_token", id="bad-field"),
    ],
)
def test_a_file_without_a_token_record_is_a_clear_error_and_left_untouched(
    path: Path, content: bytes, says: str
) -> None:
    path.parent.mkdir()
    path.write_bytes(content)
    path.chmod(0o600)
    before = os.stat(path)

    with pytest.raises(TokenStorageError) as excinfo:
        FileStorage(path).load()

    message = str(excinfo.value)
    assert message.startswith(f"the token file {path} does not hold a token record")
    assert says in message
    if says not in ("newer version", "by hand"):
        assert f"rm {shlex.quote(str(path))}" in message
    assert excinfo.value.__cause__ is not None
    assert_no_secret(excinfo.value)
    assert path.read_bytes() == content
    assert os.stat(path).st_mtime_ns == before.st_mtime_ns


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links")
def test_a_symbolic_link_is_refused_by_load_and_save(path: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    FileStorage(target).save(TOKEN)
    path.parent.mkdir()
    path.symlink_to(target)
    storage = FileStorage(path)

    for operation in (storage.load, lambda: storage.save(Token("at-other"))):
        with pytest.raises(TokenStorageError, match="is a symbolic link") as excinfo:
            operation()
        assert_no_secret(excinfo.value)
    assert path.is_symlink()
    assert FileStorage(target).load() == TOKEN  # the target is neither read through the link nor written

    storage.delete()  # removes the link, not its target
    assert not path.is_symlink()
    assert FileStorage(target).load() == TOKEN


@posix_only
@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links")
def test_a_symbolic_link_at_the_lock_path_leaves_its_target_alone(path: Path, tmp_path: Path) -> None:
    # CVE-2025-68146: filelock < 3.20.1 opened the lock file with O_TRUNC and without O_NOFOLLOW,
    # then chmod-ed it 0644, so a link planted there emptied its target and opened it to everyone.
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    victim.chmod(0o600)
    storage = FileStorage(path)
    storage.save(TOKEN)
    Path(storage.lock_path).symlink_to(victim)

    error: TokenStorageError | None = None
    try:
        with storage.refresh_lease(timeout=5) as lease:
            lease.save(Token("at-rotated", "rt-rotated"))
    except TokenStorageError as exc:
        error = exc

    assert victim.read_bytes() == b"precious\n"
    assert mode_of(victim) == 0o600
    assert error is not None  # the lock is refused, and with it the refresh
    assert f"cannot use the refresh lock {storage.lock_path}" in str(error)
    assert_no_secret(error)
    assert storage.load() == TOKEN


def test_a_directory_at_the_path_is_an_error(path: Path) -> None:
    path.mkdir(parents=True)
    with pytest.raises(TokenStorageError, match="token file") as excinfo:
        FileStorage(path).load()
    assert_no_secret(excinfo.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
@pytest.mark.timeout(10)
def test_a_fifo_at_the_path_is_refused_without_hanging(path: Path) -> None:
    path.parent.mkdir()
    os.mkfifo(path, 0o600)
    with pytest.raises(TokenStorageError, match="is not a regular file"):
        FileStorage(path).load()


def test_os_errors_are_sentences_without_errno_or_secret(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    storage = FileStorage(blocker / "token.json")  # its "directory" is a regular file

    for operation, verb in ((storage.load, "read"), (lambda: storage.save(TOKEN), "write")):
        with pytest.raises(TokenStorageError) as excinfo:
            operation()
        assert str(excinfo.value).startswith(f"cannot {verb} the token file {storage.path}: ")
        assert isinstance(excinfo.value.__cause__, OSError)
        assert_no_secret(excinfo.value)
    with pytest.raises(TokenStorageError, match="cannot delete the token file") as excinfo:
        FileStorage(tmp_path).delete()  # a directory
    assert_no_secret(excinfo.value)
    assert sorted(os.listdir(tmp_path)) == ["a-file"]


def test_extra_data_that_is_not_json_is_refused_before_the_file_is_touched(path: Path) -> None:
    storage = FileStorage(path)
    storage.save(TOKEN)
    with pytest.raises(TokenStorageError, match="not JSON") as excinfo:
        storage.save(Token(ACCESS, REFRESH, extra={"when": object()}))
    assert_no_secret(excinfo.value)
    assert storage.load() == TOKEN


@pytest.mark.parametrize("value", [ACCESS, TOKEN.to_record(), None])
def test_save_of_a_non_token_raises_type_error(path: Path, value: Any) -> None:
    with pytest.raises(TypeError, match="Token"):
        FileStorage(path).save(value)
    assert not path.parent.exists()


def test_delete_removes_the_file_and_is_quiet_when_there_is_none(path: Path) -> None:
    storage = FileStorage(path)
    storage.delete()
    storage.save(TOKEN)
    with storage.refresh_lease(timeout=5):
        pass
    storage.delete()
    storage.delete()
    assert storage.load() is None
    assert sorted(os.listdir(path.parent)) == ["token.json.lock"]  # the lock file stays: others may hold it


def test_repr_and_pickle_keep_the_path_only(path: Path, tmp_path: Path) -> None:
    storage = FileStorage(path, lock_path=tmp_path / "locks" / "token.lock")
    storage.save(TOKEN)

    assert repr(storage) == f"FileStorage({str(path)!r})"
    data = pickle.dumps(storage)
    assert ACCESS.encode() not in data
    assert REFRESH.encode() not in data
    copy = pickle.loads(data)  # noqa: S301  # our own bytes
    assert (copy.path, copy.lock_path) == (str(path), str(tmp_path / "locks" / "token.lock"))
    assert copy.load() == TOKEN


# --- between processes ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_reader_in_another_process_never_sees_a_partial_file(path: Path, tmp_path: Path) -> None:
    FileStorage(path).save(record(0))
    ready, done = str(tmp_path / "ready"), str(tmp_path / "done")
    reader = worker("read", str(path), ready, done)
    writer = worker("write", str(path), "200", ready, done)  # starts once the reader is reading

    written, read = summary(writer), summary(reader)

    assert written == {"saved": 200}
    assert read["errors"] == {}, read
    assert read["loads"] > 0
    print(f"\n200 saves, {read['loads']} loads, {read['distinct']} distinct records seen, none partial")
    assert sorted(os.listdir(path.parent)) == ["token.json"]  # every temporary file was renamed


def test_the_lease_excludes_another_process(path: Path) -> None:
    storage = FileStorage(path)
    holder = worker("hold", str(path), stdin=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"

        with pytest.raises(TokenStorageError, match="timed out") as excinfo, storage.refresh_lease(timeout=0.2):
            pass
        assert isinstance(excinfo.value.__cause__, filelock.Timeout)
        assert str(path) + ".lock" in str(excinfo.value)
    finally:
        holder.communicate(input="", timeout=60)  # its stdin closes: it releases the lease and exits
    assert holder.returncode == 0
    with storage.refresh_lease(timeout=30) as lease:
        assert lease.load() is None
        lease.save(TOKEN)
    assert storage.load() == TOKEN


@pytest.mark.slow
def test_three_processes_sharing_one_file_make_one_refresh_per_expiry(path: Path) -> None:
    # 2 s tokens: the refresh window is 1 s (half the lifetime), so a new expiry every ~second.
    with AuthServer(ttl=2, rotation="reuse-detection") as srv:
        FileStorage(path).save(Token.from_response(srv.issue()))
        command = ["adapter", str(path), srv.token_url, f"{srv.url}/api/data", "8", "5"]
        processes = [worker(*command) for _ in range(3)]
        results = [summary(p) for p in processes]
        presented = [entry["refresh_token"] for entry in srv.token_log]
        ok = sum(r["ok"] for r in results)
        print(f"\n3 processes x 8 threads on one file: {ok} requests ok, refresh calls {srv.refresh_calls}")
    assert [r["failed"] for r in results] == [0, 0, 0], results
    assert all(r["ok"] > 0 for r in results)
    assert not srv.revoked
    assert srv.refresh_calls >= 2  # several expiries happened during the run
    # One refresh per expiry: every refresh token was presented once, and every refresh succeeded.
    assert len(presented) == len(set(presented)) == srv.refresh_calls
    assert {entry["status"] for entry in srv.token_log} == {200}
    stored = FileStorage(path).load()
    assert stored is not None
    if os.name == "posix":
        assert mode_of(path) == 0o600
    assert sorted(os.listdir(path.parent)) == ["token.json", "token.json.lock"]


def test_an_adapter_refreshes_into_the_file(path: Path, expired: Any) -> None:
    with AuthServer(ttl=3600, rotation="reuse-detection") as srv:
        storage = FileStorage(path)
        first = expired(srv.issue())
        storage.save(first)
        adapter = TokenRefreshAdapter(storage, token_url=srv.token_url)
        session = requests.Session()
        session.mount(srv.url + "/", adapter)
        assert session.get(f"{srv.url}/api").status_code == 200
        session.close()
        assert srv.refresh_calls == 1
    stored = storage.load()
    assert stored is not None
    assert stored.refresh_token != first.refresh_token
