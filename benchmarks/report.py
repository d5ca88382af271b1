"""Turn the scenario results into ``results.md``, ``results.rst`` (for the docs) and the storm chart (PNG)."""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
from pathlib import Path
from typing import Any

from advisory import NO_EARLY_REFRESH, AdvisoryResult
from clients import OURS, library_versions
from overhead import AdapterCost, OverheadResult
from storm import StormResult

__all__ = ["machine", "report_blocks", "storm_chart", "to_markdown", "to_rst"]


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


def storm_chart(path: Path, results: list[StormResult]) -> None:
    """Two panels for the largest N: refresh calls per expiry (log) and failed requests, by mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = max(r.threads for r in results)
    rows = [r for r in results if r.threads == threads]
    modes = list(dict.fromkeys(r.mode for r in rows))
    libraries = list(dict.fromkeys(r.library for r in rows))
    colours = ["#1b7837", "#9970ab", "#e08214", "#4393c3", "#d6604d"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    width = 0.8 / len(libraries)
    for i, library in enumerate(libraries):
        by_mode = {r.mode: r for r in rows if r.library == library}
        xs = [m + (i - (len(libraries) - 1) / 2) * width for m in range(len(modes))]
        calls = [by_mode[m].refresh_per_expiry_median for m in modes]
        failed = [100 * by_mode[m].failed / max(by_mode[m].requests, 1) for m in modes]
        colour = colours[i % len(colours)]
        left.bar(xs, calls, width, label=library, color=colour, edgecolor="black" if library == OURS else colour)
        right.bar(xs, failed, width, label=library, color=colour, edgecolor="black" if library == OURS else colour)
        for x, m in zip(xs, modes, strict=True):
            if by_mode[m].revoked_in_round is not None:
                right.text(x, 101, "revoked", rotation=90, ha="center", va="bottom", fontsize=7)
            elif by_mode[m].failed == 0:
                right.text(x, 1, "0", ha="center", va="bottom", fontsize=7)
    left.set_yscale("log")
    left.axhline(1, color="black", linewidth=0.8, linestyle="--")
    left.set_ylabel("refresh calls per expiry (median, log scale)")
    left.set_title(f"{threads} threads on an expired token: refresh calls")
    right.set_ylim(0, 130)
    right.set_ylabel("failed requests (%)")
    right.set_title("failed requests (revoked = user logged out)")
    for ax in (left, right):
        ax.set_xticks(range(len(modes)))
        ax.set_xticklabels(
            [
                {"none": "no rotation", "rotate": "rotation", "reuse-detection": "rotation +\nreuse detection"}.get(
                    m, m
                )
                for m in modes
            ]
        )
    left.legend(fontsize=8, loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
