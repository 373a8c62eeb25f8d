"""pytest plugin for `pytest bench/ --benchmark-only`: profiles, the device and the compiled axis,
storage under results/, a per-cell record rewritten after every cell, a time budget, the leaderboard
at the end of a run, and the regression gate. Loaded with `-p ctrbench.pytest_plugin` (pyproject's
pytest settings do that for this repository)."""
from __future__ import annotations

import datetime
import gc
import json
import re
import sys
import time
from pathlib import Path

import pytest
import torch

from ctrbench.measure.cells import COMPILE_CHOICES, PROFILES, CellCompileError
from ctrbench.probes.device import resolve_device as probe_device

from . import gate
from .files import write_text_atomic

DEFAULT_STORAGE = "file://./.benchmarks"
CELL_FIXTURES = ("layer_cell", "model_cell", "gate_cell")


def pytest_addoption(parser):
    group = parser.getgroup("ctrbench", "ctrbench benchmark suite")
    group.addoption("--ctrbench-profile", choices=PROFILES, default="quick",
                    help="quick (default, a few minutes on 2 cores) or full (every shape of the grid); on a GPU "
                         "the same names give GPU shapes (batches up to 65536, F = 10, 39, 100)")
    group.addoption("--ctrbench-device", default="cpu",
                    help="cpu (default), cuda, cuda:N, or auto (cuda where torch sees one): where the layer and "
                         "model cells run; off the CPU the CPU-only data benchmarks are left out")
    group.addoption("--ctrbench-compile", choices=COMPILE_CHOICES, default="auto",
                    help="auto (default: the profile's compiled cells, beside their eager twins), all (every "
                         "layer and model cell also compiled) or none")
    group.addoption("--ctrbench-budget-s", type=float,
                    help="start no new cell after this many seconds from the first; the rest are skipped, "
                         "saying so (default: no limit)")
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


def resolve_device(text: str) -> torch.device:
    """The suite's device from --ctrbench-device (a bare cuda pinned to its index); ValueError saying why."""
    return probe_device(text, "--ctrbench-device", pin=True)


def suite_device(config) -> torch.device:
    device = getattr(config, "_ctrbench_device", None)
    if device is None:          # configured without this plugin's pytest_configure (a bare metafunc, say)
        device = config._ctrbench_device = resolve_device(config.getoption("ctrbench_device"))
    return device


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
    try:
        config._ctrbench_device = resolve_device(config.getoption("ctrbench_device"))
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None
    if is_gate_run(config) and config._ctrbench_device.type != "cpu":
        raise pytest.UsageError("the regression gate measures the CPU: drop --ctrbench-device with --ctrbench-gate")
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
    if not config.option.benchmark_save:
        config.option.benchmark_autosave = benchmark_tag()
    config._ctrbench_cells = CellLog(config)


def pytest_collection_modifyitems(config, items):
    deselected = []
    if is_gate_run(config):
        deselected = [item for item in items if "gate_cell" not in getattr(item, "fixturenames", ())]
    else:
        quality = config.getoption("ctrbench_quality")
        deselected = [item for item in items if item.get_closest_marker("quality") and not quality]
        if suite_device(config).type != "cpu":      # the data benchmarks measure the CPU whatever the device
            deselected += [item for item in items if not item.get_closest_marker("quality")
                           and not set(CELL_FIXTURES) & set(getattr(item, "fixturenames", ()))]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]
    if suite_device(config).type != "cpu":
        # Whole models first on a GPU: under a time budget they are what must not be cut.
        items.sort(key=lambda item: "model_cell" not in getattr(item, "fixturenames", ()))


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def failure_status(error: BaseException) -> str:
    if isinstance(error, CellCompileError):
        return "compile_error"
    if isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower():
        return "oom"
    return "error"


class CellLog:
    """Every cell of a benchmark run and how it ended (ok, skipped, budget, oom, compile_error, error),
    with its benchmark entry when measured: RESULTS/benchmark_cells/<session>.json, rewritten atomically
    after every cell, so a run killed at a time limit keeps all it measured (pytest-benchmark writes its
    JSON only at the end). The session name is also put in that JSON, which then supersedes this file."""

    def __init__(self, config, clock=time.monotonic):
        from ctrbench.store.environment import LoadWindow, device_name, environment
        device = suite_device(config)
        self.load_window = LoadWindow()
        self.clock, self.first_cell = clock, None
        self.budget_s = config.getoption("ctrbench_budget_s")
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d_%H%M%S")
        name = device_name(device)
        self.session = f"{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}_{stamp}"
        self.path = Path(config.getoption("ctrbench_results")) / "benchmark_cells" / f"{self.session}.json"
        self.document = {"kind": "suite_cells", "session": self.session, "device": str(device), "device_name": name,
                         "environment": environment(device), "profile": config.getoption("ctrbench_profile"),
                         "compile": config.getoption("ctrbench_compile"), "budget_s": self.budget_s,
                         "argv": sys.argv[1:], "started": now(), "finished": None, "complete": False,
                         "stopped": None, "cells": []}

    def budget_reason(self) -> str | None:
        """Why no new cell starts now (the budget is spent), or None; the clock starts at the first cell."""
        if self.first_cell is None:
            self.first_cell = self.clock()
            return None
        if self.budget_s is None:
            return None
        elapsed = self.clock() - self.first_cell
        if elapsed < self.budget_s:
            return None
        if self.document["stopped"] is None:
            done = len(self.document["cells"])
            self.document["stopped"] = f"time budget of {self.budget_s:g} s spent after {done} cells"
        return f"{self.document['stopped']} (--ctrbench-budget-s)"

    def add(self, item, status: str, reason: str | None, seconds: float, benchmark=None) -> None:
        cell = item_cell(item)
        entry = {"nodeid": item.nodeid, "status": status, "reason": reason, "seconds": round(seconds, 3),
                 "group": cell.group if cell is not None else None,
                 "extra_info": cell.info() if cell is not None else {}, "benchmark": None}
        window = getattr(item, "_ctrbench_load", None)
        if window is not None and benchmark is not None and status == "ok":
            # the load while this cell ran, beside its timing: a cell measured on a busy machine is marked so
            benchmark.extra_info["load_avg"] = window.finish()
        if benchmark is not None:
            entry["extra_info"] = {**entry["extra_info"], **benchmark.extra_info}
            if benchmark.stats is not None and status == "ok":
                entry["benchmark"] = benchmark.stats.as_dict(include_data=False)
        self.document["cells"].append(entry)
        self.write()

    def summary(self) -> dict:
        """What the benchmark JSON carries of this run: the session, the device and every cell's outcome."""
        self.document["environment"]["load_avg"] = self.load_window.finish()      # the load so far
        keys = ("session", "device", "device_name", "environment", "profile", "compile", "budget_s", "stopped")
        return {**{key: self.document[key] for key in keys},
                "cells": [{key: cell[key] for key in ("nodeid", "status", "reason", "group", "extra_info")}
                          for cell in self.document["cells"]]}

    def finish(self, exitstatus) -> None:
        """Complete: every selected cell ran (none cut by the budget, the session not interrupted)."""
        self.document["finished"] = now()
        self.document["environment"]["load_avg"] = self.load_window.finish()
        self.document["complete"] = self.document["stopped"] is None and exitstatus in (
            pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
        if self.document["cells"]:
            self.write()

    def write(self) -> None:
        from ctrbench.store.records import write_record
        write_record(self.path, self.document)


def item_cell(item):
    """The suite cell a test item measures, or None (an empty parametrization gives pytest's NOTSET
    placeholder, as a profile with no cells of one kind on this device does)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return next((params[name] for name in CELL_FIXTURES if hasattr(params.get(name), "info")), None)


def cell_log(config) -> CellLog | None:
    return getattr(config, "_ctrbench_cells", None)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    log = cell_log(item.config)
    if log is None or "benchmark" not in getattr(item, "fixturenames", ()):
        return
    reason = log.budget_reason()
    if reason:
        item._ctrbench_budget_skip = True
        pytest.skip(reason)
    from ctrbench.store.environment import LoadWindow
    item._ctrbench_load = LoadWindow()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Record the cell once it has ended: at setup if it never ran (skipped, budget, error), else at call."""
    outcome = yield
    log = cell_log(item.config)
    if log is None or "benchmark" not in getattr(item, "fixturenames", ()):
        return
    report = outcome.get_result()
    if call.when == "setup" and report.passed or call.when == "teardown":
        return
    benchmark = getattr(item, "funcargs", {}).get("benchmark")
    if report.passed:
        status, reason = "ok", None
    elif report.skipped:
        status = "budget" if getattr(item, "_ctrbench_budget_skip", False) else "skipped"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    else:
        item._ctrbench_failed = True
        error = call.excinfo.value if call.excinfo else None
        status = failure_status(error) if error is not None else "error"
        reason = f"{type(error).__name__}: {error}"[:2000] if error is not None else str(report.longrepr)[:2000]
    log.add(item, status, reason, call.duration, benchmark)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """After a failed GPU cell, let go of what its traceback holds, so the next cell has the memory."""
    if not getattr(item, "_ctrbench_failed", False) or suite_device(item.config).type != "cuda":
        return
    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        if hasattr(sys, name):
            setattr(sys, name, None)
    gc.collect()
    torch.cuda.empty_cache()


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_json(config, benchmarks, output_json):
    """The benchmark JSON says which session, device and cells it holds (the leaderboard keys on it)."""
    log = cell_log(config)
    if log is not None:
        output_json["ctrbench"] = log.summary()


def live_benchmarks(config) -> list[dict]:
    session = getattr(config, "_benchmarksession", None)
    if session is None:
        return []
    return [bench.as_dict(include_data=False) for bench in session.benchmarks if bench]


def pytest_sessionfinish(session, exitstatus):
    """Runs after pytest-benchmark has stored its JSON (its hook wraps this one)."""
    config = session.config
    if cell_log(config) is not None:
        cell_log(config).finish(session.exitstatus)
    if not is_benchmark_run(config) or not live_benchmarks(config):
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    say = (lambda line: reporter.write_line(line)) if reporter else print
    if is_gate_run(config):
        measures = gate.cell_measures(live_benchmarks(config))
        dump = config.getoption("ctrbench_gate_dump")
        if dump:
            write_text_atomic(dump, json.dumps(measures, indent=1, sort_keys=True))
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
    # A failed cell (out of memory, not compiling) is a result, recorded with the others: the tables
    # are still worth writing. An interrupted or misused session writes nothing.
    if not config.getoption("ctrbench_no_leaderboard") and session.exitstatus in (pytest.ExitCode.OK,
                                                                                   pytest.ExitCode.TESTS_FAILED):
        from ctrbench.report.leaderboard import write_leaderboard
        path = write_leaderboard(config.getoption("ctrbench_results"), log=say)
        say(f"ctrbench: leaderboard regenerated: {path}")


def benchmark_tag() -> str:
    """The stored JSON's name as --benchmark-autosave makes it (commit, time, `uncommitted-changes`
    when the code is modified), with ctrbench's idea of modified: see git_commit."""
    from pytest_benchmark.utils import get_current_time

    from ctrbench.store.environment import git_commit
    commit = git_commit()
    if commit is None:
        from pytest_benchmark.utils import get_tag
        return get_tag()
    parts = [commit.removesuffix("+dirty"), get_current_time()]
    return "_".join(parts + (["uncommitted-changes"] if commit.endswith("+dirty") else []))


@pytest.hookimpl(tryfirst=True)     # before pytest-benchmark's own (first result wins)
def pytest_benchmark_generate_commit_info(config):
    """pytest-benchmark's commit info, with ctrbench's idea of dirty: rewritten results/ (the suite's
    own output) do not make the code look modified, nor name the stored JSON `uncommitted-changes`."""
    from pytest_benchmark.utils import get_commit_info

    from ctrbench.store.environment import git_commit
    info = get_commit_info()
    commit = git_commit()
    if commit is not None:
        info["dirty"] = commit.endswith("+dirty")
    return info
