"""Scenario 5, encryption at rest: what EncryptedStorage adds to each load and save of a JWT-sized record.

The record is what real providers send: a JWT access token of about 1.2 kB (RS256), an opaque
refresh token, an ``id_token`` of about 0.9 kB in ``extra``, a scope and the expiry; about 2.4 kB
as a JSON record (:func:`jwt_sized_token`). The overhead is the encrypted storage's time minus its
inner storage's time, per save and per load, for two inner storages:

- ``MemoryStorage``: the pure cost of sealing and opening. It keeps the ``Token`` object itself,
  so it never serialises anything; the overhead here therefore also holds the JSON round trip of
  the plaintext record (``to_record`` + ``json.dumps``; ``json.loads`` + ``Token.from_record``).
  A storage that serialises does not absorb it: it serialises the encrypted stand-in (3.3 kB) in
  place of the record. A *JSON record in memory* inner (the record kept as a JSON string, as the
  keyring and Redis keep it, without their I/O) shows this, as context.
- ``FileStorage`` on ``/dev/shm`` (else the temporary directory): what a user feels. Its save
  writes a temporary file, fsyncs it and renames it; its load opens, checks and reads the file.

Timing: CPU time of this process (``time.process_time``; a loaded machine does not count the time
it runs other work), ``number`` calls per sample, the garbage collector off while a sample runs
(``timeit``'s default). The inner storage and its encrypted wrapper are measured in pairs, the order
flipped every round, and the overhead of a round is the difference of the pair; the result is the
median over rounds, and that is repeated ``repeats`` times: the table gives the median of the
repeats' medians with the lowest and highest. Target: < 50 µs per load and per save, for both inner
storages (reported, never fatal).

Run: python benchmarks/encryption.py [--smoke]   (or python benchmarks/run.py --only encryption)
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Iterator
from typing import Any

from requests_tokenrefresh import EncryptedStorage, FileStorage, MemoryStorage, Token, TokenStorage

__all__ = [
    "TARGET_US",
    "EncryptionCost",
    "EncryptionResult",
    "JSONMemoryStorage",
    "jwt_sized_token",
    "run_encryption",
]

#: The target for each load and save, in microseconds of overhead over the inner storage.
TARGET_US = 50.0
_KEY = bytes(range(32))  # a fixed key: the numbers do not depend on its bytes


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _jwt(header: dict[str, Any], claims: dict[str, Any], rng: random.Random) -> str:
    """A JWT-shaped string: the JSON parts as a provider encodes them, 256 random bytes as an RS256 signature."""
    parts = (json.dumps(header, separators=(",", ":")).encode(), json.dumps(claims, separators=(",", ":")).encode())
    return ".".join([*(_b64(p) for p in parts), _b64(rng.randbytes(256))])


def jwt_sized_token(now: float | None = None) -> Token:
    """A token record as real providers send it (sizes as Auth0, Entra ID, Okta, Keycloak issue them)."""
    rng = random.Random(2026)  # noqa: S311 - filler bytes, not secrets
    now = time.time() if now is None else now
    issued, expires = int(now), int(now) + 3600
    iss, sub = "https://id.example.com/", "auth0|5f7c8ec7c33c6c004bbafe82"
    access = _jwt(
        {"alg": "RS256", "typ": "at+jwt", "kid": "k8zyJ6Xz1ZU0Wq8DvQ2r5Oyq7wKlLhVNBfZ3CQ2rWzE"},
        {
            "iss": iss,
            "sub": sub,
            "aud": ["https://api.example.com", "https://id.example.com/userinfo"],
            "iat": issued,
            "exp": expires,
            "jti": "8f14e45f-ceea-467f-a0e6-7c4b1f1a2c3d",
            "azp": "f3QtJ8cVbKq0wN2mX7yZ4aR9sD1eT6uL",
            "client_id": "f3QtJ8cVbKq0wN2mX7yZ4aR9sD1eT6uL",
            "scope": "openid profile email offline_access read:items write:items",
            "permissions": ["read:items", "write:items", "read:orders", "write:orders", "read:reports"],
            "org_id": "org_9X2kLmN4pQ7rS1tU",
            "tenant": "eu-west-1",
        },
        rng,
    )
    id_token = _jwt(
        {"alg": "RS256", "typ": "JWT", "kid": "k8zyJ6Xz1ZU0Wq8DvQ2r5Oyq7wKlLhVNBfZ3CQ2rWzE"},
        {
            "iss": iss,
            "sub": sub,
            "aud": "f3QtJ8cVbKq0wN2mX7yZ4aR9sD1eT6uL",
            "iat": issued,
            "exp": expires,
            "auth_time": issued - 30,
            "nonce": "n-0S6_WzA2Mj",
            "name": "Alice Example",
            "email": "alice@example.com",
            "email_verified": True,
        },
        rng,
    )
    return Token(
        access,
        refresh_token=_b64(rng.randbytes(64)),
        expires_at=float(expires),
        obtained_at=float(issued),
        scope="openid profile email offline_access read:items write:items",
        extra={"id_token": id_token},
    )


class JSONMemoryStorage(TokenStorage):
    """Keeps the record as a JSON string, as the keyring and Redis keep it, without their I/O."""

    def __init__(self) -> None:
        self._raw: str | None = None

    def load(self) -> Token | None:
        return None if self._raw is None else Token.from_record(json.loads(self._raw))

    def save(self, token: Token) -> None:
        self._raw = json.dumps(token.to_record(), separators=(",", ":"), sort_keys=True)

    def delete(self) -> None:
        self._raw = None


@dataclasses.dataclass
class EncryptionCost:
    """One inner storage and one operation: the inner alone and encrypted, µs per call, per repeat and round."""

    inner: str
    operation: str  # "save" or "load"
    judged: bool  # whether the target applies (False: context only)
    plain_us: list[list[float]]
    encrypted_us: list[list[float]]

    @property
    def repeat_medians(self) -> list[float]:
        """Per repeat, the median over its rounds of encrypted minus plain."""
        return [
            statistics.median(e - p for e, p in zip(enc, plain, strict=True))
            for enc, plain in zip(self.encrypted_us, self.plain_us, strict=True)
        ]

    @property
    def overhead_us(self) -> float:
        return statistics.median(self.repeat_medians)

    @property
    def spread(self) -> tuple[float, float]:
        return min(self.repeat_medians), max(self.repeat_medians)

    @property
    def plain_median(self) -> float:
        return statistics.median(x for r in self.plain_us for x in r)

    @property
    def encrypted_median(self) -> float:
        return statistics.median(x for r in self.encrypted_us for x in r)

    @property
    def met(self) -> bool:
        return self.overhead_us < TARGET_US

    def as_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "overhead_us": self.overhead_us,
            "repeat_medians": self.repeat_medians,
            "plain_median": self.plain_median,
            "encrypted_median": self.encrypted_median,
            "met": self.met,
        }


@dataclasses.dataclass
class EncryptionResult:
    costs: list[EncryptionCost]
    record_bytes: int  # the token record as compact JSON
    stored_bytes: int  # what the inner storage holds instead (the stand-in record)
    directory: str  # where the token files were
    repeats: int
    rounds: int
    number: dict[str, int]  # calls per sample, by inner storage
    load: tuple[float, float, float] | None  # os.getloadavg() at the start

    @property
    def judged(self) -> list[EncryptionCost]:
        return [c for c in self.costs if c.judged]

    @property
    def met(self) -> bool:
        return all(c.met for c in self.judged)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "costs": [c.as_dict() for c in self.costs], "met": self.met}


def _sample(call: Callable[[], object], number: int) -> float:
    """CPU µs per call of ``call``, over ``number`` calls."""
    return timeit.Timer(call, timer=time.process_time).timeit(number) / number * 1e6


@contextlib.contextmanager
def _scratch() -> Iterator[str]:
    """A private temporary directory, in memory (/dev/shm) where there is one."""
    where = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None  # noqa: S108
    directory = tempfile.mkdtemp(prefix="rtr-bench-", dir=where)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run_encryption(
    *,
    repeats: int = 3,
    rounds: int = 15,
    number_memory: int = 2000,
    number_file: int = 300,
    progress: Any = print,
) -> EncryptionResult:
    """Measure EncryptedStorage's overhead per save and load over each inner storage."""
    token = jwt_sized_token()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    memory = MemoryStorage()
    EncryptedStorage(memory, keys={"k1": _KEY}).save(token)
    stand_in = memory.load()
    assert stand_in is not None
    with _scratch() as directory:
        inners: list[tuple[str, bool, int, Callable[[str], TokenStorage]]] = [
            ("MemoryStorage", True, number_memory, lambda _: MemoryStorage()),
            (
                f"FileStorage ({os.path.dirname(directory)})",
                True,
                number_file,
                lambda name: FileStorage(os.path.join(directory, name + ".json")),
            ),
            ("JSON record in memory (context)", False, number_memory, lambda _: JSONMemoryStorage()),
        ]
        cells = []
        for name, judged, number, make in inners:
            plain, inner = make("plain"), make("encrypted")
            encrypted = EncryptedStorage(inner, keys={"k1": _KEY})
            for storage in (plain, encrypted):
                storage.save(token)
                for _ in range(max(10, number // 10)):  # warm up
                    storage.save(token)
                    storage.load()
            for operation in ("save", "load"):
                cost = EncryptionCost(name, operation, judged, [], [])
                if operation == "save":
                    calls = (lambda s=plain: s.save(token), lambda s=encrypted: s.save(token))
                else:
                    calls = (plain.load, encrypted.load)
                cells.append((cost, number, calls))
        for _ in range(repeats):
            for cost, _number, _calls in cells:
                cost.plain_us.append([])
                cost.encrypted_us.append([])
            for i in range(rounds):
                for cost, number, (plain_call, encrypted_call) in cells:
                    if i % 2 == 0:
                        p = _sample(plain_call, number)
                        e = _sample(encrypted_call, number)
                    else:
                        e = _sample(encrypted_call, number)
                        p = _sample(plain_call, number)
                    cost.plain_us[-1].append(p)
                    cost.encrypted_us[-1].append(e)
    result = EncryptionResult(
        costs=[cost for cost, _, _ in cells],
        record_bytes=len(json.dumps(token.to_record(), separators=(",", ":"))),
        stored_bytes=len(json.dumps(stand_in.to_record(), separators=(",", ":"))),
        directory=os.path.dirname(directory),
        repeats=repeats,
        rounds=rounds,
        number={name: number for name, _, number, _ in inners},
        load=load,
    )
    for c in result.costs:
        low, high = c.spread
        progress(
            f"  encryption {c.inner:<34} {c.operation}: {c.plain_median:7.1f} -> {c.encrypted_median:7.1f} µs, "
            f"overhead {c.overhead_us:6.1f} µs (repeats {low:.1f}-{high:.1f})" + ("" if c.judged else "  [context]")
        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="small and quick")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "")
    if args.smoke:
        result = run_encryption(repeats=1, rounds=3, number_memory=200, number_file=40)
    else:
        result = run_encryption(repeats=args.repeats, rounds=args.rounds)
    print(f"record {result.record_bytes} bytes as JSON, {result.stored_bytes} bytes stored encrypted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
