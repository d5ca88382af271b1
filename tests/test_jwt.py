"""Unit tests of read_expiry: the JWT ``exp`` claim, read without verifying the signature."""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

import pytest

from requests_tokenrefresh._jwt import read_expiry

from .jwt_support import make_jwt


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


HEADER = b64(b'{"alg":"HS256","typ":"JWT"}')


@pytest.mark.parametrize(
    "exp",
    [int(time.time()) + 3600, int(time.time()) - 3600, 1_700_000_000.5],
    ids=["future", "expired-still-gives-its-exp", "float-kept"],
)
def test_reads_exp_of_a_signed_jwt(exp: float) -> None:
    assert read_expiry(make_jwt(sub="alice", exp=exp)) == float(exp)


def test_signature_is_not_verified() -> None:
    header, payload, _ = make_jwt(exp=1_700_000_000).split(".")

    assert read_expiry(f"{header}.{payload}.{b64(b'not the signature')}") == 1_700_000_000.0


@pytest.mark.parametrize("token", ["opaque-access-token", "a.b", "a.b.c.d", ""])
def test_opaque_token_gives_none(token: str) -> None:
    assert read_expiry(token) is None


@pytest.mark.parametrize(
    "token",
    [
        "a.b.c",
        "..",
        f"{HEADER}.{b64(b'not json')}.sig",
        f"{HEADER}.{b64(b'[1, 2]')}.sig",
        f"{b64(b'not json')}.{make_jwt(exp=1_700_000_000).split('.')[1]}.sig",
    ],
)
def test_malformed_jwt_gives_none(token: str) -> None:
    assert read_expiry(token) is None


def test_jwt_without_exp_gives_none() -> None:
    assert read_expiry(make_jwt(sub="alice")) is None


@pytest.mark.parametrize(
    "exp",
    [
        "soon",
        "1700000000",
        True,
        None,
        [1_700_000_000],
        {"at": 1},
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="inf"),
        pytest.param(10**400, id="10**400"),
    ],
)
def test_non_numeric_or_non_finite_exp_gives_none(exp: Any) -> None:
    assert read_expiry(make_jwt(exp=exp)) is None


def test_malformed_jwt_debug_log_does_not_contain_the_token(caplog: pytest.LogCaptureFixture) -> None:
    secret_payload = b64(json.dumps({"secret": "sk-live-do-not-log"}).encode()[:-3])  # truncated JSON
    token = f"{HEADER}.{secret_payload}.c2lnbmF0dXJlLXNlY3JldA"

    with caplog.at_level(logging.DEBUG, logger="requests_tokenrefresh._jwt"):
        assert read_expiry(token) is None

    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    for part in (token, *token.split(".")):
        assert part not in caplog.text
    assert "sk-live-do-not-log" not in caplog.text
