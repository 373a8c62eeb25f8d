"""Speed of the data path: preprocessing a Criteo-layout file, and feeding batches to training.

* test_criteo_preprocess: `load("criteo", file=..., categorical=mode, use_cache=False)` end to end on a
  generated Criteo-layout TSV (Kaggle's train.txt layout: tabs, no header, label + 13 integers + 26
  8-hex categoricals, ~245 bytes per row), with a fresh cache folder per round. Records rows/s, the
  peak resident set during the load (absolute and rise, from Linux's VmHWM reset through
  /proc/self/clear_refs), and pyarrow's raw parse rate on the same file with the loader's own reader
  options (iterating the blocks and doing nothing), so the leaderboard can show the fraction of raw.
* test_batch_iteration_vs_fm_epoch: one epoch of `batches` alone against one FM training epoch
  (`train_epoch`) on purchase's training split; the issue's target is iteration <= 10% of training.

Quick profile: 200k rows (a few seconds per cell). Full: 1M and 4M rows (minutes; the 4M file is ~1 GB
in pytest's temporary folder, deleted at the end of the module).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from ctrbench.datasets import batches, load
from ctrbench.datasets.synthetic import write_criteo_tsv
from ctrbench.datasets.tabular import Encoding, TableReader, criteo_spec, first_line
from ctrbench.models import create_model
from ctrbench.probes.memory import peak_rss, reset_peak_rss
from ctrbench.training.train import train_epoch

PREPROCESS_CELLS = {          # profile -> [(rows, rounds)]
    "quick": [(200_000, 3)],
    "full": [(1_000_000, 2), (4_000_000, 1)],
}
MODES = ("hash", "vocab")
FEEDING = {"quick": {"iteration_rounds": 20, "fm_epochs": 1},
           "full": {"iteration_rounds": 50, "fm_epochs": 3}}
FEEDING_BATCH = 1024
ITERATION_TARGET = 0.10       # one epoch of batches alone <= 10% of one FM training epoch


def rows_id(rows: int) -> str:
    return f"{rows // 1_000_000}M" if rows % 1_000_000 == 0 else f"{rows // 1000}k"


def pytest_generate_tests(metafunc):
    if "preprocess_cell" in metafunc.fixturenames:
        profile = metafunc.config.getoption("ctrbench_profile")
        cells = [(mode, rows, rounds) for rows, rounds in PREPROCESS_CELLS[profile] for mode in MODES]
        metafunc.parametrize("preprocess_cell", cells, ids=[f"{m}-{rows_id(r)}" for m, r, _ in cells])


# ---------------------------------------------------------------------------------------------
# The generated file.

# write_criteo_tsv lives in ctrbench.datasets.synthetic (the scale measurement uses it too).


@pytest.fixture(scope="module")
def criteo_file(tmp_path_factory):
    """criteo_file(rows) -> path of the generated TSV, written once per session (per module) and row count."""
    folder = tmp_path_factory.mktemp("criteo")
    files: dict[int, Path] = {}

    def get(rows: int) -> Path:
        if rows not in files:
            files[rows] = write_criteo_tsv(folder / f"criteo_{rows_id(rows)}.txt", rows, seed=0)
        return files[rows]

    yield get
    shutil.rmtree(folder, ignore_errors=True)      # up to ~1 GB: not left for pytest's basetemp rotation


# ---------------------------------------------------------------------------------------------
# Measures.

def raw_parse_seconds(path: Path) -> tuple[int, float]:
    """(rows, seconds) to iterate pyarrow's streaming CSV reader over `path` with the loader's options
    (TableReader.record_batches: same column names, types, null values, block size), doing nothing per block."""
    reader = TableReader(path, criteo_spec(first_line(path)), Encoding())
    start = time.perf_counter()
    rows = sum(batch.num_rows for batch in reader.record_batches(path))
    return rows, time.perf_counter() - start


def environment_info() -> dict:
    return {"device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
            "pyarrow": pa.__version__, "cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]}


def test_criteo_preprocess(benchmark, criteo_file, preprocess_cell, tmp_path):
    mode, rows, rounds = preprocess_cell
    path = criteo_file(rows)
    caches = tmp_path / "cache"
    peaks: list[tuple[int | None, int | None]] = []      # (start, peak) resident bytes per round

    def setup():
        shutil.rmtree(caches, ignore_errors=True)        # each round preprocesses into an empty folder
        caches.mkdir()
        peaks.append((reset_peak_rss(), None))

    def preprocess():
        dataset = load("criteo", file=str(path), categorical=mode, cache_dir=caches, use_cache=False)
        peaks[-1] = (peaks[-1][0], peak_rss())
        assert not dataset.stats["cache_hit"]
        return len(dataset.y)

    raw = [raw_parse_seconds(path) for _ in range(rounds)]
    benchmark.group = "data criteo preprocess"
    benchmark.extra_info.update({"cell": "data", "kind": "preprocess", "dataset": "criteo (generated)",
                                 "mode": mode, "rows": rows, "file_bytes": path.stat().st_size,
                                 **environment_info()})
    loaded = benchmark.pedantic(preprocess, setup=setup, rounds=rounds, iterations=1)
    shutil.rmtree(caches, ignore_errors=True)
    assert loaded == rows and all(r == rows for r, _ in raw)

    seconds = benchmark.stats.stats.median
    raw_seconds = float(np.median([s for _, s in raw]))
    start, peak = peaks[-1]
    benchmark.extra_info.update({
        "seconds": seconds, "rows_per_s": rows / seconds,
        "raw_parse_seconds": raw_seconds, "raw_parse_rows_per_s": rows / raw_seconds,
        "fraction_of_raw": raw_seconds / seconds,
        "peak_rss_bytes": peak, "peak_rss_rise_bytes": None if None in (start, peak) else max(peak - start, 0),
    })


def test_batch_iteration_vs_fm_epoch(benchmark, request):
    settings = FEEDING[request.config.getoption("ctrbench_profile")]
    dataset = load("purchase")
    X, y = (torch.from_numpy(np.ascontiguousarray(a)) for a in dataset.split("train"))
    generator = torch.Generator().manual_seed(0)

    def iterate():
        for _ in batches(X, y, FEEDING_BATCH, shuffle=True, generator=generator, shard="rows"):
            pass

    torch.manual_seed(0)
    model = create_model("fm", dataset.field_dims)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    warm = 8 * FEEDING_BATCH                                                # warm-up: allocator, Adam state
    train_epoch(model, optimizer, (X[:warm], y[:warm]), FEEDING_BATCH, generator)
    fm_seconds = []
    for _ in range(settings["fm_epochs"]):
        start = time.perf_counter()
        train_epoch(model, optimizer, (X, y), FEEDING_BATCH, generator)
        fm_seconds.append(time.perf_counter() - start)

    benchmark.group = "data feeding"
    benchmark.extra_info.update({"cell": "data", "kind": "feeding", "dataset": "purchase", "model": "fm",
                                 "rows": len(y), "batch": FEEDING_BATCH, **environment_info()})
    benchmark.pedantic(iterate, rounds=settings["iteration_rounds"], iterations=1, warmup_rounds=2)
    iteration_seconds = benchmark.stats.stats.median
    fm_epoch_seconds = float(np.median(fm_seconds))
    ratio = iteration_seconds / fm_epoch_seconds
    benchmark.extra_info.update({"iteration_seconds": iteration_seconds, "fm_epoch_seconds": fm_epoch_seconds,
                                 "fm_epoch_seconds_all": fm_seconds, "ratio": ratio,
                                 "samples_per_s": len(y) / iteration_seconds})
    assert ratio <= ITERATION_TARGET, (f"one epoch of batches takes {iteration_seconds * 1e3:.1f} ms, "
                                       f"{ratio:.1%} of an FM epoch ({fm_epoch_seconds:.2f} s); target "
                                       f"<= {ITERATION_TARGET:.0%}")
