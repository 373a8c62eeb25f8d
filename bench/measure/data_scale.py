"""Data larger than RAM, measured: a generated Criteo-layout file preprocessed, then one FM epoch trained
from the memory-mapped cache, each in its own process so each has its own peak resident set.

    ctrbench measure data_scale                       # 200k rows: a quick check (~1 minute)
    ctrbench measure data_scale --rows 20000000 --out results/data_scale.json

Stages (the parent runs the last two as child processes, each calling this module's stage function):
  generate    `ctrbench.datasets.synthetic.write_criteo_rows` (Kaggle's train.txt layout, ~245 bytes a
              row) into --work-dir, reused when already there (same rows, same bytes), or --file.
  preprocess  `load("criteo", file=..., cache_dir=<fresh>)`: rows/s and peak RSS of that process.
  train       the same load (a cache hit: X and y memory-mapped), then one epoch of FM (the registry's
              "fm" with sum_square, Adam) over the train split's view by the protocol's own
              `ctrbench.training.train.train_epoch` (`block_batches`: shuffled blocks, rows shuffled
              within a window of blocks), as `ctrbench run` trains a memory-mapped set above
              `protocol.STREAM_ROWS`; then the validation AUC by `train.evaluate` on the view. Rows/s
              and peak RSS of that process.
Peak RSS is the kernel's ru_maxrss of each child process (its whole life: interpreter, torch, data).
Goals (issue 17): the epoch at <= 3 GB peak RSS, preprocessing >= 150k rows/s.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ctrbench.files import write_atomic, write_text_atomic
from ctrbench.probes.memory import peak_rss, status_bytes

KIND = "data_scale"
KEYS = frozenset({"kind", "command", "file", "preprocess", "train", "goals", "environment", "when"})


def read(path: Path) -> dict | None:
    """results/data_scale.json, `run`'s record as the command writes it; None where there is none (ValueError
    where unreadable, or holding a key no code writes)."""
    from ctrbench.store.records import read_document
    if not Path(path).exists():
        return None
    return read_document(path, KIND, KEYS)

GOAL_TRAIN_PEAK_RSS_BYTES = 3 * 10**9
GOAL_PREPROCESS_ROWS_PER_S = 150_000
DEFAULT_ROWS = 200_000
# the resident set now, its anonymous and file-backed parts, and its high-water mark
RSS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")
PATHS = ("file", "work_dir", "cache_dir")


@dataclass(frozen=True)
class Settings:
    """What to measure: the file (`file`, or `rows` generated into `work_dir`: a temporary folder when
    None, removed at the end, as is the cache unless `keep`), how it is read, how the epoch trains.
    `block_rows` and `window_blocks` None: block_batches' own; `threads` 0: torch's default."""
    rows: int = DEFAULT_ROWS
    file: Path | None = None
    work_dir: Path | None = None
    keep: bool = False
    categorical: str = "vocab"
    on_bad_lines: str = "error"
    batch_size: int = 4096
    block_rows: int | None = None
    window_blocks: int | None = None
    seed: int = 0
    threads: int = 0
    progress: bool = True
    cache_dir: Path | None = None        # set by `run` for the stages: a fresh cache under the work folder

    def to_json(self) -> str:
        return json.dumps({**asdict(self), **{name: str(getattr(self, name)) for name in PATHS
                                              if getattr(self, name) is not None}})

    @classmethod
    def from_json(cls, text: str) -> Settings:
        values = json.loads(text)
        return cls(**{**values, **{name: Path(values[name]) for name in PATHS if values[name] is not None}})


def peak_rss_bytes() -> int:
    """This process's resident-set high-water mark (each stage runs in its own process, so: the stage's)."""
    return peak_rss() or 0


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (the machine may be shared: wall time alone
    mixes in other processes' load)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------------------------
# Stages, each run in its own process.

def stage_preprocess(settings: Settings) -> dict:
    """The file preprocessed into `settings.cache_dir` (empty): rows/s and this process's peak RSS."""
    from ctrbench.datasets import load

    start, cpu_start = time.perf_counter(), cpu_seconds()
    dataset = load("criteo", file=str(settings.file), categorical=settings.categorical, cache_dir=settings.cache_dir,
                   on_bad_lines=settings.on_bad_lines)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    rows = len(dataset.y)
    folder = Path(dataset.stats["cache_folder"])
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "cpu_seconds": cpu,
            "rows_per_cpu_s": rows / max(cpu, 1e-9), "peak_rss_bytes": peak_rss_bytes(),
            "cache_hit": dataset.stats["cache_hit"], "skipped_lines": dataset.stats["skipped_lines"],
            "vocab_size": dataset.vocab_size, "id_dtype": str(dataset.X.dtype),
            "cache_bytes": sum(p.stat().st_size for p in folder.iterdir()),
            "rss_now": status_bytes(*RSS_FIELDS)}


def stage_train(settings: Settings) -> dict:
    """One FM epoch from the cache the preprocess stage left, then the validation AUC: rows/s and this
    process's peak RSS."""
    import numpy as np
    import torch

    from ctrbench.datasets import load
    from ctrbench.models import create_model
    from ctrbench.training.context import RunContext
    from ctrbench.training.data_source import StreamedData
    from ctrbench.training.train import evaluate, train_epoch

    torch.set_num_threads(settings.threads or torch.get_num_threads())
    start = time.perf_counter()
    dataset = load("criteo", file=str(settings.file), categorical=settings.categorical, cache_dir=settings.cache_dir,
                   on_bad_lines=settings.on_bad_lines)
    load_seconds = time.perf_counter() - start
    after_load = status_bytes(*RSS_FIELDS)
    train, validation = dataset.view("train"), dataset.view("validation")
    torch.manual_seed(settings.seed)
    model = create_model("fm", dataset.field_dims, interaction="sum_square")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(settings.seed)
    # The protocol's own epoch (`ctrbench run` streams a memory-mapped set this way): block-shuffled
    # batches of the view, train_step per batch, the mean loss read once at the end.
    start, cpu_start = time.perf_counter(), cpu_seconds()
    streamed = StreamedData(train, {"block_rows": settings.block_rows, "window_blocks": settings.window_blocks})
    loss = float(train_epoch(model, optimizer, streamed, settings.batch_size, generator,
                             RunContext(progress=settings.progress)))
    train_seconds, train_cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    seen = len(train)                            # train_epoch takes every row of the split once
    after_train = status_bytes(*RSS_FIELDS)
    validation_scores = evaluate(model, validation, 65_536)
    return {"rows": len(dataset.y), "train_rows": len(train), "validation_rows": len(validation),
            "seconds": train_seconds, "rows_per_s": seen / train_seconds, "rows_seen": seen,
            "cpu_seconds": train_cpu, "loadavg_1m": os.getloadavg()[0],
            "loss": loss, "validation_auc": validation_scores["auc"],
            "validation_seconds": len(validation) / validation_scores["samples_per_s"],
            "load_seconds": load_seconds, "cache_hit": dataset.stats["cache_hit"],
            "path": "ctrbench.training.train.train_epoch",
            "x_is_memmap": isinstance(dataset.X, np.memmap), "id_dtype": str(dataset.X.dtype),
            "batch_dtype": str(torch.from_numpy(np.asarray(dataset.X[:1])).dtype), "vocab_size": dataset.vocab_size,
            "parameters": sum(p.numel() for p in model.parameters()),
            "batch_size": settings.batch_size, "block_rows": settings.block_rows,
            "window_blocks": settings.window_blocks,
            "threads": torch.get_num_threads(), "optimizer": "Adam (dense), lr 1e-3",
            "model": "fm", "interaction": "sum_square",
            "peak_rss_bytes": peak_rss_bytes(), "rss_after_load": after_load, "rss_after_epoch": after_train}


STAGES = {"preprocess": stage_preprocess, "train": stage_train}


# ---------------------------------------------------------------------------------------------
# The parent: generate, then each stage in a child process.

def generate(path: Path, rows: int, progress: bool) -> float:
    """Write the file unless it is already there (written whole: a temporary file renamed into place)."""
    from tqdm.auto import tqdm

    from ctrbench.datasets.synthetic import write_criteo_rows

    if path.is_file():
        return 0.0
    start = time.perf_counter()
    with tqdm(total=rows, desc="generate", unit="row", unit_scale=True, disable=not progress) as bar:
        write_atomic(path, lambda out: write_criteo_rows(out, rows, seed=0, progress=bar.update))
    return time.perf_counter() - start


# The child's whole program (as multiprocessing's spawn starts its children): a stage function of this
# module, its settings as JSON. Not a command line: the child is no command, and going through
# ctrbench.commands would add that package's imports to the peak RSS the child measures.
CHILD = "import sys; from ctrbench.measure.data_scale import run_child; run_child(*sys.argv[1:])"


def run_child(name: str, settings_json: str, result_path: str) -> None:
    """In a child process: stage `name` with these settings, its result written to `result_path`."""
    result = STAGES[name](Settings.from_json(settings_json))
    write_text_atomic(Path(result_path), json.dumps(result))


def run_stage(name: str, settings: Settings, result_path: Path) -> dict:
    """Stage `name` in a fresh Python process, so its peak RSS is its own."""
    print(f"[data_scale] {name}: {settings.to_json()}", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-c", CHILD, name, settings.to_json(), str(result_path)], check=True)
    return json.loads(result_path.read_text())


def run(settings: Settings, command: str) -> dict:
    """Generate (or take) the file, preprocess it and train an epoch from its cache, each stage in its own
    process; the record, `command` the command line that asked for it."""
    if settings.block_rows is None or settings.window_blocks is None:
        from ctrbench.datasets.batching import BLOCK_ROWS, WINDOW_BLOCKS
        settings = replace(settings, block_rows=settings.block_rows or BLOCK_ROWS,
                           window_blocks=settings.window_blocks or WINDOW_BLOCKS)
    temporary = settings.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="ctrbench-data-scale-")) if temporary else settings.work_dir
    work.mkdir(parents=True, exist_ok=True)
    generated = settings.file is None
    try:
        generate_seconds = 0.0
        if generated:
            settings = replace(settings, file=work / f"criteo_{settings.rows}.txt")
            generate_seconds = generate(settings.file, settings.rows, settings.progress)
        settings = replace(settings, cache_dir=work / "cache")
        shutil.rmtree(settings.cache_dir, ignore_errors=True)       # preprocessing starts from an empty cache
        preprocess = run_stage("preprocess", settings, work / "preprocess.json")
        train = run_stage("train", settings, work / "train.json")
        return {
            "kind": "data_scale",
            "command": command,
            "file": {"path": str(settings.file), "generated": generated, "bytes": settings.file.stat().st_size,
                     "rows": preprocess["rows"], "generate_seconds": generate_seconds,
                     "layout": "Criteo Kaggle train.txt (ctrbench.datasets.synthetic.write_criteo_rows, seed 0)"},
            "preprocess": preprocess,
            "train": train,
            "goals": {"train_peak_rss_bytes_max": GOAL_TRAIN_PEAK_RSS_BYTES,
                      "train_peak_rss_met": train["peak_rss_bytes"] <= GOAL_TRAIN_PEAK_RSS_BYTES,
                      "preprocess_rows_per_s_min": GOAL_PREPROCESS_ROWS_PER_S,
                      "preprocess_rows_per_s_met": preprocess["rows_per_s"] >= GOAL_PREPROCESS_ROWS_PER_S},
            "environment": {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0],
                            "python": platform.python_version(),
                            "machine": platform.machine(),
                            "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")},
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    finally:
        if temporary or not settings.keep:
            shutil.rmtree(work / "cache", ignore_errors=True)
            if generated and temporary:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":    # the command line moved to the commands package
    raise SystemExit("run this as: ctrbench measure data_scale ARGS... (`--help` lists them)")
