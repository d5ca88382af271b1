"""The adapter at both ends of a token's life: issuer discovery, logout with revocation, and a
refresh token whose own expiry is near."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from requests_tokenrefresh import MemoryStorage, RefreshError, RevocationError, Token
from requests_tokenrefresh._discovery import _clear_cache
from requests_tokenrefresh.testing import AuthServer


@pytest.fixture
def auth() -> Iterator[AuthServer]:
    """A loopback authorization server with metadata; the process's discovery cache forgotten."""
    _clear_cache()
    with AuthServer(ttl=3600) as srv:
        yield srv
    _clear_cache()


def test_an_issuer_is_discovered_once_at_the_first_refresh(auth: AuthServer, session_for: Any, expired: Any) -> None:
    session, adapter = session_for(auth, expired(auth.issue()), token_url=None, issuer=auth.issuer)
    assert "issuer=" in repr(adapter)
    assert auth.refresh_calls == 0  # nothing fetched when the adapter is made
    assert session.get(f"{auth.url}/api").status_code == 200
    auth.revoke_access_tokens()
    assert session.get(f"{auth.url}/api").status_code == 200
    assert auth.refresh_calls == 2  # both through the discovered token endpoint


def test_an_issuer_without_metadata_is_a_clear_refresh_error(auth: AuthServer, session_for: Any, expired: Any) -> None:
    auth.metadata_format = "none"
    session, _ = session_for(auth, expired(auth.issue()), token_url=None, issuer=auth.issuer)
    with pytest.raises(RefreshError, match="discovery") as caught:
        session.get(f"{auth.url}/api")
    assert caught.value.error == "metadata_not_found"
    assert not caught.value.retryable


def test_logout_revokes_both_tokens_after_deleting_the_record(auth: AuthServer, session_for: Any) -> None:
    token = Token.from_response(auth.issue())
    storage = MemoryStorage(token)
    session, adapter = session_for(auth, None, storage=storage, issuer=auth.issuer, token_url=None)
    assert session.get(f"{auth.url}/api").status_code == 200
    adapter.logout()
    assert storage.load() is None
    assert [(e["token"], e["hint"]) for e in auth.revocation_log] == [
        (token.refresh_token, "refresh_token"),
        (token.access_token, "access_token"),
    ]


def test_a_failed_revocation_is_reported_and_the_record_is_gone(auth: AuthServer, session_for: Any) -> None:
    token = Token.from_response(auth.issue())
    storage = MemoryStorage(token)
    _, adapter = session_for(auth, None, storage=storage, revocation_url=f"{auth.url}/revoke")
    auth.revocation_mode = "fail"
    with pytest.raises(RevocationError) as caught:
        adapter.logout()
    assert caught.value.deleted
    assert storage.load() is None
    assert token.refresh_token not in str(caught.value)


def test_logout_without_a_revocation_endpoint_only_deletes(auth: AuthServer, session_for: Any) -> None:
    storage = MemoryStorage(Token.from_response(auth.issue()))
    _, adapter = session_for(auth, None, storage=storage)  # token_url only: nowhere to revoke
    adapter.logout()
    assert storage.load() is None
    assert auth.revocation_log == []


def test_a_refresh_token_near_its_end_is_warned_about_once(
    auth: AuthServer, session_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # A tool started after a long idle time: its refresh token (10 minutes' lifetime) has one left.
    issued = Token.from_response(auth.issue())
    now = time.time()
    extra = {"refresh_token_expires_at": now + 60}
    token = Token(issued.access_token, issued.refresh_token, expires_at=now + 3600, obtained_at=now - 540, extra=extra)
    warned: list[Token] = []
    session, _ = session_for(auth, token, on_refresh_token_expiring=warned.append)
    with caplog.at_level(logging.WARNING, logger="requests_tokenrefresh"):
        for _ in range(3):
            assert session.get(f"{auth.url}/api").status_code == 200
    assert warned == [token]  # once, at the first read of the store
    assert "expires in" in caplog.text
    assert "log in again before then" in caplog.text
    assert issued.refresh_token not in caplog.text


def test_a_refresh_token_far_from_its_end_is_not_warned_about(auth: AuthServer, session_for: Any) -> None:
    auth.refresh_expires_in = 600  # a quarter of it is the window: 150 s
    warned: list[Token] = []
    session, _ = session_for(auth, Token.from_response(auth.issue()), on_refresh_token_expiring=warned.append)
    auth.revoke_access_tokens()  # a refresh: its answer says 600 s again
    assert session.get(f"{auth.url}/api").status_code == 200
    assert auth.refresh_calls == 1
    assert warned == []


def test_a_refresh_expiry_is_kept_when_a_later_response_does_not_repeat_it() -> None:
    first = Token.from_response({"access_token": "at-1", "refresh_token": "rt-1", "refresh_expires_in": 1800}, now=1000)
    later = Token.from_response({"access_token": "at-2"}, first, now=1500)
    assert first.refresh_token_expires_at == later.refresh_token_expires_at == 2800


def test_logout_stops_a_client_credentials_adapter_until_a_token_is_saved(session_for: Any) -> None:
    """As logout()'s docstring says: requests raise no_token; the adapter mints nothing by itself."""
    from requests_tokenrefresh import SessionExpiredError

    with AuthServer(ttl=3600, client_id="svc", client_secret="s3cret") as srv:
        storage = MemoryStorage()
        options = {"grant_type": "client_credentials", "client_id": "svc", "client_secret": "s3cret"}
        session, adapter = session_for(srv, None, storage=storage, **options)
        assert session.get(f"{srv.url}/api").status_code == 200  # the first token, minted
        adapter.logout()
        for call in (lambda: session.get(f"{srv.url}/api"), adapter.refresh):
            with pytest.raises(SessionExpiredError) as caught:
                call()
            assert caught.value.error == "no_token"
        assert srv.refresh_calls == 1
        assert storage.load() is None
        adapter.save_token(Token.from_response(srv.issue()))
        assert session.get(f"{srv.url}/api").status_code == 200


def test_a_logout_without_revocation_reads_nothing(session_for: Any) -> None:
    # Nothing to revoke, so nothing to read: a store that cannot be read at that moment (a blip)
    # does not stop the sign-out, which deletes the record.
    from requests_tokenrefresh import TokenStorageError

    class Unreadable(MemoryStorage):
        def load(self) -> Token | None:
            raise TokenStorageError("the store cannot be read right now")

    with AuthServer(ttl=3600) as srv:
        storage = Unreadable(Token.from_response(srv.issue()))
        _, adapter = session_for(srv, None, storage=storage)
        adapter.logout(revoke=False)
        assert MemoryStorage.load(storage) is None  # deleted
        assert srv.refresh_calls == 0
