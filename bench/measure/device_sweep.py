"""AFM's pair products + attention pooling (the `afm` layer cell of `ctrbench.measure.cells`) for every
implementation AFM accepts, timed and memory-measured on one device, for issue 7 (`ctrbench measure
device_sweep`). Writes results/gpu/afm_<device>.json, which `ctrbench leaderboard` turns into tables.

Made to run once, unattended, under a hard time limit: a cell that fails (out of memory, any error)
is recorded and the sweep goes on; the file is rewritten atomically after every cell, so a run killed
at the limit keeps all it measured; past --budget-s no new cell starts, and the file says so.
"""
from __future__ import annotations

import datetime
import gc
import re
import time
from pathlib import Path

import torch

from ctrbench.models import ATTENTION_POOLED, interaction_entry
from ctrbench.probes.device import resolve_device
from ctrbench.probes.memory import time_step
from ctrbench.store.environment import LoadWindow, device_name, environment
from ctrbench.store.records import write_record

from .cells import ATTN_DIM, MEMORY_FACTOR, LayerCell, device_memory_bytes, implementations, layer_step

KIND = "device_sweep"
KEYS = frozenset({"kind", "environment", "device_name", "started", "finished", "complete", "stopped", "settings",
                  "planned_cells", "cells"})


def read(path: Path) -> dict:
    """A device sweep file as `sweep` writes it (ValueError otherwise)."""
    from ctrbench.store.records import read_document
    return read_document(path, KIND, KEYS, lists=("cells",))

FIELDS = (39, 100)                  # Criteo's field count, and a wide model
BATCHES = (1024, 4096, 16384, 65536)
MODES = ("train", "forward")
EMBED_DIM = 16


def device_implementations(device: torch.device) -> list[str]:
    """AFM's implementations that run their own code on `device` (see cells.runs_on)."""
    return implementations("afm", device.type)


def plan(fields, batches, modes, impls) -> list[LayerCell]:
    """Cheapest shape (B·P pairs, train ≈ 3× forward) first, so a sweep stopped by the budget has the
    small shapes done; all implementations of a shape back to back, so their ratios share one state."""
    def work(shape):
        f, b, mode = shape
        return (b * f * (f - 1) // 2 * (3 if mode == "train" else 1), f, b, mode)
    shapes = sorted(((f, b, m) for f in fields for b in batches for m in modes), key=work)
    return [LayerCell(impl, f, EMBED_DIM, b, mode, pooling="afm") for f, b, mode in shapes for impl in impls]


def measure(cell: LayerCell, device: torch.device, warmup: int, reps: int) -> dict:
    """Median and min of `reps` timed steps, each between synchronisations; then, on CUDA, one more
    step's peak allocation above what was allocated before it (weights and inputs excluded)."""
    timed = time_step(layer_step(cell, device), device, warmup, reps)
    return {"status": "ok", **timed, "samples_per_s": cell.batch / timed["median_s"]}


def run_cell(cell: LayerCell, device: torch.device, warmup: int, reps: int, memory_bytes: int | None) -> dict:
    """One cell's result, whatever happens: ok, oom, skipped (not tried) or error."""
    result = {"impl": cell.interaction, "num_fields": cell.num_fields, "batch": cell.batch, "mode": cell.mode,
              "embed_dim": cell.embed_dim, "attn_dim": ATTN_DIM, "dtype": cell.dtype, "status": None,
              "median_s": None, "min_s": None, "samples_per_s": None, "peak_extra_bytes": None, "error": None}
    fused = interaction_entry(cell.interaction).output == ATTENTION_POOLED   # never holds (B, P, E)
    if not fused and memory_bytes is not None and cell.largest_tensor_bytes * MEMORY_FACTOR > memory_bytes:
        return {**result, "status": "skipped",
                "error": f"skipped: too large (largest tensor {cell.largest_tensor_bytes / 2**30:.1f} GiB "
                         f"× {MEMORY_FACTOR} > {memory_bytes / 2**30:.1f} GiB of device memory)"}
    try:
        result.update(measure(cell, device, warmup, reps))
    except Exception as error:  # noqa: BLE001  (a failed cell is a result, not the end of the sweep)
        oom = isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()
        result.update(status="oom" if oom else "error", error=f"{type(error).__name__}: {error}"[:1000])
    # The exception (and the frames holding the step's tensors) is gone here, so this frees them.
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def progress_line(index: int, total: int, elapsed: float, cell: dict) -> str:
    shape = f"F={cell['num_fields']:<3} B={cell['batch']:<6} {cell['mode']:<7} {cell['impl']:<12}"
    if cell["status"] != "ok":
        return f"[{index}/{total}] {elapsed:6.1f}s {shape} {cell['status'].upper()}: {cell['error']}"[:300]
    memory = "" if cell["peak_extra_bytes"] is None else f" {cell['peak_extra_bytes'] / 2**20:,.1f} MiB"
    return (f"[{index}/{total}] {elapsed:6.1f}s {shape} {cell['samples_per_s']:>14,.0f} samples/s "
            f"(median {cell['median_s'] * 1e3:.3f} ms){memory}")


def sweep(cells: list[LayerCell], device: torch.device, out: Path, settings: dict, budget_s: float,
          clock=time.monotonic, log=print) -> dict:
    """Run `cells` in order, rewriting `out` after each; stop starting cells once `budget_s` has passed."""
    started = clock()
    memory_bytes = device_memory_bytes(device)
    window = LoadWindow()          # the load over the whole measurement, rewritten with the file
    document = {"kind": "device_sweep", "environment": environment(device), "device_name": device_name(device),
                "started": now(), "finished": None, "complete": False, "stopped": None,
                "settings": {**settings, "device_memory_bytes": memory_bytes}, "planned_cells": len(cells),
                "cells": []}
    write_record(out, document)
    log(f"device sweep: {len(cells)} cells on {document['device_name']} ({device}; torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}), budget {budget_s:g} s, writing {out}")
    for index, cell in enumerate(cells, 1):
        elapsed = clock() - started
        if elapsed >= budget_s:
            document["stopped"] = (f"stopped at the time budget ({budget_s:g} s) after {index - 1} of "
                                   f"{len(cells)} cells")
            log(document["stopped"])
            break
        result = run_cell(cell, device, settings["warmup"], settings["reps"], memory_bytes)
        document["cells"].append(result)
        write_record(out, document)
        log(progress_line(index, len(cells), clock() - started, result))
    else:
        document["complete"] = True
    document["finished"] = now()
    document["environment"]["load_avg"] = window.finish()
    write_record(out, document)
    counts = {s: sum(c["status"] == s for c in document["cells"]) for s in ("ok", "oom", "skipped", "error")}
    log(f"done in {clock() - started:.1f} s: {counts}; complete={document['complete']}; {out}")
    return document


def pinned_device(text: str) -> torch.device:
    """`text` as a device, a bare "cuda" as the current GPU: the record then names which one ran."""
    return resolve_device(text, pin=True)


def default_out(results_dir: Path, device: torch.device) -> Path:
    """RESULTS/gpu/afm_<device-name>.json, the name a slug of the device's own name."""
    slug = re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")
    return results_dir / "gpu" / f"afm_{slug}.json"


def run(device: torch.device, out: Path, fields, batches, modes, impls=None, reps: int = 5, warmup: int = 2,
        budget_s: float = 240.0, argv=(), log=print) -> dict:
    """The sweep over fields × batches × modes × `impls` (default: those that run their own code on
    `device`), its settings recorded with the command line `argv` that asked for it."""
    impls = impls or device_implementations(device)
    settings = {"fields": fields, "batches": batches, "modes": modes, "impls": impls,
                "reps": reps, "warmup": warmup, "budget_s": budget_s, "embed_dim": EMBED_DIM,
                "attn_dim": ATTN_DIM, "dtype": "float32", "memory_factor": MEMORY_FACTOR,
                "float32_matmul_precision": torch.get_float32_matmul_precision(), "argv": list(argv)}
    return sweep(plan(fields, batches, modes, impls), device, out, settings, budget_s, log=log)


if __name__ == "__main__":    # the command line moved to the commands package
    raise SystemExit("run this as: ctrbench measure device_sweep ARGS... (`--help` lists them)")
