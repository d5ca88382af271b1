"""Turn the scenario results into ``results.md``, ``results.rst`` (for the docs) and the storm chart (SVG).

Redraw the chart from the committed numbers, without running the benchmarks::

    python benchmarks/report.py benchmarks/results.json docs/_static/benchmark-storm.svg
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from advisory import NO_EARLY_REFRESH, AdvisoryResult
from clients import OURS, library_versions
from dpop import MEASURES, DPoPCost
from encryption import TARGET_US, EncryptionResult
from overhead import AdapterCost, OverheadResult
from storm import StormResult

__all__ = ["load_storm", "machine", "report_blocks", "storm_chart", "to_markdown", "to_rst"]


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "cpu": cpu,
        "cpus": usable,
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "load": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "environ": len(os.environ),
        "versions": library_versions(),
        "revision": _revision(),
    }


def _revision() -> str:
    """The checkout's commit, and whether the package has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(  # noqa: S603 - a fixed git command
            ["git", "-C", str(root), *args],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "requests_tokenrefresh")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return head + (" with uncommitted changes to requests_tokenrefresh/" if dirty else "")


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


# A report is a list of blocks, rendered to Markdown (results.md) and reStructuredText (results.rst,
# included by docs/benchmarks.rst): ("h", title), ("p", text) or ("table", header, rows). Text may
# use **bold** and `code` (Markdown spelling; converted for reST).
Block = tuple[Any, ...]


def _storm_blocks(results: list[StormResult]) -> list[Block]:
    blocks: list[Block] = []
    for threads in sorted({r.threads for r in results}):
        rows = [r for r in results if r.threads == threads]
        first = rows[0]
        blocks.append(("p", f"**N = {threads} threads**, {first.per_thread} requests each, {first.expiries} expiries."))
        header = [
            "server mode",
            "library",
            "failed requests",
            "refresh calls per expiry: median (min-max)",
            "family revoked",
            "session survives",
            "target met",
        ]
        table = []
        for r in rows:
            calls = r.refresh_calls
            spread = f"{min(calls)}-{max(calls)}" if min(calls) != max(calls) else f"{calls[0]} every time"
            failed = f"{r.failed} / {r.requests} ({100 * r.failed / max(r.requests, 1):.0f} %)"
            revoked = "no" if r.revoked_in_round is None else f"**yes**, expiry {r.revoked_in_round}"
            name = f"**{r.library}**" if r.library == OURS else r.library
            table.append(
                [
                    r.mode,
                    name,
                    failed,
                    f"{r.refresh_per_expiry_median:g} ({spread})",
                    revoked,
                    _yes(r.survived),
                    _yes(r.meets_target),
                ]
            )
        blocks.append(("table", header, table))
    kinds: dict[str, set[str]] = {}
    for r in results:
        for kind in r.failures:
            kinds.setdefault(r.library, set()).add(kind)
    if kinds:
        blocks.append(
            (
                "p",
                "What the failed requests were: "
                + "; ".join(f"{lib}: {', '.join(sorted(k))}" for lib, k in kinds.items())
                + ".",
            )
        )
    return blocks


def _overhead_blocks(
    results: list[OverheadResult], costs: list[AdapterCost], repeats: int, pairs: int, batch: int
) -> list[Block]:
    base_us = statistics.median(us for r in results for us in r.baseline_us)
    blocks: list[Block] = [
        (
            "p",
            f"{repeats} repeats x {pairs} pairs of {batch}-request batches per client; CPU time of the client "
            f"process. Baseline (plain requests, static header): median {base_us:.0f} µs CPU per request here.",
        )
    ]
    table = []
    for r in results:
        low, high = r.quartiles
        rep_low, rep_high = r.spread
        name = f"**{r.client}**" if r.client == OURS else r.client
        table.append(
            [
                name,
                f"{r.median:.3f}",
                f"{rep_low:.3f}-{rep_high:.3f}",
                f"{low:.3f}-{high:.3f}",
                f"{statistics.median(r.client_us):.0f}",
            ]
        )
    header = [
        "client",
        "CPU per request vs baseline (median over repeats of the median per-pair ratio)",
        "lowest-highest repeat",
        "interquartile range of all per-pair ratios",
        "µs per request (median)",
    ]
    blocks.append(("table", header, table))
    if costs:
        blocks.append(
            (
                "p",
                "The adapter's own work per request: `adapter.send()` with the network replaced by a canned "
                "response, median µs.",
            )
        )
        blocks.append(
            (
                "table",
                ["URL", "bare adapter", "requests-tokenrefresh", "extra per request"],
                [[c.url, f"{c.bare_us:.1f}", f"{c.ours_us:.1f}", f"{c.extra_us:.1f}"] for c in costs],
            )
        )
    return blocks


def _advisory_blocks(results: list[AdvisoryResult]) -> list[Block]:
    first = results[0]
    header = [
        "client",
        "p99 in flight / steady",
        "same, median over rounds",
        "p50 steady",
        "p50 in flight",
        "p99 steady",
        "p99 in flight",
        "slow requests per round, steady",
        "slow requests per round, in flight",
        "refresh calls per round",
    ]
    table = []
    for r in results:
        name = f"**{r.client}**" if r.client == OURS else r.client
        if r.client in NO_EARLY_REFRESH:
            name += " †"
        table.append(
            [
                name,
                f"{r.p99_ratio:.2f}",
                f"{r.p99_ratio_rounds:.2f}",
                f"{r.p('steady', 50) * 1e3:.1f} ms",
                f"{r.p('in_flight', 50) * 1e3:.1f} ms",
                f"{r.p('steady', 99) * 1e3:.1f} ms",
                f"{r.p('in_flight', 99) * 1e3:.1f} ms",
                f"{r.slow_per_round('steady'):.1f}",
                f"{r.slow_per_round('in_flight'):.1f}",
                f"{r.refresh_calls / r.rounds:.1f}",
            ]
        )
    return [
        (
            "p",
            f"{first.rounds} rounds, {first.threads} threads, token endpoint delayed {first.window * 1e3:.0f} ms.",
        ),
        ("table", header, table),
        (
            "p",
            "Percentiles pool all rounds, except the median over rounds of each round's p99 ratio. "
            f"Slow: took at least {0.8 * first.window * 1e3:.0f} ms (80 % of the refresh delay); in flight, "
            "such a request most likely waited for the refresh. † has no early-refresh window (it refreshes "
            "only once the token has expired); its row is measured with an expired token.",
        ),
    ]


def _encryption_blocks(result: EncryptionResult) -> list[Block]:
    load = f"; load average at its start {result.load[0]:.2f}" if result.load else ""
    number = ", ".join(f"{n} for {name}" for name, n in result.number.items())
    table = []
    for c in result.costs:
        low, high = c.spread
        table.append(
            [
                c.inner,
                c.operation,
                f"{c.plain_median:.1f}",
                f"{c.encrypted_median:.1f}",
                f"**{c.overhead_us:.1f}**" if c.judged else f"{c.overhead_us:.1f}",
                f"{low:.1f}-{high:.1f}",
                ("yes" if c.met else "**no**") if c.judged else "(context)",
            ]
        )
    return [
        (
            "p",
            f"EncryptedStorage (AES-256-GCM) over an inner storage, against that inner storage alone, saving and "
            f"loading a JWT-sized record: a 1.2 kB JWT access token, an opaque refresh token, a 0.9 kB `id_token` "
            f"in `extra` ({result.record_bytes} bytes as a JSON record, {result.stored_bytes} bytes as the "
            f"encrypted record stored instead). CPU µs per call; {result.repeats} repeats x {result.rounds} rounds "
            f"of pairs, the order flipped every round; calls per sample: {number}{load}. MemoryStorage keeps the "
            "Token object itself, so its overhead includes the JSON round trip of the plaintext record; a storage "
            "that serialises does not absorb it, as it then serialises the encrypted stand-in instead of the record "
            "(the JSON-record row: kept as a string, as the keyring and Redis keep it, without their I/O). Token "
            f"files in {result.directory}.",
        ),
        (
            "table",
            [
                "inner storage",
                "operation",
                "inner alone, µs",
                "encrypted, µs",
                "overhead, µs (median over repeats of the median per-pair difference)",
                "lowest-highest repeat",
                f"< {TARGET_US:.0f} µs",
            ],
            table,
        ),
    ]


def _dpop_blocks(result: DPoPCost) -> list[Block]:
    load = f"; load average at its start {result.load[0]:.2f}" if result.load else ""
    rows = []
    for name, what in MEASURES:
        low, high = result.spread(name)
        rows.append([what, f"{result.median(name):.1f}", f"{low:.1f}-{high:.1f}"])
    for what, value, (low, high) in (
        (
            "**what a DPoP-bound token adds to a request** (DPoP minus Bearer, per pair)",
            f"**{result.per_request_us:.1f}**",
            result.per_request_spread,
        ),
        (
            "what PyJWT adds to a proof (PyJWT minus from_signer, per pair)",
            f"{result.pyjwt_us:.1f}",
            result.pyjwt_spread,
        ),
    ):
        rows.append([what, value, f"{low:.1f}-{high:.1f}"])
    return [
        (
            "p",
            f"CPU µs per call, {result.repeats} repeats x {result.rounds} rounds, the order flipped every round"
            f"{load}. `adapter.send()` with the network replaced by a canned response, one ES256 proof per request, "
            "no nonce. No target.",
        ),
        ("table", ["what", "µs (median over repeats)", "lowest-highest repeat"], rows),
    ]


def report_blocks(
    *,
    command: str,
    info: dict[str, Any],
    started: str,
    seconds: float,
    storm: list[StormResult] | None,
    overhead: list[OverheadResult] | None,
    costs: list[AdapterCost],
    overhead_params: tuple[int, int, int],
    advisory: list[AdvisoryResult] | None,
    verdict: list[str],
    processes: list[Any] | None = None,
    encryption: EncryptionResult | None = None,
    dpop: DPoPCost | None = None,
) -> list[Block]:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    load = info["load"]
    blocks: list[Block] = [
        ("p", f"`{command}`, started {started}, took {seconds:.0f} s."),
        (
            "p",
            f"Machine: {info['cpus']} CPUs ({info['cpu']}), {info['os']}, {info['python']}; "
            f"load average at start {load[0]:.2f} (other work was running). "
            f"{info['environ']} environment variables (requests scans them for proxy settings on every "
            "request while `trust_env` is on). "
            f"Versions: {versions}; package at commit {info['revision']}.",
        ),
        ("h", "Verdict for requests-tokenrefresh"),
        ("list", verdict),
    ]
    if storm:
        blocks += [("h", "1. Refresh storm"), *_storm_blocks(storm)]
    if overhead:
        blocks += [("h", "2. Overhead"), *_overhead_blocks(overhead, costs, *overhead_params)]
    if advisory:
        blocks += [("h", "3. Advisory window"), *_advisory_blocks(advisory)]
    if processes:
        seconds = processes[0].seconds
        blocks += [
            ("h", "4. Processes"),
            (
                "p",
                f"P processes x T threads, each process with its own adapter over one keyring entry (a file "
                f"keyring shared by all), {seconds:.0f} s of requests with 2-second tokens against a server that "
                "rotates refresh tokens and revokes the family on reuse. An expiry is a token generation (a "
                "successful refresh call). requests-tokenrefresh only: none of the other libraries shares a "
                "token between processes.",
            ),
            (
                "table",
                [
                    "P x T",
                    "requests ok",
                    "failed",
                    "expiries",
                    "refresh calls",
                    "refresh calls per expiry",
                    "refresh tokens presented twice",
                    "family revoked",
                    "target met",
                ],
                [
                    [
                        f"{r.processes} x {r.threads}",
                        str(r.ok),
                        str(r.failed),
                        str(r.expiries),
                        str(r.refresh_calls),
                        f"{r.per_expiry:.2f}",
                        str(r.presented_twice),
                        "**yes**" if r.revoked else "no",
                        "yes" if r.met else "**no**",
                    ]
                    for r in processes
                ],
            ),
        ]
    if encryption:
        blocks += [("h", "5. Encryption at rest"), *_encryption_blocks(encryption)]
    if dpop:
        blocks += [("h", "6. DPoP"), *_dpop_blocks(dpop)]
    return blocks


def to_markdown(title: str, blocks: list[Block]) -> str:
    lines = [f"# {title}", ""]
    for block in blocks:
        kind = block[0]
        if kind == "h":
            lines += [f"## {block[1]}", ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "list":
            lines += [*(f"- {item}" for item in block[1]), ""]
        else:
            header, rows = block[1], block[2]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("| " + " | ".join("---" for _ in header) + " |")
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            lines.append("")
    return "\n".join(lines)


def _rst_text(text: str) -> str:
    return re.sub(r"(?<!`)`([^`]+)`(?!`)", r"``\1``", text)


def to_rst(blocks: list[Block]) -> str:
    """The blocks as a reST fragment for ``.. include::`` under a section of the including page.

    Its headings use ``~``: the page must use ``=`` and ``-`` above it.
    """
    lines = [".. This file is written by benchmarks/run.py (a full run); do not edit it by hand.", ""]
    for block in blocks:
        kind = block[0]
        if kind == "h":
            lines += [block[1], "~" * len(block[1]), ""]
        elif kind == "p":
            lines += [_rst_text(block[1]), ""]
        elif kind == "list":
            lines += [*(f"* {_rst_text(item)}" for item in block[1]), ""]
        else:
            header, rows = block[1], block[2]
            lines += [".. list-table::", "   :header-rows: 1", ""]
            for row in [header, *rows]:
                lines.append(f"   * - {_rst_text(row[0])}")
                lines += [f"     - {_rst_text(cell)}" for cell in row[1:]]
            lines.append("")
    return "\n".join(lines)


# The chart is drawn at the width of the docs' content column, so that one SVG unit is one CSS pixel
# there and a font size in points is the size in pixels on the page: furo's column is 46em, 736 px
# at the browser's default 16 px (wider on large screens, never narrower on a desktop).
CONTENT_WIDTH_PX = 736
MIN_FONT_PX = 11
_CHART_RC: dict[Any, Any] = {  # rc_context wants its own Literal keys
    "font.size": MIN_FONT_PX,
    "font.family": "sans-serif",
    # Text is laid out with DejaVu Sans; a browser without it falls back to a narrower face, never a wider one.
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica", "Liberation Sans"],
    "svg.fonttype": "none",  # text stays text: sharp at any zoom, searchable, and measurable by tests
    "svg.hashsalt": "benchmark-storm",  # the same data gives the same file
}
_MODE_LABELS = {
    "none": "no rotation",
    "rotate": "rotation",
    "reuse-detection": "rotation + reuse detection",
}
_COLOURS = {OURS: "#1b7837"}
_OTHER_COLOURS = ["#9970ab", "#e08214", "#4393c3", "#d6604d", "#878787"]
_LOG_FLOOR = 0.3  # left edge of the log axis: a bar of 1 refresh call stays a visible bar


def load_storm(path: Path) -> list[StormResult]:
    """The refresh-storm results saved in ``results.json`` by a run.

    Raises:
        ValueError: The file holds no storm results (or is not a results file).
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from exc
    rows = raw.get("storm") if isinstance(raw, dict) else None
    if not rows:
        raise ValueError(f"{path} has no refresh-storm results (run the storm scenario first)")
    try:
        return [StormResult(**{**row, "failures": collections.Counter(row.get("failures", {}))}) for row in rows]
    except TypeError as exc:
        raise ValueError(f"{path}: a storm result does not match StormResult: {exc}") from exc


def storm_chart(path: Path, results: list[StormResult]) -> None:
    """Draw the storm for the largest N: refresh calls per expiry (log) and failed requests, by mode.

    One row of panels per server mode, one bar per library, every bar labelled with its value.
    Written as SVG (or any format matplotlib knows, by ``path``'s suffix).

    Raises:
        ValueError: ``results`` is empty.
    """
    if not results:
        raise ValueError("no refresh-storm results to draw")
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    threads = max(r.threads for r in results)
    rows = [r for r in results if r.threads == threads]
    modes = list(dict.fromkeys(r.mode for r in rows))
    libraries = sorted(dict.fromkeys(r.library for r in rows), key=lambda lib: lib != OURS)  # ours on top
    others = iter(_OTHER_COLOURS * len(libraries))
    colours = {lib: _COLOURS.get(lib) or next(others) for lib in libraries}
    by_key = {(r.mode, r.library): r for r in rows}
    most_calls = max(1.0, *(r.refresh_per_expiry_median for r in rows))
    first = rows[0]

    row_px = 19 * len(libraries) + 40
    with plt.rc_context(_CHART_RC):
        fig, axes = plt.subplots(
            len(modes),
            2,
            figsize=(CONTENT_WIDTH_PX / 72, (row_px * len(modes) + 110) / 72),
            sharex="col",
            sharey=True,
            squeeze=False,
            layout="constrained",
            gridspec_kw={"width_ratios": [1.15, 1]},
        )
        ys = list(range(len(libraries)))[::-1]
        for (calls_ax, failed_ax), mode in zip(axes, modes, strict=True):
            calls_ax.set_title(_MODE_LABELS.get(mode, mode), loc="left", fontsize=12, fontweight="bold")
            calls_ax.set_xscale("log")
            calls_ax.axvline(1, color="black", linewidth=0.8, linestyle="--", zorder=0)
            for y, library in zip(ys, libraries, strict=True):
                r = by_key.get((mode, library))
                style = {"color": colours[library], "edgecolor": "black" if library == OURS else "none"}
                weight = "bold" if library == OURS else "normal"
                if r is None:
                    calls_ax.text(_LOG_FLOOR * 1.2, y, "not run", va="center")
                    failed_ax.text(2, y, "not run", va="center")
                    continue
                calls = r.refresh_per_expiry_median
                if calls > _LOG_FLOOR:  # 0 (no refresh call at all) has no bar on a log axis, only its label
                    calls_ax.barh(y, calls - _LOG_FLOOR, left=_LOG_FLOOR, height=0.72, **style)
                calls_ax.text(max(calls, _LOG_FLOOR) * 1.25, y, f"{calls:g}", va="center", fontweight=weight)
                percent = 100 * r.failed / max(r.requests, 1)
                failed_ax.barh(y, percent, height=0.72, **style)
                label = f"{percent:.0f} %" + (", revoked" if r.revoked_in_round is not None else "")
                failed_ax.text(percent + 2, y, label, va="center", fontweight=weight)
            calls_ax.set_yticks(ys, libraries)
            for label in calls_ax.get_yticklabels():
                if label.get_text() == OURS:
                    label.set_fontweight("bold")
            for ax in (calls_ax, failed_ax):
                ax.tick_params(axis="y", length=0)
                ax.spines[["top", "right"]].set_visible(False)
                ax.grid(axis="x", linewidth=0.4, color="#cccccc")
                ax.set_axisbelow(True)
        calls_ax.set_xlim(_LOG_FLOOR, most_calls * 6)
        calls_ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))  # 1000, not 10 to the 3
        calls_ax.xaxis.set_minor_formatter(NullFormatter())
        calls_ax.set_xlabel("refresh calls per expiry (median, log scale;\ndashed line: 1, the target)")
        failed_ax.set_xlim(0, 160)
        failed_ax.set_xticks([0, 25, 50, 75, 100])
        failed_ax.set_xlabel("failed requests (%; revoked:\nthe server revoked the token family)")
        fig.suptitle(
            f"{threads} threads released at once on an expired token, {first.expiries} expiries",
            fontsize=12,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, metadata={"Date": None} if path.suffix == ".svg" else None)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Redraw the storm chart from a saved ``results.json``, without running the benchmarks."""
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("results", nargs="?", type=Path, default=here / "results.json", help="default: %(default)s")
    parser.add_argument(
        "chart",
        nargs="?",
        type=Path,
        default=here.parent / "docs/_static/benchmark-storm.svg",
        help="the picture to write (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        storm_chart(args.chart, load_storm(args.results))
    except ValueError as exc:
        parser.error(str(exc))
    print(f"chart: {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
