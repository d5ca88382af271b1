"""Instructions per request of the adapter's own work, counted by valgrind's callgrind.

Instruction counts do not depend on the machine's load, so this resolves what CPU-time ratios
(overhead.py) cannot. Three clients send one prepared request N times with the network replaced
by a canned 200 (a base class under the adapter in the MRO, as in overhead.adapter_cost):

- wire: the canned transport alone, the floor of all three;
- bare: an adapter that sets a fixed Authorization header and calls the transport;
- ours: TokenRefreshAdapter with a fresh token (the steady state).

Each client runs twice, with N and 2N requests, in a fresh interpreter under callgrind, the
garbage collector off in the loop; the difference over N is its instructions per request, free of
start-up. A client's own work is that
minus the wire's. The target: ours within 10 % of bare.

Run: python benchmarks/instructions.py [--requests N]   (needs valgrind: apt-get install valgrind)
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

MODES = ("wire", "bare", "ours")


def _client(mode: str, base: str) -> tuple[Any, Any]:
    import requests
    from requests.adapters import HTTPAdapter

    from requests_tokenrefresh import MemoryStorage, Token, TokenRefreshAdapter

    class Wire(HTTPAdapter):
        def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
            response = requests.Response()
            response.status_code = 200
            response.request = request
            return response

    class Bare(Wire):
        def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
            request.headers["Authorization"] = "Bearer at-" + "x" * 32
            return super().send(request, *args, **kwargs)

    class Ours(TokenRefreshAdapter, Wire):
        pass

    now = time.time()
    token = Token("at-" + "x" * 32, refresh_token="rt-" + "y" * 32, expires_at=now + 3600, obtained_at=now)
    adapter = {
        "wire": lambda: Wire(),
        "bare": lambda: Bare(),
        "ours": lambda: Ours(MemoryStorage(token), token_url=base + "/token"),
    }[mode]()
    prepared = requests.Request("GET", base + "/v1/items").prepare()
    adapter.send(prepared)  # the first request loads the token: not the steady state
    return adapter, prepared


def _child(mode: str, count: int, base: str) -> None:
    adapter, prepared = _client(mode, base)
    send = adapter.send
    # A full collection lands in one run of a pair and not the other, and costs more than the
    # requests: collect now, then keep the collector out of the measured loop.
    gc.collect()
    gc.disable()
    for _ in range(count):
        # As requests.Session.send calls an adapter: adapter.send(request, **kwargs).
        send(prepared, stream=False, timeout=None, verify=True, cert=None, proxies={})


def _instructions(mode: str, count: int, base: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={os.path.join(tmp, 'out')}",
            sys.executable,
            __file__,
            "--child",
            mode,
            "--requests",
            str(count),
            "--base",
            base,
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, check=True)  # noqa: S603 - valgrind on our own script
    match = re.search(r"Collected : (\d+)", done.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count in callgrind's output:\n{done.stderr[-2000:]}")
    return int(match.group(1))


def measure(count: int, base: str) -> dict[str, float]:
    """Instructions per request of each mode (start-up subtracted)."""
    return {mode: (_instructions(mode, 2 * count, base) - _instructions(mode, count, base)) / count for mode in MODES}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="N (default 2000)")
    parser.add_argument("--base", default="https://api.example.com")
    parser.add_argument("--quick", action="store_true", help="only --base, not also plain http to loopback")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.requests, args.base)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install valgrind", file=sys.stderr)
        return 2
    for base in (args.base,) if args.quick else (args.base, "http://127.0.0.1:8080"):
        per = measure(args.requests, base)
        bare, ours = per["bare"] - per["wire"], per["ours"] - per["wire"]
        print(f"{base}/v1/items: instructions per request")
        print(f"  wire (canned transport) {per['wire']:>9,.0f}")
        print(f"  bare adapter, own work  {bare:>9,.0f}")
        print(f"  ours, own work          {ours:>9,.0f}   {ours / bare:.2f}x bare (target <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
