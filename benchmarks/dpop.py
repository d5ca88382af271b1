"""Scenario 6, DPoP: what a DPoP-bound token adds to each request, and what a proof costs.

A DPoP-bound token (RFC 9449) goes out with a new proof on every request: a JWT signed with the
token's key (ES256 here, the default of ``DPoPKey.generate``) that names the method and URL, hashes
the access token and is fresh (``iat``, a new ``jti``). Measured, in CPU µs of this process
(``time.process_time``, ``timeit`` with the garbage collector off):

- **per request**: ``adapter.send()`` with the network replaced by a canned response (as in
  ``overhead.adapter_cost``), the same adapter class over a ``MemoryStorage`` holding a DPoP-bound
  token (``Token(token_type="DPoP", dpop_key=DPoPKey.generate())``) against one holding a Bearer
  token with the same access token (a 1.2 kB JWT); the cost is the difference.
- **a proof**: ``DPoPKey.proof()`` alone, as the adapter calls it (PyJWT's ``jwt.encode`` signs it
  with cryptography's ECDSA); the same proof made by ``DPoPKey.from_signer`` (the package's own JWS
  assembly, for keys in a KMS) with a signer that calls the same cryptography ECDSA; and that ECDSA
  signature alone (with its DER turned into the raw ``r`` and ``s``). The first minus the second is what PyJWT
  adds.

Pairs and order as in the encryption scenario: the two sides of a comparison alternate, the order
flipped every round; the result is the median over rounds of each round's figure, repeated
``repeats`` times (median of the repeats' medians, with the lowest and highest). No target: the
figures are reported.

Run: python benchmarks/dpop.py [--smoke]   (or python benchmarks/run.py --only dpop)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

from encryption import jwt_sized_token
from overhead import _CannedWire

from requests_tokenrefresh import DPoPKey, MemoryStorage, Token, TokenRefreshAdapter

__all__ = ["DPoPCost", "run_dpop"]

URL = "https://api.example.com/v1/items"
TOKEN_URL = "https://id.example.com/token"  # never called: the token is valid for the whole run
# The figures, in the order they are reported: (name, what it is).
MEASURES = (
    ("bearer_send", "adapter.send(), Bearer token"),
    ("dpop_send", "adapter.send(), DPoP-bound token"),
    ("proof_pyjwt", "DPoPKey.proof() (PyJWT's jwt.encode, cryptography's ECDSA)"),
    ("proof_signer", "the same proof by DPoPKey.from_signer (the package's JWS, the same ECDSA)"),
    ("ecdsa", "ECDSA P-256 signature alone (cryptography, its DER turned into raw r and s)"),
)


@dataclasses.dataclass
class DPoPCost:
    samples: dict[str, list[list[float]]]  # by measure, per repeat, per round: µs per call
    repeats: int
    rounds: int
    number: dict[str, int]
    load: tuple[float, float, float] | None

    def _repeat_medians(self, figure: Callable[[int, int], float]) -> list[float]:
        return [statistics.median(figure(r, i) for i in range(self.rounds)) for r in range(self.repeats)]

    def median(self, name: str) -> float:
        return statistics.median(self._repeat_medians(lambda r, i: self.samples[name][r][i]))

    def spread(self, name: str) -> tuple[float, float]:
        medians = self._repeat_medians(lambda r, i: self.samples[name][r][i])
        return min(medians), max(medians)

    def _difference(self, more: str, less: str) -> list[float]:
        return self._repeat_medians(lambda r, i: self.samples[more][r][i] - self.samples[less][r][i])

    @property
    def per_request_us(self) -> float:
        """What a DPoP-bound token adds to send(): the median over repeats of the per-round difference."""
        return statistics.median(self._difference("dpop_send", "bearer_send"))

    @property
    def per_request_spread(self) -> tuple[float, float]:
        medians = self._difference("dpop_send", "bearer_send")
        return min(medians), max(medians)

    @property
    def pyjwt_us(self) -> float:
        """What PyJWT adds to a proof over the package's own JWS assembly with the same signature."""
        return statistics.median(self._difference("proof_pyjwt", "proof_signer"))

    @property
    def pyjwt_spread(self) -> tuple[float, float]:
        medians = self._difference("proof_pyjwt", "proof_signer")
        return min(medians), max(medians)

    def as_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "medians": {name: self.median(name) for name, _ in MEASURES},
            "per_request_us": self.per_request_us,
            "pyjwt_us": self.pyjwt_us,
        }


class _Adapter(TokenRefreshAdapter, _CannedWire):
    pass


def _sample(call: Callable[[], object], number: int) -> float:
    return timeit.Timer(call, timer=time.process_time).timeit(number) / number * 1e6


def _ecdsa_signer(private_key: Any) -> Callable[[bytes], bytes]:
    """Sign as PyJWT's ES256 does: cryptography's ECDSA, the DER signature turned into r and s (32 bytes each)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    algorithm = ec.ECDSA(hashes.SHA256())

    def sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(private_key.sign(data, algorithm))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    return sign


def run_dpop(
    *, repeats: int = 3, rounds: int = 15, number_send: int = 1000, number_proof: int = 500, progress: Any = print
) -> DPoPCost:
    """Measure send() with a DPoP-bound token against a Bearer one, and a proof's parts."""
    import requests
    from cryptography.hazmat.primitives.asymmetric import ec

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    now = time.time()
    bearer = jwt_sized_token(now)
    private_key = ec.generate_private_key(ec.SECP256R1())
    key = DPoPKey(private_key, alg="ES256")
    bound = Token(
        bearer.access_token,
        refresh_token=bearer.refresh_token,
        token_type="DPoP",  # noqa: S106 - a scheme, not a secret
        expires_at=bearer.expires_at,
        obtained_at=bearer.obtained_at,
        scope=bearer.scope,
        extra=bearer.extra,
        dpop_key=key,
    )
    signer = DPoPKey.from_signer(key.public_jwk, _ecdsa_signer(private_key))
    sign = _ecdsa_signer(private_key)
    signing_input = key.proof("GET", URL, access_token=bearer.access_token).rpartition(".")[0].encode("ascii")
    prepared = requests.Request("GET", URL).prepare()
    adapters = {
        "bearer_send": _Adapter(MemoryStorage(bearer), token_url=TOKEN_URL),
        "dpop_send": _Adapter(MemoryStorage(bound), token_url=TOKEN_URL),
    }
    calls: dict[str, Callable[[], object]] = {
        "bearer_send": lambda a=adapters["bearer_send"]: a.send(prepared),
        "dpop_send": lambda a=adapters["dpop_send"]: a.send(prepared),
        "proof_pyjwt": lambda: key.proof("GET", URL, access_token=bearer.access_token),
        "proof_signer": lambda: signer.proof("GET", URL, access_token=bearer.access_token),
        "ecdsa": lambda: sign(signing_input),
    }
    number = {name: number_send if name.endswith("_send") else number_proof for name in calls}
    for name, call in calls.items():  # warm up, and check that each works
        for _ in range(max(5, number[name] // 10)):
            call()
    if "DPoP" not in adapters["dpop_send"].send(prepared).request.headers:
        raise RuntimeError("the DPoP-bound token was sent without a proof; the numbers would be meaningless")
    samples: dict[str, list[list[float]]] = {name: [] for name in calls}
    order = list(calls)
    for _ in range(repeats):
        for runs in samples.values():
            runs.append([])
        for i in range(rounds):
            for name in order if i % 2 == 0 else reversed(order):
                samples[name][-1].append(_sample(calls[name], number[name]))
    result = DPoPCost(samples, repeats, rounds, number, load)
    for name, what in MEASURES:
        low, high = result.spread(name)
        progress(f"  dpop {what:<78} {result.median(name):6.1f} µs (repeats {low:.1f}-{high:.1f})")
    low, high = result.per_request_spread
    progress(f"  dpop per request: {result.per_request_us:.1f} µs more than Bearer (repeats {low:.1f}-{high:.1f})")
    low, high = result.pyjwt_spread
    progress(f"  dpop PyJWT's share of a proof: {result.pyjwt_us:.1f} µs (repeats {low:.1f}-{high:.1f})")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="small and quick")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    if hasattr(os, "getloadavg"):
        print(f"load average {os.getloadavg()[0]:.2f}")
    if args.smoke:
        run_dpop(repeats=1, rounds=3, number_send=100, number_proof=50)
    else:
        run_dpop(repeats=args.repeats, rounds=args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
