"""Run the benchmarks: refresh storm, overhead, advisory window, processes, encryption, DPoP. See benchmarks/README.md.

    python benchmarks/run.py            # full run (~12 min on 2 cores): benchmarks/results.{md,rst,json}
                                        # (results.rst is included by docs/benchmarks.rst) and
                                        # docs/_static/benchmark-storm.svg
    python benchmarks/run.py --smoke    # CI: the same scenarios, small (< 60 s), into benchmarks/_smoke/
    python benchmarks/run.py --only overhead   # one scenario (repeatable), into benchmarks/_partial/
    python benchmarks/run.py --only encryption --only dpop   # the two CPU-only ones (no server, ~40 s)

Exit status 1 if requests-tokenrefresh misses a correctness target: a failed request, or a
refresh-call count other than one per expiry in the storm. The other libraries' failures are
results, not errors. Timing targets (overhead, advisory window, encryption) are reported, never fatal.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import faulthandler
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _control import ServerProcess  # noqa: E402
from advisory import run_advisory  # noqa: E402
from clients import OURS  # noqa: E402
from dpop import run_dpop  # noqa: E402
from encryption import TARGET_US, run_encryption  # noqa: E402
from overhead import adapter_cost, run_overhead  # noqa: E402
from processes import run_processes  # noqa: E402
from report import machine, report_blocks, storm_chart, to_markdown, to_rst  # noqa: E402
from storm import run_storm  # noqa: E402

SCENARIOS = ("storm", "overhead", "advisory", "processes", "encryption", "dpop")
NEEDS_SERVER = {"storm", "overhead", "advisory"}
FULL = {
    "threads": (64, 256),
    "expiries": 4,
    "per_thread": 4,
    "repeats": 3,
    "pairs": 30,
    "batch": 100,
    "rounds": 20,
    "processes": ((2, 8), (4, 16), (8, 8)),  # (P processes, T threads each)
    "process_seconds": 8.0,
    "encryption": {"repeats": 3, "rounds": 15, "number_memory": 2000, "number_file": 300},
    "dpop": {"repeats": 3, "rounds": 15, "number_send": 1000, "number_proof": 500},
}
SMOKE = {
    "threads": (64,),
    "expiries": 2,
    "per_thread": 2,
    "repeats": 1,
    "pairs": 3,
    "batch": 40,
    "rounds": 1,
    "processes": ((2, 4),),
    "process_seconds": 3.0,
    "encryption": {"repeats": 1, "rounds": 3, "number_memory": 200, "number_file": 40},
    "dpop": {"repeats": 1, "rounds": 3, "number_send": 100, "number_proof": 50},
}

# Spelled out: ruff flags the characters themselves as look-alikes of x and -.
TIMES, AT_MOST, TO = "\N{MULTIPLICATION SIGN}", "\N{LESS-THAN OR EQUAL TO}", "\N{EN DASH}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="small and quick, for CI; writes to benchmarks/_smoke/")
    parser.add_argument("--only", choices=SCENARIOS, action="append", help="run only this scenario (repeatable)")
    parser.add_argument("--out", type=Path, help="directory for results.md and results.json")
    parser.add_argument("--chart", type=Path, help="where to write the storm chart (SVG)")
    parser.add_argument("--no-chart", action="store_true", help="skip the chart (no matplotlib needed)")
    args = parser.parse_args(argv)
    params = SMOKE if args.smoke else FULL
    scenarios = tuple(args.only or SCENARIOS)
    # Only a full run of every scenario replaces the committed results and the docs' picture.
    publish = not args.smoke and not args.only
    out = args.out or (HERE if publish else HERE / ("_smoke" if args.smoke else "_partial"))
    chart = args.chart or (HERE.parent / "docs/_static/benchmark-storm.svg" if publish else out / "benchmark-storm.svg")
    faulthandler.dump_traceback_later(300 if args.smoke else 3600, exit=True)  # a hang is an error, never a wait
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # "connection pool is full" from libraries' own sessions

    command = "python benchmarks/run.py" + (
        " " + shlex.join(argv if argv is not None else sys.argv[1:]) if (argv or sys.argv[1:]) else ""
    )
    started = datetime.datetime.now(datetime.timezone.utc)
    info = machine()
    print(
        f"{'smoke' if args.smoke else 'full'} run on {info['cpus']} CPUs, {info['python']}, load {info['load'][0]:.2f}"
    )
    t0 = time.perf_counter()
    storm = overhead = advisory = processes = encryption = dpop = None
    costs = []
    # The server process only for the scenarios that send requests to it.
    with ServerProcess() if NEEDS_SERVER & set(scenarios) else contextlib.nullcontext() as server:
        if "storm" in scenarios:
            print("1. refresh storm")
            storm = run_storm(
                server, thread_counts=params["threads"], expiries=params["expiries"], per_thread=params["per_thread"]
            )
        if "overhead" in scenarios:
            print("2. overhead")
            overhead = run_overhead(
                server,
                repeats=params["repeats"],
                pairs=params["pairs"],
                batch=params["batch"],
                warmup=min(50, params["batch"]),
            )
            costs = adapter_cost(rounds=3 if args.smoke else 15, number=500 if args.smoke else 5000)
            for cost in costs:
                print(
                    f"  adapter's own work per request, {cost.url}: {cost.extra_us:.1f} µs more than the bare adapter"
                )
        if "advisory" in scenarios:
            print("3. advisory window")
            advisory = run_advisory(server, rounds=params["rounds"])
    if "processes" in scenarios:  # its token server runs in this process, after the shared one stopped
        print("4. processes")
        processes = run_processes(list(params["processes"]), params["process_seconds"])
    if "encryption" in scenarios:
        print("5. encryption at rest")
        encryption = run_encryption(**params["encryption"])
    if "dpop" in scenarios:
        print("6. DPoP")
        dpop = run_dpop(**params["dpop"])
    seconds = time.perf_counter() - t0

    errors = []
    if storm is not None:
        for r in storm:
            if r.library == OURS and not r.meets_target:
                errors.append(
                    f"storm N={r.threads} {r.mode}: {r.failed} failed, refresh calls per expiry {r.refresh_calls}, "
                    f"survived {r.survived}, hung threads {r.hung_threads}"
                )
    if advisory is not None:
        mine = next(r for r in advisory if r.client == OURS)
        if mine.failed:
            errors.append(f"advisory window: {mine.failed} failed requests")
    for r in processes or []:
        if not r.met:
            errors.append(
                f"processes {r.processes}x{r.threads}: {r.failed} failed, {r.refresh_calls} refresh calls for "
                f"{r.expiries} expiries, {r.presented_twice} refresh tokens presented twice, revoked {r.revoked}"
            )
    verdict = verdict_lines(storm, overhead, costs, advisory, processes, encryption, dpop)

    title = (
        "Benchmark results (smoke run: small and noisy, a check, not a measurement)"
        if args.smoke
        else "Benchmark results"
    )
    out.mkdir(parents=True, exist_ok=True)
    blocks = report_blocks(
        command=command,
        info=info,
        started=started.strftime("%Y-%m-%d %H:%M UTC"),
        seconds=seconds,
        storm=storm,
        overhead=overhead,
        costs=costs,
        overhead_params=(params["repeats"], params["pairs"], params["batch"]),
        advisory=advisory,
        processes=processes,
        encryption=encryption,
        dpop=dpop,
        verdict=verdict,
    )
    (out / "results.md").write_text(to_markdown(title, blocks))
    (out / "results.rst").write_text(to_rst(blocks))
    raw = {
        "command": command,
        "started": started.isoformat(),
        "seconds": seconds,
        "machine": info,
        "params": params,
        "storm": [r.as_dict() for r in storm or []],
        "overhead": [r.as_dict() for r in overhead or []],
        "adapter_cost": [{**dataclasses.asdict(c), "extra_us": c.extra_us} for c in costs],
        "advisory": [r.as_dict() for r in advisory or []],
        "processes": [r.as_dict() for r in processes or []],
        "encryption": encryption.as_dict() if encryption is not None else None,
        "dpop": dpop.as_dict() if dpop is not None else None,
    }
    (out / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    if storm and not args.no_chart:
        storm_chart(chart, storm)
        print(f"chart: {chart}")
    print(f"results: {out / 'results.md'} ({seconds:.0f} s)")
    for line in verdict:
        print("  " + line.replace("**", ""))
    faulthandler.cancel_dump_traceback_later()
    if errors:
        print("requests-tokenrefresh missed a correctness target:", *errors, sep="\n  ", file=sys.stderr)
        return 1
    return 0


def _judged(met: bool) -> str:
    return "met" if met else "**not met**"


def verdict_lines(
    storm: list[Any] | None,
    overhead: list[Any] | None,
    costs: list[Any],
    advisory: list[Any] | None,
    processes: list[Any] | None,
    encryption: Any = None,
    dpop: Any = None,
) -> list[str]:
    """One line per scenario run: its name, met or not met, the measured value, then the target."""
    lines = []
    if storm is not None:
        ours = [r for r in storm if r.library == OURS]
        met = sum(r.meets_target for r in ours)
        lines.append(
            f"Refresh storm: {_judged(met == len(ours))}: {met} of {len(ours)} configurations with 0 failed requests, "
            f"exactly 1 refresh call per expiry and a surviving session (target {len(ours)} of {len(ours)})."
        )
    if overhead is not None:
        by = {r.client: r for r in overhead}
        ratio = by[OURS].median
        low, high = by[OURS].spread
        floor = by.get("bare adapter (sets header only)")
        extra = "; ".join(f"{c.url} {c.extra_us:.1f} µs" for c in costs)
        lines.append(
            f"Overhead: {_judged(ratio <= 1.0)}: {ratio:.3f} {TIMES} the CPU time per request of plain requests "
            f"(target {AT_MOST} 1.00; repeats {low:.3f}{TO}{high:.3f})"
            + (f"; the bare-adapter floor measured {floor.median:.3f}" if floor else "")
            + (f". The adapter's own work per request beyond the bare adapter: {extra}." if extra else ".")
        )
    if advisory is not None:
        mine = next(r for r in advisory if r.client == OURS)
        lines.append(
            f"Advisory window: {_judged(mine.p99_ratio <= 1.1)}: p99 {mine.p99_ratio:.2f} {TIMES} steady state "
            f"(target {AT_MOST} 1.10; median over rounds {mine.p99_ratio_rounds:.2f}); slow requests per round "
            f"{mine.slow_per_round('steady'):.1f} steady, {mine.slow_per_round('in_flight'):.1f} with the refresh in "
            f"flight; {mine.failed} failed."
        )
    if processes is not None:
        met = sum(r.met for r in processes)
        lines.append(
            f"Processes: {_judged(met == len(processes))}: {met} of {len(processes)} configurations with 1 refresh "
            f"call per expiry and 0 failed requests (target {len(processes)} of {len(processes)}); "
            f"{sum(r.expiries for r in processes)} expiries, {sum(r.refresh_calls for r in processes)} refresh calls "
            "in all."
        )
    if encryption is not None:
        judged = encryption.judged
        met = sum(c.met for c in judged)
        cells = "; ".join(
            f"{c.inner} {c.operation} {c.overhead_us:.1f} µs ({c.spread[0]:.1f}{TO}{c.spread[1]:.1f})" for c in judged
        )
        lines.append(
            f"Encryption at rest: {_judged(met == len(judged))}: {met} of {len(judged)} under the target. "
            f"EncryptedStorage's overhead per save and load of a {encryption.record_bytes}-byte JWT-sized record: "
            f"{cells} (target < {TARGET_US:.0f} µs each; lowest{TO}highest repeat in brackets)."
        )
    if dpop is not None:
        low, high = dpop.per_request_spread
        lines.append(
            f"DPoP (measured, no target): a DPoP-bound token adds {dpop.per_request_us:.0f} µs of CPU to each "
            f"request's send() over a Bearer token (repeats {low:.0f}{TO}{high:.0f}); a proof alone "
            f"{dpop.median('proof_pyjwt'):.0f} µs, of which the ECDSA signature {dpop.median('ecdsa'):.0f} µs, and "
            f"PyJWT {dpop.pyjwt_us:.0f} µs more than the package's own JWS assembly."
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
