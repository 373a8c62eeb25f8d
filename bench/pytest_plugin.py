"""pytest plugin for `pytest bench/ --benchmark-only`: profiles, storage under results/, the
leaderboard at the end of a run, and the regression gate. Loaded with `-p ctrbench.pytest_plugin`
(pyproject's pytest settings do that for this repository)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from . import gate
from .cells import PROFILES

DEFAULT_STORAGE = "file://./.benchmarks"


def pytest_addoption(parser):
    group = parser.getgroup("ctrbench", "ctrbench benchmark suite")
    group.addoption("--ctrbench-profile", choices=PROFILES, default="quick",
                    help="quick (default, a few minutes on 2 cores) or full (every shape of the grid)")
    group.addoption("--ctrbench-results", default="results", type=Path,
                    help="results folder: benchmark JSON goes to RESULTS/benchmarks, the leaderboard to "
                         "RESULTS/leaderboard.md (default results)")
    group.addoption("--ctrbench-quality", action="store_true",
                    help="also run the multi-seed quality benchmarks (minutes per dataset)")
    group.addoption("--ctrbench-no-leaderboard", action="store_true",
                    help="do not regenerate the leaderboard at the end")
    group.addoption("--ctrbench-threads", type=int,
                    help="torch intra-op threads for the benchmarks (default: torch's choice; 1 for gate runs)")
    group.addoption("--ctrbench-gate", action="store_true",
                    help="run only the gate's cells and fail on regression against the committed baseline")
    group.addoption("--ctrbench-gate-baseline", type=Path, default=gate.BASELINE,
                    help=f"baseline for --ctrbench-gate (default {gate.BASELINE.name} beside the suite)")
    group.addoption("--ctrbench-gate-dump", type=Path,
                    help="run the gate's cells and write their measures (ratios and costs) as JSON to this file "
                         "(what `ctrbench gate-baseline` builds a baseline from)")


def is_benchmark_run(config) -> bool:
    return bool(config.getoption("benchmark_only", False))


def is_gate_run(config) -> bool:
    """Checking against the baseline, or measuring for a new one: the gate's cells only, nothing stored."""
    return bool(config.getoption("ctrbench_gate") or config.getoption("ctrbench_gate_dump"))


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Benchmark runs store their JSON under RESULTS/benchmarks unless told otherwise; gate runs
    store nothing (they are judged, not recorded)."""
    config.addinivalue_line("markers", "quality: multi-seed training benchmark (needs --ctrbench-quality)")
    if not is_benchmark_run(config):
        return
    # Gate runs time on one thread: on 2 shared cores a second OpenMP thread mostly measures who else
    # is running (threads spin-wait for each other), and the gate must judge the code, not the neighbours.
    threads = config.getoption("ctrbench_threads") or (1 if is_gate_run(config) else None)
    if threads:
        torch.set_num_threads(threads)
    if config.getoption("ctrbench_gate"):
        try:      # fail before measuring anything, not after
            config.ctrbench_gate_baseline = gate.load_baseline(config.getoption("ctrbench_gate_baseline"))
        except (FileNotFoundError, ValueError) as error:
            raise pytest.UsageError(str(error)) from None
    if is_gate_run(config):
        return
    if config.option.benchmark_storage == DEFAULT_STORAGE:
        storage = (config.getoption("ctrbench_results") / "benchmarks").resolve()
        config.option.benchmark_storage = f"file://{storage}"
    if not config.option.benchmark_save and not config.option.benchmark_autosave:
        from pytest_benchmark.utils import get_tag     # what --benchmark-autosave would name the file
        config.option.benchmark_autosave = get_tag()


def pytest_collection_modifyitems(config, items):
    deselected = []
    if is_gate_run(config):
        deselected = [item for item in items if "gate_cell" not in getattr(item, "fixturenames", ())]
    elif not config.getoption("ctrbench_quality"):
        deselected = [item for item in items if item.get_closest_marker("quality")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]


def live_benchmarks(config) -> list[dict]:
    session = getattr(config, "_benchmarksession", None)
    if session is None:
        return []
    return [bench.as_dict(include_data=False) for bench in session.benchmarks if bench]


def pytest_sessionfinish(session, exitstatus):
    """Runs after pytest-benchmark has stored its JSON (its hook wraps this one)."""
    config = session.config
    if not is_benchmark_run(config) or not live_benchmarks(config):
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    say = (lambda line: reporter.write_line(line)) if reporter else print
    if is_gate_run(config):
        measures = gate.cell_measures(live_benchmarks(config))
        dump = config.getoption("ctrbench_gate_dump")
        if dump:
            dump.write_text(json.dumps(measures, indent=1, sort_keys=True))
            say(f"ctrbench gate: measures written to {dump}")
        if config.getoption("ctrbench_gate"):
            regressions, notes = gate.compare(config.ctrbench_gate_baseline, measures)
            for note in notes:
                say(f"ctrbench gate: note: {note}")
            for regression in regressions:
                say(f"ctrbench gate: REGRESSION: {regression}")
            say(f"ctrbench gate: {len(measures)} cells checked, {len(regressions)} regression(s)")
            if regressions and session.exitstatus == 0:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return
    if not config.getoption("ctrbench_no_leaderboard") and session.exitstatus in (0, pytest.ExitCode.OK):
        from .leaderboard import write_leaderboard
        path = write_leaderboard(config.getoption("ctrbench_results"), log=say)
        say(f"ctrbench: leaderboard regenerated: {path}")
