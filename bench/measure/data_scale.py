"""Data larger than RAM, measured: a generated Criteo-layout file preprocessed, then one FM epoch trained
from the memory-mapped cache, each in its own process so each has its own peak resident set.

    python -m ctrbench.measure.data_scale                       # 200k rows: a quick check (~1 minute)
    python -m ctrbench.measure.data_scale --rows 20000000 --out results/data_scale.json

Stages (the parent runs the last two as child processes of this same module):
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

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ctrbench.files import write_atomic, write_text_atomic
from ctrbench.probes.memory import peak_rss, status_bytes

KIND = "data_scale"
KEYS = frozenset({"kind", "command", "file", "preprocess", "train", "goals", "environment", "when"})


def read(path: Path) -> dict | None:
    """results/data_scale.json as `main` writes it; None where there is none (ValueError where unreadable,
    or holding a key no code writes)."""
    from ctrbench.store.records import read_document
    if not Path(path).exists():
        return None
    return read_document(path, KIND, KEYS)

GOAL_TRAIN_PEAK_RSS_BYTES = 3 * 10**9
GOAL_PREPROCESS_ROWS_PER_S = 150_000
DEFAULT_ROWS = 200_000
# the resident set now, its anonymous and file-backed parts, and its high-water mark
RSS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")


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

def stage_preprocess(args) -> dict:
    from ctrbench.datasets import load

    start, cpu_start = time.perf_counter(), cpu_seconds()
    dataset = load("criteo", file=str(args.file), categorical=args.categorical, cache_dir=args.cache_dir,
                   on_bad_lines=args.on_bad_lines)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    rows = len(dataset.y)
    folder = Path(dataset.stats["cache_folder"])
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "cpu_seconds": cpu,
            "rows_per_cpu_s": rows / max(cpu, 1e-9), "peak_rss_bytes": peak_rss_bytes(),
            "cache_hit": dataset.stats["cache_hit"], "skipped_lines": dataset.stats["skipped_lines"],
            "vocab_size": dataset.vocab_size, "id_dtype": str(dataset.X.dtype),
            "cache_bytes": sum(p.stat().st_size for p in folder.iterdir()),
            "rss_now": status_bytes(*RSS_FIELDS)}


def stage_train(args) -> dict:
    import numpy as np
    import torch

    from ctrbench.datasets import load
    from ctrbench.models import create_model
    from ctrbench.training.context import RunContext
    from ctrbench.training.data_source import StreamedData
    from ctrbench.training.train import evaluate, train_epoch

    torch.set_num_threads(args.threads or torch.get_num_threads())
    start = time.perf_counter()
    dataset = load("criteo", file=str(args.file), categorical=args.categorical, cache_dir=args.cache_dir,
                   on_bad_lines=args.on_bad_lines)
    load_seconds = time.perf_counter() - start
    after_load = status_bytes(*RSS_FIELDS)
    train, validation = dataset.view("train"), dataset.view("validation")
    torch.manual_seed(args.seed)
    model = create_model("fm", dataset.field_dims, interaction="sum_square")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(args.seed)
    # The protocol's own epoch (`ctrbench run` streams a memory-mapped set this way): block-shuffled
    # batches of the view, train_step per batch, the mean loss read once at the end.
    start, cpu_start = time.perf_counter(), cpu_seconds()
    streamed = StreamedData(train, {"block_rows": args.block_rows, "window_blocks": args.window_blocks})
    loss = float(train_epoch(model, optimizer, streamed, args.batch_size, generator,
                             RunContext(progress=not args.no_progress)))
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
            "batch_size": args.batch_size, "block_rows": args.block_rows, "window_blocks": args.window_blocks,
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


def run_stage(name: str, args, result_path: Path) -> dict:
    command = [sys.executable, "-m", "ctrbench.measure.data_scale", "--stage", name, "--file", str(args.file),
               "--cache-dir", str(args.cache_dir), "--stage-out", str(result_path),
               "--categorical", args.categorical, "--on-bad-lines", args.on_bad_lines,
               "--batch-size", str(args.batch_size), "--block-rows", str(args.block_rows),
               "--window-blocks", str(args.window_blocks), "--seed", str(args.seed),
               "--threads", str(args.threads)] + (["--no-progress"] if args.no_progress else [])
    print(f"[data_scale] {name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    subprocess.run(command, check=True)
    return json.loads(result_path.read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ctrbench.measure.data_scale",
        description="Preprocess a generated Criteo-layout file and train one FM epoch from its memory-mapped "
                    "cache, in separate processes; record rows/s and peak RSS of each.")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS,
                        help=f"rows of the generated file (default {DEFAULT_ROWS:,}: a quick check; the issue's "
                             "measurement is 20000000)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON record here (default: print only)")
    parser.add_argument("--file", type=Path, default=None,
                        help="an existing Criteo-layout file to use instead of generating one (--rows is then "
                             "ignored)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the generated file and the cache go (default: a temporary folder, removed "
                             "at the end; a 20M-row file is ~4.9 GB and its cache ~3.2 GB)")
    parser.add_argument("--keep", action="store_true", help="keep the generated file and cache in --work-dir")
    parser.add_argument("--categorical", choices=("vocab", "hash"), default="vocab",
                        help="categorical encoding (default vocab, min_count 10: criteo's default)")
    parser.add_argument("--on-bad-lines", choices=("error", "skip"), default="error")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--block-rows", type=int, default=None,
                        help="rows of the file read at once by block_batches (default its BLOCK_ROWS)")
    parser.add_argument("--window-blocks", type=int, default=None,
                        help="blocks shuffled together (default block_batches' WINDOW_BLOCKS)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads for training (0: torch's default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--stage", choices=sorted(STAGES), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--stage-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.block_rows is None or args.window_blocks is None:
        from ctrbench.datasets.batching import BLOCK_ROWS, WINDOW_BLOCKS
        args.block_rows = args.block_rows or BLOCK_ROWS
        args.window_blocks = args.window_blocks or WINDOW_BLOCKS

    if args.stage:                                       # a child: one stage, its result to --stage-out
        result = STAGES[args.stage](args)
        write_text_atomic(args.stage_out, json.dumps(result))
        return 0

    temporary = args.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="ctrbench-data-scale-")) if temporary else args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    generated = args.file is None
    try:
        generate_seconds = 0.0
        if generated:
            args.file = work / f"criteo_{args.rows}.txt"
            generate_seconds = generate(args.file, args.rows, not args.no_progress)
        args.cache_dir = work / "cache"
        shutil.rmtree(args.cache_dir, ignore_errors=True)       # preprocessing starts from an empty cache
        preprocess = run_stage("preprocess", args, work / "preprocess.json")
        train = run_stage("train", args, work / "train.json")
        record = {
            "kind": "data_scale",
            "command": "python -m ctrbench.measure.data_scale " + " ".join(argv if argv is not None else sys.argv[1:]),
            "file": {"path": str(args.file), "generated": generated, "bytes": args.file.stat().st_size,
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
        if temporary or not args.keep:
            shutil.rmtree(work / "cache", ignore_errors=True)
            if generated and temporary:
                shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(record, indent=2)
    if args.out:
        write_text_atomic(args.out, text + "\n")
    print(text)
    print(f"preprocess {preprocess['rows_per_s']:,.0f} rows/s, "
          f"peak RSS {preprocess['peak_rss_bytes'] / 2**30:.2f} GiB; "
          f"FM epoch {train['rows_per_s']:,.0f} rows/s, peak RSS {train['peak_rss_bytes'] / 2**30:.2f} GiB, "
          f"validation AUC {train['validation_auc']:.4f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
