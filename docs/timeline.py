"""Draw the refresh-storm timeline of docs/how-it-works.rst from a real run of the demo.

The picture is committed (docs/_static/refresh-storm-timeline.png); the docs build does not run
this script and does not need matplotlib. To make it again, from the repository root::

    requests-tokenrefresh demo --threads 12 --duration 5 --ttl 2 --timeline /tmp/storm.json
    python docs/timeline.py /tmp/storm.json docs/_static/refresh-storm-timeline.png

The demo's server lives on loopback, its keyring entry is deleted at the end, and the JSON holds
fingerprints, never a token. Threads are on the y axis and time on the x axis; every request is a
bar in the colour of the token generation it was sent with (0 is the expired token the run starts
with); a request that started before its token existed (it waited for a refresh) is hatched; the
token endpoint calls are the black bars on the top row (drawn a little wider than they were: on
loopback one takes microseconds) and a dotted line marks when each new token was handed out. The
lower panel zooms in on the first refresh, where every thread needs a new token at once.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt
from matplotlib.patches import Patch

ENDPOINT_ROW = "token endpoint"
SEED_COLOUR = "#9e9e9e"
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
MIN_BAR = 0.0004  # seconds: a token endpoint call on loopback takes microseconds; keep it visible


def colour(generation: int | None) -> str:
    if generation is None:
        return "#d62728"
    return SEED_COLOUR if generation == 0 else COLOURS[(generation - 1) % len(COLOURS)]


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
            bars,
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
            ax.annotate(
                label, (e["start"] + width, y[ENDPOINT_ROW]), xytext=(6, 0), textcoords="offset points", va="center"
            )
    for generation, published in handed_out.items():
        if start <= published <= end:
            ax.axvline(published, color=colour(generation), linestyle=":", linewidth=1.5 if zoom else 1)
    ax.set_yticks([y[name] for name in rows], rows, fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlim(start, end)
    ax.grid(axis="x", linewidth=0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("timeline", help="the JSON written by `requests-tokenrefresh demo --timeline FILE`")
    parser.add_argument("png", help="the picture to write")
    args = parser.parse_args()
    with open(args.timeline, encoding="utf-8") as f:
        events: list[dict[str, Any]] = json.load(f)
    run = events[0]
    requests_ = [e for e in events if e["type"] == "request"]
    refreshes = [e for e in events if e["type"] == "refresh"]
    tokens = [e for e in events if e["type"] == "token"]
    waited_first = [e for e in requests_ if e.get("waited") and e.get("generation") == 1]
    storm_end = max([e["end"] for e in waited_first] + [(refreshes[0]["end"] or 0) if refreshes else 0])

    fig, (full, zoom) = plt.subplots(2, 1, figsize=(10, 9), height_ratios=[1, 1.15])
    draw(full, events, min(e["start"] for e in requests_) - 0.02, max(e["end"] for e in requests_), zoom=False)
    full.set_title(
        f"requests-tokenrefresh demo: {run['threads']} threads, {run['ttl']:g} s tokens, refresh "
        f"{run['window']:g} s before expiry; {len(requests_)} requests, {len(refreshes)} refresh calls",
        fontsize=10,
    )
    full.axvspan(-0.005, storm_end + 0.005, color="#ffeb3b", alpha=0.35, linewidth=0)
    draw(zoom, events, -0.002, storm_end * 1.25 + 0.002, zoom=True)
    zoom.set_title(
        "zoom on the first refresh (yellow above): the stored token has expired, every thread needs a "
        f"new one; {len(waited_first)} requests wait for one refresh call",
        fontsize=9,
    )
    zoom.set_xlabel("seconds since the threads were released")
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
    fig.legend(handles=legend, loc="lower center", ncol=min(len(legend), 4), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(args.png, dpi=110)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
