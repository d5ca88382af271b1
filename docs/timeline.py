"""Draw the refresh-storm timeline of docs/how-it-works.rst from a real run of the demo.

The picture and the run it is drawn from are committed (docs/_static/refresh-storm-timeline.svg and
docs/_static/refresh-storm-timeline.json.gz, the demo's JSON compressed); the docs build does not run
this script and does not need matplotlib. To redraw it, from the repository root::

    python docs/timeline.py docs/_static/refresh-storm-timeline.json.gz docs/_static/refresh-storm-timeline.svg

and for a new run first::

    requests-tokenrefresh demo --threads 12 --duration 5 --ttl 2 --timeline storm.json
    gzip -9n < storm.json > docs/_static/refresh-storm-timeline.json.gz

The demo's server lives on loopback, its keyring entry is deleted at the end, and the JSON holds
fingerprints, never a token. Threads are on the y axis and time on the x axis; every request is a
bar in the colour of the token generation it was sent with (0 is the expired token the run starts
with); a request that started before its token existed (it waited for a refresh) is hatched; the
token endpoint calls are the black bars on the top row (drawn a little wider than they were: on
loopback one takes microseconds) and a dotted line marks when each new token was handed out. The
lower panel zooms in on the first refresh, where every thread needs a new token at once.

The picture is an SVG drawn at the width of the docs' content column (furo's 46em, 736 px at the
default 16 px font size), so a font size in points is the size in pixels on the page; no text is
smaller than 11 px.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

CONTENT_WIDTH_PX = 736
MIN_FONT_PX = 11
ENDPOINT_ROW = "token endpoint"
SEED_COLOUR = "#9e9e9e"
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
MIN_BAR = 0.0004  # seconds: a token endpoint call on loopback takes microseconds; keep it visible
RC: dict[Any, Any] = {  # rc_context wants its own Literal keys
    "font.size": MIN_FONT_PX,
    "font.family": "sans-serif",
    # Text is laid out with DejaVu Sans; a browser without it falls back to a narrower face, never a wider one.
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica", "Liberation Sans"],
    "svg.fonttype": "none",  # text stays text: sharp at any zoom, searchable, and measurable by tests
    "svg.hashsalt": "refresh-storm-timeline",  # the same events give the same file
    "hatch.linewidth": 0.8,
}


class TimelineError(ValueError):
    """The timeline file is missing, is not JSON, or holds nothing to draw."""


def load(path: Path) -> list[dict[str, Any]]:
    """The events of ``requests-tokenrefresh demo --timeline FILE``, checked enough to draw them.

    Raises:
        TimelineError: The file cannot be read, or it holds no run or no requests.
    """
    try:
        data = path.read_bytes()
        events = json.loads(gzip.decompress(data) if path.suffix == ".gz" else data)
    except (OSError, EOFError) as exc:  # also a .gz file that is not gzip, or cut short
        raise TimelineError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    except ValueError as exc:
        raise TimelineError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(events, list) or not events:
        raise TimelineError(f"{path} holds no events (expected the list written by demo --timeline)")
    if not all(isinstance(e, dict) and "type" in e for e in events) or events[0]["type"] != "run":
        raise TimelineError(f"{path} is not a demo timeline: it must be a list of events, the first of type 'run'")
    if not any(e["type"] == "request" for e in events):
        raise TimelineError(f"{path} holds no requests: the demo sent none, nothing to draw")
    return events


def colour(generation: int | None) -> str:
    if generation is None:
        return "#d62728"
    return SEED_COLOUR if generation == 0 else COLOURS[(generation - 1) % len(COLOURS)]


def merged(bars: list[tuple[float, float]], gap: float) -> list[tuple[float, float]]:
    """Join back-to-back requests closer than ``gap`` seconds: one bar where the eye sees one anyway."""
    out: list[tuple[float, float]] = []
    for start, width in sorted(bars):
        if out and start - (out[-1][0] + out[-1][1]) <= gap:
            last_start, last_width = out[-1]
            out[-1] = (last_start, max(last_width, start + width - last_start))
        else:
            out.append((start, width))
    return out


def draw(ax: Any, events: list[dict[str, Any]], start: float, end: float, *, zoom: bool) -> None:
    threads = sorted({e["thread"] for e in events if e["type"] == "request"}, key=lambda t: int(t.split("-")[-1]))
    rows = [ENDPOINT_ROW, *threads]
    y = {name: len(rows) - 1 - i for i, name in enumerate(rows)}
    min_bar = MIN_BAR * (end - start) / 0.05 if zoom else (end - start) / 400

    spans: dict[tuple[str, int | None, bool], list[tuple[float, float]]] = defaultdict(list)
    for e in events:
        if e["type"] != "request" or e["end"] < start or e["start"] > end:
            continue
        key = (e["thread"], e.get("generation") if e["ok"] else None, bool(e.get("waited")))
        spans[key].append((e["start"], e["end"] - e["start"]))
    for (thread, generation, waited), bars in spans.items():
        ax.broken_barh(
            bars if zoom else merged(bars, (end - start) / 2000),  # a few dozen shapes, not thousands
            (y[thread] - 0.35, 0.7),
            facecolors=colour(generation),
            edgecolors="black" if waited else "white",
            linewidth=0.6 if waited else (0.3 if zoom else 0),
            hatch="////" if waited else None,
        )
    handed_out = {
        e["generation"]: e["published"] for e in events if e["type"] == "token" and e["published"] is not None
    }
    refresh_calls = [e for e in events if e["type"] == "refresh"]
    issued = 0
    for e in refresh_calls:
        issued += e["status"] == 200  # the n-th successful call issued token n
        if e["start"] > end:
            continue
        width = max((e["end"] or e["start"]) - e["start"], min_bar)
        ax.broken_barh([(e["start"], width)], (y[ENDPOINT_ROW] - 0.35, 0.7), facecolors="black")
        if zoom:
            label = f"refresh call (HTTP {e['status']})"
            if e["status"] == 200 and issued in handed_out:
                label += f"; token {issued} handed out at {handed_out[issued] * 1000:.0f} ms (dotted line)"
            right_half = e["start"] > (start + end) / 2
            ax.annotate(
                label,
                (e["start"] if right_half else e["start"] + width, y[ENDPOINT_ROW]),
                xytext=(-6 if right_half else 6, 0),
                textcoords="offset points",
                va="center",
                ha="right" if right_half else "left",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
            )
    for generation, published in handed_out.items():
        if start <= published <= end:
            ax.axvline(published, color=colour(generation), linestyle=":", linewidth=1.5 if zoom else 1)
    ax.set_yticks([y[name] for name in rows], rows)
    ax.tick_params(axis="y", length=0)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlim(start, end)
    ax.grid(axis="x", linewidth=0.3)


def picture(events: list[dict[str, Any]], out: Path) -> None:
    """Draw ``events`` (as checked by :func:`load`) to ``out``, SVG or any format matplotlib knows."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    run = events[0]
    requests_ = [e for e in events if e["type"] == "request"]
    refreshes = [e for e in events if e["type"] == "refresh"]
    tokens = [e for e in events if e["type"] == "token"]
    waited_first = [e for e in requests_ if e.get("waited") and e.get("generation") == 1]
    storm_end = max([e["end"] for e in waited_first] + [(refreshes[0]["end"] or 0) if refreshes else 0] + [0.04])
    threads = len({e["thread"] for e in requests_})
    row_px = 19 * (threads + 1)

    with plt.rc_context(RC):
        fig, (full, zoom) = plt.subplots(
            2,
            1,
            figsize=(CONTENT_WIDTH_PX / 72, (2 * row_px + 250) / 72),
            layout="constrained",
        )
        draw(full, events, min(e["start"] for e in requests_) - 0.02, max(e["end"] for e in requests_), zoom=False)
        full.set_title(
            f"requests-tokenrefresh demo: {run['threads']} threads, {run['ttl']:g} s tokens, refresh "
            f"{run['window']:g} s before expiry;\n{len(requests_):,} requests, {len(refreshes)} refresh calls",
            fontsize=12,
        )
        full.axvspan(-0.005, storm_end + 0.005, color="#ffeb3b", alpha=0.35, linewidth=0)
        full.set_xlabel("seconds since the threads were released")
        draw(zoom, events, -0.002, storm_end * 1.25 + 0.002, zoom=True)
        zoom.set_title(
            textwrap.fill(
                "Zoom on the first refresh (yellow above): the stored token has expired, every thread needs a "
                f"new one; {len(waited_first)} requests wait for one refresh call.",
                90,
            ),
            fontsize=12,
        )
        zoom.xaxis.set_major_formatter(lambda x, _: f"{x * 1000:.0f}")
        zoom.set_xlabel("milliseconds since the threads were released")
        used = {e.get("generation") for e in requests_}
        legend = [
            Patch(facecolor=colour(t["generation"]), label=f"sent with token {t['generation']}")
            for t in tokens
            if t["generation"] in used  # token 0, the expired seed, is never sent
        ]
        if any(not e["ok"] for e in requests_):
            legend.append(Patch(facecolor=colour(None), label="failed"))
        legend += [
            Patch(facecolor="white", edgecolor="black", hatch="////", label="started before its token existed"),
            Patch(facecolor="black", label="token endpoint call"),
        ]
        fig.legend(handles=legend, loc="outside lower center", ncol=3, frameon=False)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, metadata={"Date": None} if out.suffix == ".svg" else None)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "timeline", type=Path, help="the JSON written by `requests-tokenrefresh demo --timeline FILE` (or .json.gz)"
    )
    parser.add_argument("picture", type=Path, help="the picture to write (.svg for the docs)")
    args = parser.parse_args(argv)
    try:
        events = load(args.timeline)
    except TimelineError as exc:
        parser.error(str(exc))
    picture(events, args.picture)
    print(f"wrote {args.picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
