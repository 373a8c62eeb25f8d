"""What code, machine and load made a number, as the pages say it: the commit with "+dirty" never cut
off, the commit whose code equals a dirty run's `code_tree`, the CPU with its vector ISA, and whether
the machine was busy."""
from __future__ import annotations

from collections import Counter

from ctrbench.store.code_identity import REPO, commits_by_code_tree, is_dirty
from ctrbench.store.environment import is_loaded

LOADED_MARK = "‡"
LOADED_NOTE = (f"{LOADED_MARK}: measured while other processes kept cores busy (`environment.load_avg`): "
               "a lower bound; rerun on a quiet machine, or with `--threads 1` on a shared one.")


def short_commit(commit: str | None) -> str:
    """'1587258cad88+dirty': twelve hex digits and the dirty mark, which is never cut off."""
    if not commit:
        return "no commit recorded"
    commit = str(commit)
    return commit.removesuffix("+dirty")[:12] + ("+dirty" if is_dirty(commit) else "")


def code_label(environment: dict | None, commits: dict[str, str] | None = None) -> str:
    """The commit a number was measured on and, for a dirty one, the commit that holds its code where
    one does (its `code_tree` is that commit's); old records without a code tree say so."""
    environment = environment or {}
    commit = environment.get("git_commit")
    label = f"commit `{short_commit(commit)}`"
    tree = environment.get("code_tree")
    if tree is None:
        return label + (" (code tree not recorded)" if is_dirty(commit) else "")
    if is_dirty(commit):
        holder = (commits if commits is not None else commits_by_code_tree(REPO)).get(tree)
        label += f", its code is commit `{holder[:12]}`" if holder else f", code tree `{tree[:12]}` (in no commit)"
    return label


def codes_label(environments: list[dict]) -> str:
    """The code labels of several records (a table's), most common first."""
    counts = Counter(code_label(env) for env in environments)
    return "; ".join(f"{label} ({count})" if len(counts) > 1 else label for label, count in counts.most_common())


def reproduced_label(records: list[dict]) -> str:
    """'; 12 of them re-made by `ctrbench reproduce` from records of code not recorded (...): all identical', or
    '' where none was: a re-made record's own commit is in the code label, this says what it replaced."""
    remade = [r for r in records if r.get("reproduces")]
    if not remade:
        return ""
    same = sum(r["test"] == r["reproduces"]["test"] and r["best_epoch"] == r["reproduces"]["best_epoch"]
               for r in remade)
    largest = max(abs(r["test"]["auc"] - r["reproduces"]["test"]["auc"]) for r in remade)
    commits = sorted({short_commit(r["reproduces"].get("git_commit")) for r in remade})
    shown = ", ".join(f"`{c}`" for c in commits[:3]) + (f" and {len(commits) - 3} more" if len(commits) > 3 else "")
    outcome = ("all identical (test AUC, logloss, best epoch)" if same == len(remade) else
               f"{same} identical, the largest test-AUC change {largest:.4f}")
    return f"; {len(remade)} of them re-made by `ctrbench reproduce` from records of {shown}: {outcome}"


def machine_label(environment: dict | None) -> str:
    """'AMD EPYC (AVX-512)' or the GPU's name: a device class, as the pages group speed by it."""
    environment = environment or {}
    gpu = environment.get("gpu") or {}
    if str(environment.get("device", "cpu")).startswith("cuda"):
        return gpu.get("name") or environment.get("device_name") or "a GPU"
    isa = environment.get("cpu_isa")
    return f"{environment.get('cpu_model') or environment.get('device_name') or 'a CPU'}" + (f" ({isa})" if isa else "")


def loaded(record_environment: dict | None, threads: int | None = None) -> bool | None:
    environment = record_environment or {}
    return is_loaded(environment.get("load_avg"), threads if threads is not None else environment.get("threads"))


def load_text(load_avg: dict | None) -> str:
    """'others busy 0.1 cores, load 1.0 → 1.2' for a settings table; '–' where not recorded."""
    if not load_avg:
        return "not recorded"
    start, end = load_avg.get("start") or {}, load_avg.get("end") or {}
    parts = []
    if load_avg.get("others_busy_cores") is not None:
        parts.append(f"other processes kept {load_avg['others_busy_cores']:.2f} cores busy")
    if start or end:
        parts.append(f"1-min load {start.get('1m', '?')} → {end.get('1m', '?')}")
    return ", ".join(parts) or "not recorded"
