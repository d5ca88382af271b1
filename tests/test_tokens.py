"""Unit tests of Token: validation, building from token responses, records, freshness, redaction."""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
from typing import Any

import pytest

from requests_tokenrefresh import Token, TokenState
from requests_tokenrefresh._redact import fingerprint
from requests_tokenrefresh.login import refresh_token_expires_at
from requests_tokenrefresh.tokens import RECORD_VERSION

from .jwt_support import make_jwt

ACCESS = "at-3f9c1e7a-access-secret"
REFRESH = "rt-8b2d4c6e-refresh-secret"
NOW = 1_700_000_000.0


# --- construction and validation -------------------------------------------------------------


def test_defaults() -> None:
    token = Token(ACCESS)

    assert token.refresh_token is None
    assert token.token_type == "Bearer"
    assert token.expires_at is None
    assert token.obtained_at is None
    assert token.scope is None
    assert dict(token.extra) == {}


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"access_token": ""}, "access_token"),
        ({"access_token": None}, "access_token"),
        ({"refresh_token": ""}, "refresh_token"),
        ({"refresh_token": 42}, "refresh_token"),
        ({"token_type": ""}, "token_type"),
        ({"expires_at": "soon"}, "expires_at"),
        ({"expires_at": float("nan")}, "expires_at"),
        ({"expires_at": True}, "expires_at"),
        ({"obtained_at": float("inf")}, "obtained_at"),
        ({"scope": ["read"]}, "scope"),
        ({"extra": ["user"]}, "extra"),
    ],
)
def test_invalid_field_raises_value_error_naming_it_without_secrets(fields: dict[str, Any], named: str) -> None:
    kwargs: dict[str, Any] = {"access_token": ACCESS, "refresh_token": REFRESH, **fields}

    with pytest.raises(ValueError, match=named) as excinfo:
        Token(**kwargs)

    assert ACCESS not in str(excinfo.value)
    assert REFRESH not in str(excinfo.value)


def test_numeric_string_expiry_is_stored_as_a_number() -> None:
    token = Token(ACCESS, expires_at="2000", obtained_at="1000")  # type: ignore[arg-type]
    assert token.expires_at == 2000.0
    assert token.obtained_at == 1000.0
    assert token.state(now=1500, leeway=60) is TokenState.FRESH


def test_token_is_immutable_and_extra_is_a_read_only_copy() -> None:
    user = {"user": "alice"}
    token = Token(ACCESS, extra=user)
    user["user"] = "mallory"

    assert token.extra["user"] == "alice"
    with pytest.raises(TypeError):
        token.extra["user"] = "bob"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        token.access_token = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("token_type", "expected"),
    [("Bearer", f"Bearer {ACCESS}"), ("DPoP", f"DPoP {ACCESS}")],
)
def test_authorization_header_value(token_type: str, expected: str) -> None:
    assert Token(ACCESS, token_type=token_type).authorization == expected


# --- from_response ---------------------------------------------------------------------------


def test_expires_in_counts_from_now() -> None:
    token = Token.from_response({"access_token": ACCESS, "expires_in": 3600}, now=NOW)

    assert token.expires_at == NOW + 3600
    assert token.obtained_at == NOW


def test_numeric_string_expires_in_is_accepted() -> None:
    token = Token.from_response({"access_token": ACCESS, "expires_in": " 300 "}, now=NOW)

    assert token.expires_at == NOW + 300
    assert token.obtained_at == NOW


@pytest.mark.parametrize("expires_in", [0, -30, "0"])
def test_non_positive_expires_in_is_ignored_for_the_jwt_exp(
    expires_in: int | str, caplog: pytest.LogCaptureFixture
) -> None:
    access = make_jwt(exp=int(NOW) + 900)

    with caplog.at_level(logging.WARNING, logger="requests_tokenrefresh.tokens"):
        token = Token.from_response({"access_token": access, "expires_in": expires_in}, now=NOW)

    assert token.expires_at == NOW + 900
    assert token.obtained_at == NOW
    assert "expires_in" in caplog.text
    assert access not in caplog.text


def test_non_positive_expires_in_with_opaque_token_leaves_expiry_unknown() -> None:
    token = Token.from_response({"access_token": ACCESS, "expires_in": 0}, now=NOW)

    assert token.expires_at is None
    assert token.obtained_at is None


def test_jwt_exp_is_used_without_expires_in() -> None:
    token = Token.from_response({"access_token": make_jwt(exp=int(NOW) + 120)}, now=NOW)

    assert token.expires_at == NOW + 120
    assert token.obtained_at == NOW


def test_expiry_is_unknown_for_opaque_token_without_expires_in() -> None:
    token = Token.from_response({"access_token": ACCESS}, now=NOW)

    assert token.expires_at is None
    assert token.obtained_at is None


def test_refresh_token_is_kept_from_previous_when_response_has_none() -> None:
    previous = Token("old-access", REFRESH)

    token = Token.from_response({"access_token": ACCESS}, previous)

    assert token.access_token == ACCESS
    assert token.refresh_token == REFRESH


def test_rotated_refresh_token_replaces_the_previous_one() -> None:
    previous = Token("old-access", "rt-old")

    token = Token.from_response({"access_token": ACCESS, "refresh_token": REFRESH}, previous)

    assert token.refresh_token == REFRESH


def test_a_new_refresh_token_does_not_inherit_the_previous_ones_expiry() -> None:
    previous = Token.from_response(
        {"access_token": "at-1", "refresh_token": "rt-1", "refresh_expires_in": 1800}, now=NOW
    )
    assert previous.refresh_token_expires_at == NOW + 1800

    rotated = Token.from_response({"access_token": ACCESS, "refresh_token": REFRESH}, previous, now=NOW + 600)
    relived = Token.from_response(
        {"access_token": ACCESS, "refresh_token": REFRESH, "refresh_token_expires_in": 60}, previous, now=NOW + 600
    )

    assert rotated.refresh_token_expires_at is None
    assert refresh_token_expires_at(rotated) is None  # nor the old lifetime counted from the new obtained_at
    assert relived.refresh_token_expires_at == NOW + 660


@pytest.mark.parametrize("repeated", [False, True], ids=["omitted", "sent-again"])
def test_the_same_refresh_token_keeps_its_expiry(repeated: bool) -> None:
    previous = Token.from_response(
        {"access_token": "at-1", "refresh_token": REFRESH, "refresh_expires_in": 1800}, now=NOW
    )
    response = {"access_token": ACCESS, **({"refresh_token": REFRESH} if repeated else {})}

    token = Token.from_response(response, previous, now=NOW + 600)

    assert token.refresh_token == REFRESH
    assert token.refresh_token_expires_at == NOW + 1800


def test_scope_is_kept_from_previous_when_omitted() -> None:
    previous = Token("old-access", scope="read write")

    assert Token.from_response({"access_token": ACCESS}, previous).scope == "read write"
    assert Token.from_response({"access_token": ACCESS, "scope": "read"}, previous).scope == "read"


def test_list_scope_is_joined_with_spaces() -> None:
    token = Token.from_response({"access_token": ACCESS, "scope": ["read", "write"]})

    assert token.scope == "read write"


def test_user_data_survives_a_refresh() -> None:
    previous = Token("old-access", REFRESH, extra={"user": {"name": "alice"}, "tenant": "t1"})

    token = Token.from_response({"access_token": ACCESS, "tenant": "t2", "id_token": "idt"}, previous)

    assert dict(token.extra) == {"user": {"name": "alice"}, "tenant": "t2", "id_token": "idt"}


def test_unknown_response_fields_are_kept_as_extra() -> None:
    token = Token.from_response({"access_token": ACCESS, "expires_in": 60, "id_token": "idt"}, now=NOW)

    assert dict(token.extra) == {"id_token": "idt"}


@pytest.mark.parametrize("token_type", ["bearer", "BEARER", "Bearer", None])
def test_bearer_is_normalised(token_type: str | None) -> None:
    assert Token.from_response({"access_token": ACCESS, "token_type": token_type}).token_type == "Bearer"


def test_other_token_types_are_kept() -> None:
    assert Token.from_response({"access_token": ACCESS, "token_type": "DPoP"}).token_type == "DPoP"


@pytest.mark.parametrize(
    ("response", "named"),
    [
        ({"refresh_token": REFRESH}, "access_token"),
        ({"access_token": "", "refresh_token": REFRESH}, "access_token"),
        ({"access_token": 123, "refresh_token": REFRESH}, "access_token"),
    ],
)
def test_bad_token_response_raises_value_error_without_secrets(response: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named) as excinfo:
        Token.from_response(response)

    assert ACCESS not in str(excinfo.value)
    assert REFRESH not in str(excinfo.value)


@pytest.mark.parametrize("response", [[ACCESS], ACCESS, None])
def test_non_mapping_response_raises_value_error(response: Any) -> None:
    with pytest.raises(ValueError, match="JSON object") as excinfo:
        Token.from_response(response)

    assert ACCESS not in str(excinfo.value)


# --- records ---------------------------------------------------------------------------------


def full_token() -> Token:
    return Token(
        ACCESS,
        REFRESH,
        expires_at=NOW + 3600,
        obtained_at=NOW,
        scope="read write",
        extra={"user": {"name": "alice", "roles": ["admin"]}},
    )


def test_to_record_layout() -> None:
    assert full_token().to_record() == {
        "version": RECORD_VERSION,
        "access_token": ACCESS,
        "refresh_token": REFRESH,
        "token_type": "Bearer",
        "expires_at": NOW + 3600,
        "obtained_at": NOW,
        "scope": "read write",
        "extra": {"user": {"name": "alice", "roles": ["admin"]}},
    }


def test_record_round_trips_through_json() -> None:
    token = full_token()

    assert Token.from_record(json.loads(json.dumps(token.to_record()))) == token


def test_record_read_as_token_response_keeps_everything() -> None:
    token = full_token()

    assert Token.from_response(token.to_record()) == token


@pytest.mark.parametrize("version", [None, 0, 2, "1"])
def test_from_record_rejects_other_versions(version: Any) -> None:
    record = full_token().to_record()
    record["version"] = version

    with pytest.raises(ValueError, match="version") as excinfo:
        Token.from_record(record)

    assert ACCESS not in str(excinfo.value)


def test_from_record_rejects_non_object_extra() -> None:
    record = full_token().to_record()
    record["extra"] = ["user"]

    with pytest.raises(ValueError, match="extra"):
        Token.from_record(record)


def test_from_record_rejects_non_mapping() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        Token.from_record([ACCESS])  # type: ignore[arg-type]


# --- freshness -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obtained_at", "expires_at", "leeway", "window"),
    [
        (0.0, 3600.0, 60.0, 60.0),  # long-lived: the leeway
        (0.0, 60.0, 60.0, 30.0),  # short-lived: half the lifetime
        (None, 60.0, 60.0, 60.0),  # lifetime unknown: the leeway
        (100.0, 50.0, 60.0, 0.0),  # nonsense lifetime: no window
    ],
)
def test_refresh_window_is_leeway_capped_at_half_the_lifetime(
    obtained_at: float | None, expires_at: float, leeway: float, window: float
) -> None:
    token = Token(ACCESS, expires_at=expires_at, obtained_at=obtained_at)

    assert token.refresh_window(leeway) == window


@pytest.mark.parametrize(
    ("obtained_at", "expires_at", "now", "state"),
    [
        # lifetime 3600 s, leeway 60 s: the window is 60 s
        (0.0, 3600.0, 3539.0, TokenState.FRESH),
        (0.0, 3600.0, 3540.0, TokenState.STALE),
        (0.0, 3600.0, 3599.0, TokenState.STALE),
        (0.0, 3600.0, 3600.0, TokenState.INVALID),
        (0.0, 3600.0, 9999.0, TokenState.INVALID),
        # lifetime 60 s, leeway 60 s: the window is 30 s
        (0.0, 60.0, 29.0, TokenState.FRESH),
        (0.0, 60.0, 30.0, TokenState.STALE),
        (0.0, 60.0, 60.0, TokenState.INVALID),
        # lifetime unknown: the whole leeway
        (None, 60.0, -1.0, TokenState.FRESH),
        (None, 60.0, 0.0, TokenState.STALE),
    ],
)
def test_state(obtained_at: float | None, expires_at: float, now: float, state: TokenState) -> None:
    token = Token(ACCESS, expires_at=expires_at, obtained_at=obtained_at)

    assert token.state(now, leeway=60.0) is state


def test_token_without_expiry_is_always_fresh() -> None:
    assert Token(ACCESS).state(now=1e12, leeway=60.0) is TokenState.FRESH


# --- secrets stay out of reprs and pickles ---------------------------------------------------


def test_repr_shows_fingerprints_not_secrets() -> None:
    text = repr(Token(ACCESS, REFRESH, extra={"user": "alice"}))

    assert ACCESS not in text
    assert REFRESH not in text
    assert fingerprint(ACCESS) in text
    assert fingerprint(REFRESH) in text
    assert "user" in text


def test_repr_without_refresh_token() -> None:
    text = repr(Token(ACCESS))

    assert ACCESS not in text
    assert "refresh_token=<->" in text


def test_pickling_a_token_raises_type_error() -> None:
    with pytest.raises(TypeError, match="not pickled") as excinfo:
        pickle.dumps(Token(ACCESS, REFRESH))

    assert ACCESS not in str(excinfo.value)


@pytest.mark.parametrize(
    "fields",
    [{"expires_in": "soon"}, {"expires_at": "soon"}, {"expires_in": 1e999}, {"expires_at": "2030-01-01T00:00:00Z"}],
)
def test_a_bad_expiry_field_is_ignored_not_fatal(fields: dict[str, Any]) -> None:
    # Rejecting the response would throw away the rotated refresh token it carries.
    token = Token.from_response({"access_token": ACCESS, "refresh_token": "rotated", **fields})
    assert token.refresh_token == "rotated"
    assert token.expires_at is None
