"""``requests-tokenrefresh demo --timeline FILE``: the events behind the storm picture in the docs.

The demo runs in a subprocess, as in test_cli.py, with keyring pointed at the demo's file backend in
``tmp_path``; the timeline it writes must agree with its own summary and with how tokens work.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

FILE_BACKEND = "requests_tokenrefresh._demo.DemoFileKeyring"
SERVER_SECRET = re.compile(r"\b(?:at|rt)-[A-Za-z0-9_-]{20,}")


def demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON_KEYRING", "REQUESTS_TOKEN"))}
    environment.update(
        PYTHON_KEYRING_BACKEND=FILE_BACKEND,
        REQUESTS_TOKENREFRESH_DEMO_KEYRING=str(tmp_path / "keyring.json"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
    )
    return subprocess.run(
        [sys.executable, "-m", "requests_tokenrefresh", "demo", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment,
        timeout=60,
        check=False,
    )


def number(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    assert match, f"no {pattern!r} in {text}"
    return int(match.group(1))


@pytest.mark.slow
def test_timeline_matches_the_summary_and_the_token_rules(tmp_path: Path) -> None:
    path = tmp_path / "storm.json"
    result = demo(tmp_path, "--threads", "4", "--duration", "2", "--ttl", "1", "--timeline", str(path))

    assert result.returncode == 0, result.stdout + result.stderr
    text = path.read_text()
    assert not SERVER_SECRET.search(text)  # fingerprints only
    events: list[dict[str, Any]] = json.loads(text)
    assert f"timeline: {len(events)} events written to {path}" in result.stdout
    run = events[0]
    assert run == {"type": "run", "threads": 4, "duration": 2.0, "ttl": 1.0, "leeway": 60.0, "window": 0.5}
    tokens = [e for e in events if e["type"] == "token"]
    refreshes = [e for e in events if e["type"] == "refresh"]
    requests_ = [e for e in events if e["type"] == "request"]
    assert {e["type"] for e in events} == {"run", "token", "refresh", "request"}

    # One token endpoint call per new token, all successful, each before its token was handed out.
    assert len(refreshes) == number(r"refresh calls +(\d+) for", result.stdout) >= 2
    assert [e["status"] for e in refreshes] == [200] * len(refreshes)
    assert [t["generation"] for t in tokens] == list(range(len(refreshes) + 1))
    assert tokens[0]["published"] is None  # the expired seed
    published = {t["generation"]: t["published"] for t in tokens[1:]}
    assert list(published.values()) == sorted(published.values())
    for generation, refresh in enumerate(refreshes, start=1):
        assert refresh["start"] <= refresh["end"] <= published[generation]
    assert len({e["refresh_token"] for e in refreshes}) == len(refreshes)  # never presented twice

    # Requests: as many as the summary says, all ok, none sent with the expired seed or before its token existed.
    assert len(requests_) == number(r"requests +(\d+) ok", result.stdout)
    assert sum(e["waited"] for e in requests_) == number(r"waited for refresh +(\d+) requests", result.stdout)
    assert all(e["ok"] and e["start"] <= e["end"] for e in requests_)
    assert all(1 <= e["generation"] <= len(refreshes) for e in requests_)
    assert all(e["end"] >= refreshes[e["generation"] - 1]["start"] for e in requests_)  # not before it was issued
    assert {t["token"] for t in tokens[1:]} == {e["token"] for e in requests_}
    by_thread: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in requests_:
        by_thread[e["thread"]].append(e)
    assert sorted(by_thread) == ["demo-0", "demo-1", "demo-2", "demo-3"]
    for sent in by_thread.values():
        sent.sort(key=lambda e: e["start"])
        first = sent[0]
        assert first["waited"]  # the stored token had expired: every thread waited for the first refresh
        assert first["generation"] == 1
        generations = [e["generation"] for e in sent]
        assert generations == sorted(generations)  # a thread never goes back to an older token


def test_unwritable_timeline_fails_before_the_demo_runs(tmp_path: Path) -> None:
    started = time.monotonic()
    result = demo(tmp_path, "--duration", "30", "--timeline", str(tmp_path / "missing" / "storm.json"))

    assert result.returncode == 1
    assert time.monotonic() - started < 20  # not after the 30 s of the demo
    assert "server:" not in result.stdout
    assert result.stderr.startswith("requests-tokenrefresh: error: ")
    assert "Traceback" not in result.stderr
