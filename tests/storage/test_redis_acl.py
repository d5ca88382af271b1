"""RedisStorage as the least-privileged ACL user that docs/hosts.rst documents.

The ``ACL SETUSER`` line is read from the page itself, the user is made with it on a real
redis-server (tests/redis_support.py), and a whole refresh and a sign-out run as that user
through a TokenRefreshAdapter. Each rule of the line is then left out in turn, to show that
Redis denies something the storage needs without it (``CONFIG GET`` and ``INFO`` are optional:
without them the storage warns and goes on; ``WAIT`` is sent only to a master with replicas, which
this server has not: tests/storage/test_redis_failover.py uses it). Without redis-server these
tests fail, saying how to install it: they never pass by skipping.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from requests_tokenrefresh import RedisStorage, SessionExpiredError, Token, TokenRefreshAdapter, TokenRefreshError
from requests_tokenrefresh.testing import AuthServer

from ..redis_support import INSTALL_HELP, RedisServer, redis_server_path

DOC = Path(__file__).resolve().parents[2] / "docs" / "hosts.rst"
#: The key of the page's examples, which its key pattern admits.
KEY = "example-api:alice"
POLICY_WARNING = "cannot read the eviction policy"
REPLICAS_WARNING = "whether it has replicas"


def documented_acl() -> tuple[str, list[str]]:
    """The user and the rules of the one ``ACL SETUSER`` line of docs/hosts.rst."""
    lines = [line.strip() for line in DOC.read_text(encoding="utf-8").splitlines()]
    found = [line for line in lines if line.startswith("ACL SETUSER ")]
    assert len(found) == 1, f"docs/hosts.rst should show one ACL SETUSER line, not {len(found)}"
    words = shlex.split(found[0])
    assert len(words) > 3, found[0]
    return words[2], words[3:]


def password_of(rules: list[str]) -> str:
    passwords = [rule[1:] for rule in rules if rule.startswith(">")]
    assert len(passwords) == 1, f"the documented line should set one password: {rules}"
    return passwords[0]


def permissions_of(rules: list[str]) -> list[str]:
    """The rules that grant something: commands (``+``) and key patterns (``~``, ``%R~`` ...)."""
    return [rule for rule in rules if rule.startswith(("+", "~", "%"))]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if redis_server_path() is None:
        pytest.fail(INSTALL_HELP)
    with RedisServer(tmp_path_factory.mktemp("redis-acl")) as srv:
        yield srv


@pytest.fixture
def admin(redis_server: RedisServer) -> Iterator[Any]:
    """The default user's client. Each test starts with no record, no cached script, an empty ACL LOG."""
    c = redis_server.client()
    c.delete(KEY, *(f"{KEY}:{suffix}" for suffix in ("version", "lease", "fence", "inflight")))
    c.script_flush()  # the user's first EVALSHA then needs SCRIPT LOAD, as on a fresh server
    c.acl_log_reset()
    yield c
    user, _ = documented_acl()
    c.acl_deluser(user)
    c.close()


def _expired(response: dict[str, Any]) -> Token:
    token = Token.from_response(response)
    now = time.time()
    return Token(token.access_token, token.refresh_token, expires_at=now - 1, obtained_at=now - 3601)


def refresh_and_sign_out(url: str, *, refresh_timeout: float) -> list[str]:
    """A login's save, a refresh through the adapter, a sign-out, as the user of ``url``.

    Returns what went wrong (nothing, if it all worked). The refresh takes the lease, reads the
    record, checks the lease, refreshes, saves conditionally and releases the lease; the sign-out
    deletes the record.
    """
    problems: list[str] = []
    ended: list[SessionExpiredError] = []
    with AuthServer(ttl=3600, rotation="reuse-detection") as srv:
        storage = RedisStorage(url, key=KEY)
        other = RedisStorage(url, key=KEY)  # another host
        adapter = TokenRefreshAdapter(
            storage, token_url=srv.token_url, refresh_timeout=refresh_timeout, on_session_expired=ended.append
        )
        session = requests.Session()
        session.mount(srv.url + "/", adapter)
        try:
            storage.save(_expired(srv.issue()))
            status = session.get(srv.url + "/api/data", timeout=30).status_code
            if status != 200 or srv.refresh_calls != 1:
                problems.append(f"the refresh: HTTP {status}, {srv.refresh_calls} refresh calls")
            stored = other.load()
            if stored is None or stored.refresh_token != srv._families[1].current_refresh:
                problems.append("the refreshed token is not the stored one")
            adapter.logout(revoke=False)
            try:
                session.get(srv.url + "/api/data", timeout=30)
                problems.append("a request after the sign-out was sent")
            except SessionExpiredError as exc:
                if exc.error != "no_token":
                    problems.append(f"after the sign-out: {exc.error}")
            if other.load() is not None:
                problems.append("the sign-out left the record")
            if srv.revoked or ended:
                problems.append("the family was revoked or the session ended")
        except TokenRefreshError as exc:
            problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            session.close()
            adapter.close()
            storage.close()
            other.close()
    return problems


def _denials(admin: Any) -> list[str]:
    """What ACL LOG says was denied, as ``reason:object``; CLIENT SETINFO (redis-py ignores a refusal) left out."""
    entries = admin.acl_log()
    return [f"{e['reason']}:{e['object']}" for e in entries if not str(e["object"]).startswith("client")]


def test_the_documented_user_can_refresh_and_sign_out(
    redis_server: RedisServer, admin: Any, caplog: pytest.LogCaptureFixture
) -> None:
    user, rules = documented_acl()
    assert rules[0] == "reset", "the documented line should start from nothing (reset)"
    assert "+@all" not in rules
    assert not any(rule in ("allkeys", "~*", "allcommands") for rule in rules)
    admin.execute_command("ACL", "SETUSER", user, *rules)
    url = f"redis://{user}:{password_of(rules)}@127.0.0.1:{redis_server.port}/0"
    assert refresh_and_sign_out(url, refresh_timeout=5) == []
    assert _denials(admin) == []
    assert POLICY_WARNING not in caplog.text  # CONFIG GET is granted: the policy was checked
    assert REPLICAS_WARNING not in caplog.text  # INFO is granted: the replicas were counted (none)
    assert "could not release" not in caplog.text


@pytest.mark.parametrize("left_out", permissions_of(documented_acl()[1]))
def test_each_documented_permission_is_needed(
    left_out: str, redis_server: RedisServer, admin: Any, caplog: pytest.LogCaptureFixture
) -> None:
    user, rules = documented_acl()
    admin.execute_command("ACL", "SETUSER", user, *(rule for rule in rules if rule != left_out))
    url = f"redis://{user}:{password_of(rules)}@127.0.0.1:{redis_server.port}/0"
    problems = refresh_and_sign_out(url, refresh_timeout=1)
    denials = _denials(admin)
    if left_out == "+config|get":  # optional: the storage warns and goes on
        assert problems == []
        assert POLICY_WARNING in caplog.text
        assert set(denials) == {"command:config|get"}
    elif left_out == "+info":  # optional: the storage warns and waits for no replica
        assert problems == []
        assert REPLICAS_WARNING in caplog.text
        assert set(denials) == {"command:info"}
    elif left_out == "+wait":  # sent only to a master with replicas: this one has none
        assert problems == []
        assert denials == []
    elif left_out.startswith("+"):
        assert problems, f"all went well without {left_out}"
        assert f"command:{left_out[1:]}" in denials, denials
    else:
        assert problems, f"all went well without {left_out}"
        assert any(d.startswith("key:example-api:alice") for d in denials), denials
