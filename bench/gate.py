"""The performance-regression gate: judge the code, not the machine it lands on.

- Deterministic costs (FLOPs, bytes autograd saves) of each cell must not grow.
- Time is judged as a ratio to a fixed reference implementation measured in the same run and shape,
  never as seconds: a ratio may grow by at most the baseline's tolerance, set from the run-to-run
  spread measured on unchanged code.
- `afm_kernel` must not be slower than `afm_fused` in any AFM-pooling layer cell of the same run
  (forward and train, every F): a kernel that is fast on one vector ISA only is caught on the machine
  that lacks it, whatever the baseline says. It is a time check, re-measured like the others.
- A ratio is a property of the CPU as much as of the code (a hand-vectorised kernel against torch's
  own operators gains more from AVX-512 than they do), so a baseline's ratios hold on its own machine
  only. The baseline records a machine signature (CPU identity and flags, torch version, threads).
  Where this machine's signature matches, the run is compared with the baseline's ratios. Where it
  does not, the baseline's own commit (A) and the candidate (B) are both timed here, interleaved in
  fresh processes, and each cell's ratio in B is compared with its ratio in A.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Callable

import torch

from ctrbench.cpu import cpu_model, feature_flags, processors
from ctrbench.files import write_text_atomic
from ctrbench.store.code_identity import code_changed, git

REFERENCE = "triu_index"
SUITE = Path(__file__).resolve().parent / "suite"
BASELINE = SUITE / "gate_baseline.json"
REPO = Path(__file__).resolve().parent.parent       # the source checkout, when there is one
DEFAULT_TOLERANCE = 0.5
GATE_THREADS = 1        # the plugin times gate runs on one torch thread (pytest_plugin.pytest_configure)
TIME_CHECK = "time ratio to"
# The hand-written CPU kernel against the fused torch implementation it replaces, in the same run and cell.
KERNEL, FUSED = "afm_kernel", "afm_fused"
KERNEL_CHECK = f"{KERNEL} slower than {FUSED} at "
KERNEL_POOLING = "layer afm "        # the AFM-pooling layer cells' groups ("layer afm F=39 E=16 B=1024 train")


def cell_key(group: str, interaction: str) -> str:
    return f"{group} | {interaction}"


def gated(info: dict) -> bool:
    """The gate judges CPU eager cells only; compiled or other-device cells a run may add are not its own."""
    return info.get("device", "cpu") == "cpu" and not info.get("compile")


def cell_measures(benchmarks: list[dict]) -> dict[str, dict]:
    """{"<group> | <interaction>": {"ratio", "flops", "saved_activation_bytes"}} for layer cells.

    `benchmarks` are pytest-benchmark entries (as stored in its JSON, or `as_dict()` of a live one).
    ratio = fastest round of the implementation / fastest round of REFERENCE in the same group. The
    fastest round, not the median: on a shared machine interference only ever adds time, so the
    minimum is the statistic that other processes disturb least.
    """
    layer = [b for b in benchmarks if b.get("extra_info", {}).get("cell") == "layer" and gated(b["extra_info"])]
    reference = {b["group"]: b["stats"]["min"] for b in layer if b["extra_info"]["interaction"] == REFERENCE}
    measures = {}
    for bench in layer:
        if bench["group"] not in reference:
            continue
        info = bench["extra_info"]
        measures[cell_key(bench["group"], info["interaction"])] = {
            "ratio": bench["stats"]["min"] / reference[bench["group"]],
            "flops": info["flops"],
            "saved_activation_bytes": info["saved_activation_bytes"],
        }
    return measures


def kernel_regressions(current: dict[str, dict]) -> list[str]:
    """"afm_kernel slower than afm_fused at <group>: 1.23× its time (...)" for every AFM-pooling layer
    cell of this run where afm_kernel took longer than afm_fused. Both ratios are to triu_index in the
    same group and run, so their quotient is the kernel's fastest round over afm_fused's. Needs no
    baseline: it holds on whatever machine the gate runs on."""
    regressions = []
    for key, kernel in sorted(current.items()):
        group, _, interaction = key.rpartition(" | ")
        fused = current.get(cell_key(group, FUSED))
        if interaction != KERNEL or not group.startswith(KERNEL_POOLING) or fused is None:
            continue
        times = kernel["ratio"] / fused["ratio"]
        if times > 1:
            regressions.append(f"{KERNEL_CHECK}{group}: {times:.2f}× its time (time ratio to {REFERENCE}: "
                               f"{KERNEL} {kernel['ratio']:.3f}, {FUSED} {fused['ratio']:.3f})")
    return regressions


def subject(line: str) -> str:
    """What a regression line is about: a cell key, or "afm_kernel slower than afm_fused at <group>"."""
    return line.split(": ", 1)[0]


def is_time_check(line: str) -> bool:
    """A time regression (re-measured before it counts), not a grown deterministic cost (counts at once)."""
    return TIME_CHECK in line or line.startswith(KERNEL_CHECK)


def cells_of(subjects: set[str]) -> set[str]:
    """The cells to measure again for these subjects: the cell itself, or both of the kernel check's."""
    cells = set()
    for name in subjects:
        if name.startswith(KERNEL_CHECK):
            group = name[len(KERNEL_CHECK):]
            cells |= {cell_key(group, KERNEL), cell_key(group, FUSED)}
        else:
            cells.add(name)
    return cells


def compare(baseline: dict, current: dict[str, dict], times: bool = True,
            against: str = "the baseline") -> tuple[list[str], list[str]]:
    """(regressions, notes). A cell missing from the baseline is a note (a new implementation), not a
    failure; a run with no cell in common with the baseline is a failure (nothing was judged).
    `times=False` checks the deterministic costs only against the baseline; the check within the run
    (kernel_regressions: afm_kernel against afm_fused) is made either way."""
    tolerance = baseline.get("tolerance", DEFAULT_TOLERANCE)
    regressions, notes = [], []
    for key, now in sorted(current.items()):
        before = baseline["cells"].get(key)
        if before is None:
            notes.append(f"{key}: not in {against} (a new cell, not gated)")
            continue
        for cost in ("flops", "saved_activation_bytes"):
            if now[cost] > before[cost]:
                regressions.append(f"{key}: {cost} grew {before[cost]:,} -> {now[cost]:,}")
        limit = before["ratio"] * (1 + tolerance)
        if times and now["ratio"] > limit:
            regressions.append(f"{key}: {TIME_CHECK} {REFERENCE} {before['ratio']:.3f} -> {now['ratio']:.3f} "
                               f"(limit {limit:.3f} at tolerance {tolerance:.0%})")
    for key in sorted(set(baseline["cells"]) - set(current)):
        notes.append(f"{key}: in {against} but not measured now")
    if current and not set(current) & set(baseline["cells"]):
        regressions.append(f"no cell: none of the {len(current)} cells measured is in {against}, so nothing "
                           "was judged (renamed cells? refresh the baseline)")
    return regressions + kernel_regressions(current), notes


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


# --- the machine and the code a baseline was measured on ---------------------------------------------

def machine() -> dict:
    """What a baseline's time ratios depend on besides the code, and its signature (a hash of the rest).
    The CPU is named by vendor, family, model and stepping as well as flags: a virtual machine may call
    two generations by one name ("AMD EPYC")."""
    info = (processors() or ({},))[0]
    flags = feature_flags(info)
    identity = {
        "cpu": cpu_model(),
        "cpu_id": " ".join(info.get(field, "?") for field in ("vendor_id", "cpu family", "model", "stepping")),
        "cpu_flags": hashlib.sha256(flags.encode()).hexdigest()[:12],
        "capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "threads": GATE_THREADS,
    }
    identity["signature"] = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return identity


def describe(identity: dict | None) -> str:
    if not identity:
        return "an unrecorded machine"
    return (f"{identity['cpu']} [{identity['capability']}, cpu {identity['cpu_id']}, flags {identity['cpu_flags']}], "
            f"torch {identity['torch']}, {identity['threads']} thread(s)")


def package_dirs(pyproject: str) -> dict[str, str]:
    """{package: folder} from a pyproject's [tool.setuptools] package-dir: where `ctrbench.*` lives in a checkout."""
    try:
        import tomllib
    except ModuleNotFoundError:        # Python 3.10
        from pip._vendor import tomli as tomllib
    return tomllib.loads(pyproject)["tool"]["setuptools"]["package-dir"]


def code_state(repo: Path = REPO) -> dict:
    """{"commit": HEAD or None, "code_changed": whether the code differs from it (`code_changed`)}."""
    head = git(repo, "rev-parse", "HEAD")
    if head is None:
        return {"commit": None, "code_changed": None}
    return {"commit": head, "code_changed": code_changed(repo)}


def provenance(repo: Path = REPO) -> dict:
    """What a new baseline records beside its cells: the machine and the code it was measured on."""
    return {"machine": machine(), **code_state(repo)}


def _shallow_edges(repo: Path) -> set[str]:
    path = git(repo, "rev-parse", "--git-path", "shallow")
    try:
        return set((repo / path).read_text().split()) if path else set()
    except OSError:
        return set()


def reference_commit(baseline: dict, baseline_path: Path, repo: Path = REPO) -> tuple[str | None, str]:
    """(the commit whose code the baseline measured, how it was found) or (None, why there is none here).

    First the commit the baseline records, if it was measured on that commit's code unchanged; else the
    commit that last wrote the baseline file (its code is what was accepted with it), unless that
    commit is the cut edge of a shallow clone, where the file's true history is not known."""
    if git(repo, "rev-parse", "--git-dir") is None:
        return None, f"{repo} is not a git checkout"
    if git(repo, "rev-parse", "--is-shallow-repository") == "true":
        why = ["a shallow clone (`git fetch --unshallow` brings the history)"]
    else:
        why = []
    recorded = baseline.get("commit")
    if recorded and baseline.get("code_changed") is False:
        found = git(repo, "rev-parse", "--verify", "--quiet", f"{recorded}^{{commit}}")
        if found:
            return found, "the commit the baseline was measured on"
        why.append(f"the baseline's commit {recorded[:12]} is not in this clone's history")
    elif recorded:
        why.append(f"the baseline was measured on uncommitted changes to {recorded[:12]}")
    else:
        why.append("the baseline records no commit")
    try:
        relative = Path(baseline_path).resolve().relative_to(repo.resolve())
    except ValueError:
        return None, "; ".join(why + [f"{baseline_path} is outside the checkout"])
    tracked = git(repo, "ls-files", "--error-unmatch", "--", str(relative)) is not None
    if not tracked or git(repo, "status", "--porcelain", "--", str(relative)):
        return None, "; ".join(why + [f"{relative} is not committed as it is"])
    holder = git(repo, "log", "-1", "--format=%H", "--", str(relative))
    if not holder or holder in _shallow_edges(repo):
        return None, "; ".join(why + [f"the commit that wrote {relative} is not in this clone's history"])
    return holder, f"the commit that last wrote {relative}"


class BaselineCodeError(RuntimeError):
    """The baseline commit's code could not be loaded or run here (its failure, not the candidate's)."""


def baseline_package(commit: str, dest: Path, repo: Path = REPO) -> Path:
    """The commit's code laid out as the `ctrbench` package under dest/package (returned: the folder to
    put first on PYTHONPATH). Read with `git archive`, so the checkout and its .git are left as they were
    and removing dest removes everything."""
    try:
        mapping = package_dirs(git(repo, "show", f"{commit}:pyproject.toml") or "")
    except (KeyError, ValueError):
        raise BaselineCodeError(f"commit {commit[:12]}'s pyproject.toml names no package-dir") from None
    folders = sorted(set(mapping.values()))
    archive = subprocess.run(["git", "archive", "--format=tar", commit, "pyproject.toml", *folders], cwd=repo,
                             capture_output=True, timeout=300)
    if archive.returncode != 0:
        raise BaselineCodeError(f"git archive {commit[:12]} failed: {archive.stderr.decode(errors='replace')[-500:]}")
    checkout, root = Path(dest) / "checkout", Path(dest) / "package"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        # the "data" filter (no links out, no device files) where this Python has it (3.10.12+, 3.11.4+)
        tar.extractall(checkout, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    for package, folder in sorted(mapping.items()):        # parents before children
        shutil.copytree(checkout / folder, root.joinpath(*package.split(".")), dirs_exist_ok=True)
    shutil.copy(checkout / "pyproject.toml", root)          # pytest's settings for a run from root
    return root


def _with_path(env: dict[str, str], *folders: Path) -> dict[str, str]:
    """env with folders first on PYTHONPATH (no empty entry: that would mean the current folder)."""
    entries = [str(f) for f in folders] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**env, "PYTHONPATH": os.pathsep.join(entries)}


def check_loads_from(root: Path, env: dict[str, str]) -> None:
    """The installed `ctrbench` (an editable install of the candidate, say) must not answer for the
    baseline commit's package: its import hook sits after sys.path's, and this checks it stays so."""
    probe = ("import ctrbench, ctrbench.models.interactions as i, ctrbench.pytest_plugin as p\n"
             "print(ctrbench.__file__); print(i.__file__); print(p.__file__)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0:
        raise BaselineCodeError(f"the baseline commit's code does not import here: {done.stderr[-1500:]}")
    stray = [f for f in done.stdout.split() if not Path(f).resolve().is_relative_to(root.resolve())]
    if stray:
        raise BaselineCodeError(f"the baseline commit's run would import the installed ctrbench ({stray[0]})")


# --- measuring -------------------------------------------------------------------------------------------

SELECT_PLUGIN = "ctrbench_gate_select"
SELECT_ENV = "CTRBENCH_GATE_CELLS"
# A file of its own, written beside the runs, because it must also load in the baseline commit's process,
# where this module is not importable. The key is cell_key's.
SELECT_SOURCE = f'''"""Written by ctrbench.gate: keep the gate cells named in ${SELECT_ENV} and their {REFERENCE}."""
import json
import os


def pytest_collection_modifyitems(config, items):
    wanted = set(json.loads(os.environ["{SELECT_ENV}"]))
    groups = {{key.split(" | ")[0] for key in wanted}}

    def keep(item):
        cell = getattr(item, "callspec", None) and item.callspec.params.get("gate_cell")
        if cell is None:
            return True
        key = f"{{cell.group}} | {{cell.interaction}}"
        return key in wanted or (cell.group in groups and cell.interaction == "{REFERENCE}")

    dropped = [item for item in items if not keep(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if keep(item)]
'''


def measure_once(dump: Path, suite: Path = SUITE, pytest_args: tuple[str, ...] = (), env: dict | None = None,
                 cwd: Path | None = None, only: set[str] | None = None, label: str = "", log=print) -> dict[str, dict]:
    """Run the gate's cells (or only the cells keyed in `only`, with their reference) in a fresh pytest
    process; their measures. `label` names the code measured in the log."""
    dump = Path(dump)
    dump.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if env is None else env)
    command = [sys.executable, "-m", "pytest", str(suite), "--benchmark-only", "-p", "ctrbench.pytest_plugin",
               "-q", "-p", "no:cacheprovider", f"--ctrbench-gate-dump={dump}", *pytest_args]
    if only is not None:
        (dump.parent / f"{SELECT_PLUGIN}.py").write_text(SELECT_SOURCE)
        env = {**_with_path(env, dump.parent), SELECT_ENV: json.dumps(sorted(only))}
        command += ["-p", SELECT_PLUGIN]
    cells = "the gate cells" if only is None else f"{len(only)} cell(s) again"
    log(f"gate: measuring {cells}{f' of {label}' if label else ''}: {' '.join(command)}")
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    if result.returncode != 0:
        raise RuntimeError(f"gate run {dump.name} failed (exit {result.returncode}):\n{result.stdout[-3000:]}"
                           f"\n{result.stderr[-3000:]}")
    return json.loads(dump.read_text())


def measure_runs(runs: int, workdir: Path, pytest_args: tuple[str, ...] = (), log=print) -> list[dict]:
    """Run the gate's cells `runs` times, each in a fresh pytest process; their measures."""
    return [measure_once(Path(workdir) / f"gate_run_{number}.json", pytest_args=pytest_args, log=log)
            for number in range(1, runs + 1)]


def judge(baseline: dict, measures: dict[str, dict], log=print, **options) -> tuple[list[str], list[str]]:
    """compare(), saying how many cells it judged."""
    regressions, notes = compare(baseline, measures, **options)
    common = len(set(measures) & set(baseline["cells"]))
    log(f"gate: {common} of {len(measures)} cell(s) measured judged against {options.get('against', 'the baseline')}"
        f"{'' if options.get('times', True) else ' (costs only)'}: {len(regressions)} regression(s)")
    return regressions, notes


def confirm(measure_and_compare: Callable[[int, set[str] | None], tuple[list[str], list[str]]], attempts: int,
            log=print) -> tuple[list[str], list[str]]:
    """Measure and compare; while some cells' time regresses, measure those cells again (fresh
    processes), up to `attempts` times in all. A time regression counts only if the cell regressed every
    time: a real slowdown does, a neighbour's burst of load rarely does twice. A grown deterministic
    cost counts at once. Returns (confirmed regressions, notes of the first, complete, measurement)."""
    regressions, notes = measure_and_compare(1, None)
    final = [line for line in regressions if not is_time_check(line)]
    suspects = {subject(line) for line in regressions if is_time_check(line)}
    for attempt in range(2, attempts + 1):
        if not suspects:
            break
        log(f"gate: attempt {attempt - 1}/{attempts}: {len(suspects)} cell(s) slower: {', '.join(sorted(suspects))}")
        again, _ = measure_and_compare(attempt, cells_of(suspects))
        suspects &= {subject(line) for line in again if is_time_check(line)}
        regressions = again
    return final + [line for line in regressions if is_time_check(line) and subject(line) in suspects], notes


def check(baseline: dict, workdir: Path, attempts: int = 3, pytest_args: tuple[str, ...] = (),
          log=print) -> tuple[list[str], list[str]]:
    """Against a baseline measured on this machine: the candidate's ratios against the baseline's."""
    def measure_and_compare(attempt, only):
        measures = measure_once(Path(workdir) / f"attempt_{attempt}.json", pytest_args=pytest_args, only=only, log=log)
        return judge(baseline, measures, log)
    return confirm(measure_and_compare, attempts, log)


def check_ab(baseline: dict, commit: str, workdir: Path, attempts: int = 3, repo: Path = REPO,
             pytest_args: tuple[str, ...] = (), candidate_args: tuple[str, ...] = (), env: dict | None = None,
             log=print) -> tuple[list[str], list[str]]:
    """A/B on this machine: the baseline's commit (A, from `git archive`, first on PYTHONPATH) and the
    candidate (B, the installed ctrbench), each in fresh pytest processes, in the order A B, B A, A B...
    so that a drift in the machine's load falls on both. Each cell's ratio in B is judged against its
    ratio in A with the baseline's tolerance; costs too, measured on the same machine by the same runs,
    so that a build which falls back here falls back in both. `candidate_args` go to B's runs only."""
    workdir = Path(workdir)
    env = dict(os.environ if env is None else env)
    root = baseline_package(commit, workdir / "baseline_commit", repo)
    env_a = _with_path(env, root)
    check_loads_from(root, env_a)
    reference = {"tolerance": baseline.get("tolerance", DEFAULT_TOLERANCE)}
    against = f"commit {commit[:12]}"

    def measure_a(attempt, only):
        try:
            return measure_once(workdir / f"attempt_{attempt}_A.json", root / "ctrbench" / SUITE.name, pytest_args,
                                env_a, cwd=root, only=only, label=f"A ({against})", log=log)
        except RuntimeError as error:
            raise BaselineCodeError(f"the baseline commit's run failed: {error}") from None

    def measure_b(attempt, only):
        return measure_once(workdir / f"attempt_{attempt}_B.json", SUITE, (*pytest_args, *candidate_args), env,
                            only=only, label="B (the candidate)", log=log)

    def measure_and_compare(attempt, only):
        if attempt % 2:
            a, b = measure_a(attempt, only), measure_b(attempt, only)
        else:
            b = measure_b(attempt, only)
            a = measure_a(attempt, only)
        return judge({**reference, "cells": a}, b, log, against=against)
    return confirm(measure_and_compare, attempts, log)


def check_costs(baseline: dict, workdir: Path, pytest_args: tuple[str, ...] = (), env: dict | None = None,
                attempts: int = 3, log=print) -> tuple[list[str], list[str]]:
    """What holds on any machine: the deterministic costs against the baseline's, and the checks within
    the run (afm_kernel against afm_fused, re-measured like any time regression); no baseline time."""
    def measure_and_compare(attempt, only):
        name = "costs.json" if attempt == 1 else f"costs_{attempt}.json"
        measures = measure_once(Path(workdir) / name, pytest_args=pytest_args, env=env, only=only, log=log)
        return judge(baseline, measures, log, times=False)
    return confirm(measure_and_compare, attempts, log)


def run_gate(baseline: dict, workdir: Path, attempts: int = 3, baseline_path: Path = BASELINE, repo: Path = REPO,
             ab: bool = False, pytest_args: tuple[str, ...] = (), candidate_args: tuple[str, ...] = (),
             env: dict | None = None, log=print) -> tuple[list[str], list[str], str]:
    """The gate: (confirmed regressions, notes, the comparison made). It chooses the comparison:

    - the baseline's machine signature is this machine's (and `ab` is off): against the baseline;
    - otherwise an A/B against the baseline's commit, timed here (check_ab);
    - where that commit's code is not at hand (no checkout, a shallow clone) or does not run here: the
      deterministic costs against the baseline only, saying that time was not judged.
    """
    here, theirs = machine(), baseline.get("machine")
    if not ab and theirs and theirs.get("signature") == here["signature"]:
        comparison = f"same-machine baseline (signature {here['signature']}: {describe(here)})"
        log(f"gate: comparing with {comparison}")
        return (*check(baseline, workdir, attempts, pytest_args, log), comparison)
    machines = f"baseline measured on {describe(theirs)}, this machine {describe(here)}"
    commit, how = reference_commit(baseline, baseline_path, repo)
    if commit is not None:
        comparison = f"A/B against commit {commit[:12]} ({how}; {machines})"
        log(f"gate: {comparison}: both timed here, interleaved, in fresh processes")
        try:
            return (*check_ab(baseline, commit, workdir, attempts, repo, pytest_args, candidate_args, env, log),
                    comparison)
        except BaselineCodeError as error:
            how = str(error)
    comparison = f"costs only: time NOT judged ({how}; {machines})"
    log(f"gate: cannot time the baseline's code on this machine ({how}); checking only the machine-independent "
        f"costs (FLOPs, saved bytes) against the baseline, and afm_kernel against afm_fused within this run "
        f"({machines})")
    return (*check_costs(baseline, workdir, (*pytest_args, *candidate_args), env, attempts, log), comparison)
