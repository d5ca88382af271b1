"""``requests-tokenrefresh demo --timeline FILE``: the events behind the storm picture in the docs.

The demo runs in a subprocess, as in test_cli.py, with keyring pointed at the demo's file backend in
``tmp_path``; the timeline it writes must agree with its own summary and with how tokens work.
``docs/timeline.py`` draws the picture from it: an SVG whose text stays text and is at least 11 px
at the width of the docs' content column, like the committed figures in ``docs/_static``.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
TIMELINE_SCRIPT = DOCS / "timeline.py"
FIGURES = ("refresh-storm-timeline.svg", "benchmark-storm.svg")
CONTENT_WIDTH_PX = 736  # furo's content column, 46em at 16 px
MIN_FONT_PX = 11
SVG = "{http://www.w3.org/2000/svg}"
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


def draw_timeline(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TIMELINE_SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def text_sizes_px(svg: Path) -> dict[str, float]:
    """Each text of ``svg`` with its font size in CSS pixels once the picture fills the content column."""
    root = ET.parse(svg).getroot()  # noqa: S314 - our own files
    assert root.tag == f"{SVG}svg"
    scale = CONTENT_WIDTH_PX / float(root.attrib["viewBox"].split()[2])
    sizes = {}
    for element in root.iter(f"{SVG}text"):
        style = dict(part.split(":", 1) for part in element.attrib.get("style", "").replace(" ", "").split(";") if part)
        assert style["font-size"].endswith("px"), element.attrib
        sizes["".join(element.itertext())] = float(style["font-size"][:-2]) * scale
    return sizes


def tiny_timeline(path: Path) -> Path:
    """Two threads, an expired seed, one refresh at 10 ms and one more at 1 s: the demo's shape, by hand."""
    events: list[dict[str, Any]] = [
        {"type": "run", "threads": 2, "duration": 2.0, "ttl": 2.0, "leeway": 60.0, "window": 1.0},
        {"type": "token", "generation": 0, "token": "aaaa0000", "published": None},
        {"type": "token", "generation": 1, "token": "bbbb1111", "published": 0.012},
        {"type": "token", "generation": 2, "token": "cccc2222", "published": 1.003},
        {"type": "refresh", "start": 0.010, "end": 0.0101, "status": 200, "refresh_token": "dddd3333"},
        {"type": "refresh", "start": 1.001, "end": 1.0011, "status": 200, "refresh_token": "eeee4444"},
    ]
    for thread in ("demo-0", "demo-1"):
        start = 0.0
        while start < 2.0:
            generation = 1 if start < 1.003 else 2
            end = max(start + 0.02, 0.03 if start == 0 else 0)
            events.append(
                {
                    "type": "request",
                    "thread": thread,
                    "start": start,
                    "end": end,
                    "token": "bbbb1111" if generation == 1 else "cccc2222",
                    "generation": generation,
                    "waited": start == 0.0,
                    "replayed": False,
                    "ok": True,
                }
            )
            start = end
    path.write_text(json.dumps(events))
    return path


def test_timeline_is_an_svg_readable_at_page_width(tmp_path: Path) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pytest.fail("drawing the timeline needs matplotlib: pip install matplotlib (tox installs it)")
    svg = tmp_path / "storm.svg"
    result = draw_timeline(tiny_timeline(tmp_path / "storm.json"), svg)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote {svg}\n"
    sizes = text_sizes_px(svg)  # text elements, not glyph outlines (svg.fonttype "none")
    assert {"token endpoint", "demo-0", "demo-1", "sent with token 2", "token endpoint call"} <= set(sizes)
    assert "refresh call (HTTP 200); token 1 handed out at 12 ms (dotted line)" in sizes
    small = {text: size for text, size in sizes.items() if size < MIN_FONT_PX}
    assert not small, f"text smaller than {MIN_FONT_PX} px at {CONTENT_WIDTH_PX} px wide: {small}"


@pytest.mark.parametrize("name", FIGURES)
def test_committed_figure_is_readable_at_page_width(name: str) -> None:
    sizes = text_sizes_px(DOCS / "_static" / name)

    assert len(sizes) > 10
    small = {text: size for text, size in sizes.items() if size < MIN_FONT_PX}
    assert not small, f"text smaller than {MIN_FONT_PX} px at {CONTENT_WIDTH_PX} px wide: {small}"


def test_committed_timeline_is_drawn_from_the_committed_run() -> None:
    events = json.loads(gzip.decompress((DOCS / "_static" / "refresh-storm-timeline.json.gz").read_bytes()))
    texts = text_sizes_px(DOCS / "_static" / "refresh-storm-timeline.svg")

    run = events[0]
    requests_ = sum(e["type"] == "request" for e in events)
    refreshes = sum(e["type"] == "refresh" for e in events)
    assert f"{requests_:,} requests, {refreshes} refresh calls" in texts
    assert (
        f"requests-tokenrefresh demo: {run['threads']} threads, {run['ttl']:g} s tokens, "
        f"refresh {run['window']:g} s before expiry;" in texts
    )
    assert not SERVER_SECRET.search(json.dumps(events))  # fingerprints only


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("", "is not JSON"),
        ("[]", "holds no events"),
        ('{"type": "run"}', "holds no events"),
        ('[{"type": "token"}]', "is not a demo timeline"),
        ('[{"type": "run", "threads": 2}, {"type": "token", "generation": 0}]', "holds no requests"),
    ],
)
def test_timeline_without_data_is_a_clear_error(tmp_path: Path, content: str | None, message: str) -> None:
    source = tmp_path / "storm.json"
    if content is not None:
        source.write_text(content)
    result = draw_timeline(source, tmp_path / "storm.svg")

    assert result.returncode == 2
    error = result.stderr.splitlines()[-1]
    assert error.startswith("timeline.py: error: ")
    assert str(source) in error
    assert message in error
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "storm.svg").exists()
