"""What a results folder holds (`ctrbench results`): every stored file by kind, dataset or device, commit and
date, and whether the front page may cite it; and the archive, where results of code that no longer exists
(or that newer results of the same kind superseded) are moved, with a dated index, never read again."""
from __future__ import annotations

import datetime
import fcntl
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ctrbench.files import write_text_atomic
from ctrbench.measure import data_scale, embedding_scale
from ctrbench.models import list_interactions, list_models
from ctrbench.store.records import read_record

from . import gpu, speed
from .markdown import table
from .provenance import short_commit

ARCHIVE = "archive"


@dataclass
class Stored:
    kind: str
    what: str                       # dataset or device
    paths: list[Path]               # relative to the results folder
    commits: list[str]
    dates: list[str]
    stale: str | None = None        # why it is archived (None: current)

    def row(self) -> list[str]:
        commits = sorted({short_commit(c) for c in self.commits if c}) or ["?"]
        dates = sorted(d[:10] for d in self.dates if d) or ["?"]
        return [self.kind, self.what, str(len(self.paths)),
                ", ".join(commits[:3]) + (f" (+{len(commits) - 3})" if len(commits) > 3 else ""),
                dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}",
                "current" if self.stale is None else f"archive: {self.stale}"]


def run_record_entries(results_dir: Path) -> list[Stored]:
    """Run records per dataset; those of a model or implementation no longer registered apart, to archive."""
    from ctrbench.models.peers import PEER_MODELS  # a peer library's models exist where it is installed
    models = set(list_models()) | {name for names in PEER_MODELS.values() for name in names}
    interactions = set(list_interactions())
    groups: dict[tuple[str, str | None], list[dict]] = defaultdict(list)
    for path in sorted((results_dir / "runs").rglob("*.json")):
        if path.name.startswith("."):          # an unfinished temp file of an interrupted write
            continue
        try:
            record = {**read_record(path), "_path": path.relative_to(results_dir)}
        except ValueError:
            continue
        gone = [name for name in (record["model"],) if name not in models] + \
               [name for name in (record["interaction"],) if name not in interactions]
        stale = f"names {', '.join(gone)}, no longer in the registry" if gone else None
        groups[record["dataset"], stale].append(record)
    entries = []
    for (dataset, stale), found in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1] or "")):
        paths = [r["_path"] for r in found]
        environments = [r.get("environment") or {} for r in found]
        entries.append(Stored("run records", dataset, paths, [e.get("git_commit") for e in environments],
                              [e.get("date") for e in environments], stale))
    return entries


def benchmark_entries(results_dir: Path) -> list[Stored]:
    """Every benchmark session; all but the latest full one of each device class are superseded."""
    runs = speed.benchmark_runs(results_dir, [])
    current = {run.source for run in speed.latest_of(runs)}
    entries = []
    for run in runs:
        stale = None
        if run.source not in current:
            stale = ("a look at a few cells, not a profile" if len(run.benchmarks) < speed.MIN_SESSION_CELLS
                     else "superseded by a newer session on this device class")
        paths = [run.source]
        session = (run.run.get("ctrbench") or {}).get("session")
        cells = results_dir / "benchmark_cells" / f"{session}.json"
        if session and cells.is_file() and Path("benchmark_cells") / cells.name != run.source:
            paths.append(Path("benchmark_cells") / cells.name)
        entries.append(Stored("benchmark session", run.title, paths, [run.environment.get("git_commit")],
                              [run.date], stale))
    return entries


def gpu_entries(results_dir: Path) -> list[Stored]:
    entries = []
    for kind in ("device_sweep", "afm_gpu_step", "step_gap"):
        for document, source in gpu.gpu_documents(results_dir, kind, []):
            environment = document.get("environment") or {}
            stale = None
            if kind == "device_sweep" and gpu.sweep_missing(document):
                stale = f"predates {', '.join(gpu.sweep_missing(document))}"
            entries.append(Stored(kind.replace("_", " "), document.get("device_name") or environment.get("device_name")
                                  or "?", [source], [environment.get("git_commit")],
                                  [document.get("started") or environment.get("date")], stale))
    return entries


def other_entries(results_dir: Path) -> list[Stored]:
    entries = []
    for path in sorted((results_dir / "embedding_scale").glob("*.json")):
        try:
            environment = embedding_scale.read(path).get("environment") or {}
        except ValueError:
            environment = {}
        entries.append(Stored("embedding scale", environment.get("device_name") or path.stem,
                              [path.relative_to(results_dir)], [environment.get("git_commit")],
                              [environment.get("date")]))
    try:
        document = data_scale.read(results_dir / "data_scale.json")
    except ValueError:
        document = None
    if document:
        entries.append(Stored("data scale", "criteo layout", [Path("data_scale.json")], [], [document.get("when")]))
    studies = sorted((results_dir / "studies").glob("*.db"))
    if studies:
        entries.append(Stored("tuning studies", "SQLite", [p.relative_to(results_dir) for p in studies], [], []))
    return entries


def inventory(results_dir: Path) -> list[Stored]:
    results_dir = Path(results_dir)
    return (run_record_entries(results_dir) + benchmark_entries(results_dir) + gpu_entries(results_dir)
            + other_entries(results_dir))


def inventory_table(entries: list[Stored]) -> str:
    return table([entry.row() for entry in entries], ["kind", "dataset or device", "files", "commits", "dates",
                                                      "status"])


def archive(results_dir: Path, entries: list[Stored], today: str | None = None) -> list[Path]:
    """Move every stale entry's files to RESULTS/archive/<date>/ (same relative paths) and add a line per
    entry to RESULTS/archive/index.md; returns the files moved. Nothing is deleted."""
    results_dir = Path(results_dir)
    today = today or datetime.date.today().isoformat()
    target = results_dir / ARCHIVE / today
    moved, lines = [], []
    for entry in entries:
        if entry.stale is None:
            continue
        for path in entry.paths:
            source = results_dir / path
            if not source.exists():
                continue
            destination = target / path
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(source), str(destination))
            moved.append(destination)
            lines.append(index_line(today, path, entry.kind, entry.what, entry.stale))
    append_to_index(results_dir, lines)
    return moved


def archive_copy(results_dir: Path, path: Path, kind: str, what: str, why: str, today: str | None = None) -> Path:
    """Copy one file (relative to the results folder) to RESULTS/archive/<date>/ before its writer replaces
    it, and index it; returns the copy. A crash between the two leaves the old file in one place or both."""
    results_dir = Path(results_dir)
    today = today or datetime.date.today().isoformat()
    destination = results_dir / ARCHIVE / today / path
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(results_dir / path, destination)
    append_to_index(results_dir, [index_line(today, path, kind, what, why)])
    return destination


def index_line(today: str, path: Path, kind: str, what: str, why: str) -> str:
    return f"| {today} | `{today}/{Path(path).as_posix()}` | {kind} | {what} | {why} |"


def append_to_index(results_dir: Path, lines: list[str]) -> None:
    """Add rows to RESULTS/archive/index.md; one writer at a time (two `reproduce --replace` may share a folder)."""
    if not lines:
        return
    index = results_dir / ARCHIVE / "index.md"
    index.parent.mkdir(parents=True, exist_ok=True)
    with open(index.parent / ".index.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _append_rows(index, lines)


def _append_rows(index: Path, lines: list[str]) -> None:
    head = ("# Archived results\n\nMoved here by `ctrbench results --archive` (results of code that no longer "
            "exists, or superseded by newer results of the same kind) and copied here by `ctrbench reproduce "
            "--replace` (records replaced by their re-made run). The leaderboard never reads this folder.\n\n"
            "| archived | file | kind | dataset or device | why |\n|---|---|---|---|---|\n")
    old = index.read_text() if index.is_file() else head
    _, separator, rows = old.partition("|---|---|---|---|---|\n")
    old = head + rows if separator else old                 # the head as this code words it, the rows kept
    write_text_atomic(index, old + "\n".join(lines) + "\n")
