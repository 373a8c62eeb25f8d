"""The performance-regression gate: judge a run by what is stable on a shared machine.

- Deterministic costs (FLOPs, bytes autograd saves) of each cell must not grow.
- Time is judged as a ratio to a fixed reference implementation measured in the same run and shape,
  never as seconds: a ratio may grow by at most the baseline's tolerance, set from the run-to-run
  spread measured on unchanged code.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from .records import write_text_atomic

REFERENCE = "triu_index"
BASELINE = Path(__file__).resolve().parent / "suite" / "gate_baseline.json"
DEFAULT_TOLERANCE = 0.5


def cell_measures(benchmarks: list[dict]) -> dict[str, dict]:
    """{"<group> | <interaction>": {"ratio", "flops", "saved_activation_bytes"}} for layer cells.

    `benchmarks` are pytest-benchmark entries (as stored in its JSON, or `as_dict()` of a live one).
    ratio = fastest round of the implementation / fastest round of REFERENCE in the same group. The
    fastest round, not the median: on a shared machine interference only ever adds time, so the
    minimum is the statistic that other processes disturb least.
    """
    layer = [b for b in benchmarks if b.get("extra_info", {}).get("cell") == "layer"]
    reference = {b["group"]: b["stats"]["min"] for b in layer if b["extra_info"]["interaction"] == REFERENCE}
    measures = {}
    for bench in layer:
        if bench["group"] not in reference:
            continue
        info = bench["extra_info"]
        measures[f"{bench['group']} | {info['interaction']}"] = {
            "ratio": bench["stats"]["min"] / reference[bench["group"]],
            "flops": info["flops"],
            "saved_activation_bytes": info["saved_activation_bytes"],
        }
    return measures


def compare(baseline: dict, current: dict[str, dict]) -> tuple[list[str], list[str]]:
    """(regressions, notes). A cell missing from the baseline is a note (a new implementation), not a failure."""
    tolerance = baseline.get("tolerance", DEFAULT_TOLERANCE)
    regressions, notes = [], []
    for key, now in sorted(current.items()):
        before = baseline["cells"].get(key)
        if before is None:
            notes.append(f"{key}: not in the baseline (new cell); refresh the baseline to gate it")
            continue
        for cost in ("flops", "saved_activation_bytes"):
            if now[cost] > before[cost]:
                regressions.append(f"{key}: {cost} grew {before[cost]:,} -> {now[cost]:,}")
        limit = before["ratio"] * (1 + tolerance)
        if now["ratio"] > limit:
            regressions.append(f"{key}: time ratio to {REFERENCE} {before['ratio']:.3f} -> {now['ratio']:.3f} "
                               f"(limit {limit:.3f} at tolerance {tolerance:.0%})")
    for key in sorted(set(baseline["cells"]) - set(current)):
        notes.append(f"{key}: in the baseline but not measured now")
    return regressions, notes


def baseline_from_runs(runs: list[dict[str, dict]], tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """A baseline from one or more runs of unchanged code: the median ratio per cell, and the largest
    relative deviation of any run from it (the spread the tolerance must stay above)."""
    cells = {}
    for key in runs[0]:
        ratios = [run[key]["ratio"] for run in runs if key in run]
        middle = statistics.median(ratios)
        cells[key] = {**runs[0][key], "ratio": middle, "spread": max(abs(r / middle - 1) for r in ratios)}
    spread = max(cell["spread"] for cell in cells.values())
    return {"reference": REFERENCE, "tolerance": tolerance, "measured_spread": spread, "runs": len(runs),
            "cells": cells}


def load_baseline(path: Path = BASELINE) -> dict:
    try:
        baseline = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no gate baseline at {path}; make one with "
                                "`ctrbench gate-baseline` (see README, Regression gate)") from None
    if "cells" not in baseline:
        raise ValueError(f"{path} is not a gate baseline (no 'cells')")
    return baseline


def save_baseline(baseline: dict, path: Path = BASELINE) -> Path:
    return write_text_atomic(path, json.dumps(baseline, indent=1, sort_keys=True) + "\n")


def measure_runs(runs: int, workdir: Path, pytest_args: tuple[str, ...] = (), log=print) -> list[dict]:
    """Run the gate's cells `runs` times, each in a fresh pytest process; their measures."""
    import subprocess
    import sys

    suite = Path(__file__).resolve().parent / "suite"
    Path(workdir).mkdir(parents=True, exist_ok=True)
    measured = []
    for number in range(1, runs + 1):
        dump = Path(workdir) / f"gate_run_{number}.json"
        command = [sys.executable, "-m", "pytest", str(suite), "--benchmark-only", "-p", "ctrbench.pytest_plugin",
                   "-q", "-p", "no:cacheprovider", f"--ctrbench-gate-dump={dump}", *pytest_args]
        log(f"gate run {number}/{runs}: {' '.join(command)}")
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"gate run {number} failed (exit {result.returncode}):\n{result.stdout[-3000:]}"
                               f"\n{result.stderr[-3000:]}")
        measured.append(json.loads(dump.read_text()))
    return measured


def check(baseline: dict, workdir: Path, attempts: int = 3, log=print) -> tuple[list[str], list[str]]:
    """Measure the gate's cells and compare; while some cells regress, measure again (fresh process),
    up to `attempts` runs. A cell fails only if it regressed in every run: a real slowdown does,
    a neighbour's burst of load rarely does twice. Returns (confirmed regressions, notes)."""
    suspects: set[str] | None = None
    for attempt in range(1, attempts + 1):
        (measures,) = measure_runs(1, Path(workdir) / f"attempt_{attempt}", log=log)
        regressions, notes = compare(baseline, measures)
        flagged = {line.split(": ", 1)[0] for line in regressions}
        suspects = flagged if suspects is None else suspects & flagged
        if not suspects:
            return [], notes
        log(f"gate run {attempt}/{attempts}: {len(suspects)} cell(s) still regressed: {', '.join(sorted(suspects))}")
    return [line for line in regressions if line.split(": ", 1)[0] in suspects], notes
