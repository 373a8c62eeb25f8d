"""`python -m ctrbench.measure.device_sweep`: AFM's pair products + attention pooling (the `afm` layer cell of
`ctrbench.measure.cells`) for every implementation AFM accepts, timed and memory-measured on one device, for
issue 7. Writes results/gpu/afm_<device>.json, which `ctrbench leaderboard` turns into tables.

Made to run once, unattended, under a hard time limit: a cell that fails (out of memory, any error)
is recorded and the sweep goes on; the file is rewritten atomically after every cell, so a run killed
at the limit keeps all it measured; past --budget-s no new cell starts, and the file says so.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import re
import sys
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


def int_list(text: str) -> list[int]:
    try:
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def names(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ctrbench.measure.device_sweep",
        description="Time AFM's pair products + attention pooling (E=16, A=16, float32) for every implementation "
                    "AFM accepts over fields x batches x modes on one device; record median/min seconds, "
                    "samples/s and CUDA peak extra memory per cell, OOM and errors included. The JSON is "
                    "rewritten after every cell; `ctrbench leaderboard` renders it.")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--fields", type=int_list, default=list(FIELDS), help="default 39,100")
    parser.add_argument("--batches", type=int_list, default=list(BATCHES), help="default 1024,4096,16384,65536")
    parser.add_argument("--modes", type=names, default=list(MODES), help="train (forward+backward), forward")
    parser.add_argument("--impls", type=names, help="implementations (default: every one AFM accepts, "
                                                    "but those whose own code does not run on the device)")
    parser.add_argument("--reps", type=int, default=5, help="timed steps per cell (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--budget-s", type=float, default=240.0,
                        help="start no new cell after this many seconds (default 240)")
    parser.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="the file goes to RESULTS/gpu/afm_<device-name>.json (default results)")
    parser.add_argument("--out", type=Path, help="write here instead")
    args = parser.parse_args(argv)
    if bad := [i for i in args.impls or [] if i not in implementations("afm")]:
        parser.error(f"not an AFM implementation: {bad}; known: {', '.join(implementations('afm'))}")
    check_timing_args(parser, args, MODES)
    return args


def check_timing_args(parser: argparse.ArgumentParser, args: argparse.Namespace, modes) -> None:
    """What this sweep and afm_gpu_step both refuse: no timed step, a negative warm-up, a mode not in
    `modes`, a CUDA device torch cannot see."""
    if args.reps < 1 or args.warmup < 0:
        parser.error("--reps must be >= 1 and --warmup >= 0")
    if bad := [m for m in args.modes if m not in modes]:
        parser.error(f"unknown mode(s) {bad}; known: {', '.join(modes)}")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device (torch.cuda.is_available() is False)")


def pinned_device(text: str) -> torch.device:
    """`text` as a device, a bare "cuda" as the current GPU: the record then names which one ran."""
    return resolve_device(text, pin=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = pinned_device(args.device)
    impls = args.impls or device_implementations(device)
    slug = re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")
    out = args.out or args.results_dir / "gpu" / f"afm_{slug}.json"
    settings = {"fields": args.fields, "batches": args.batches, "modes": args.modes, "impls": impls,
                "reps": args.reps, "warmup": args.warmup, "budget_s": args.budget_s, "embed_dim": EMBED_DIM,
                "attn_dim": ATTN_DIM, "dtype": "float32", "memory_factor": MEMORY_FACTOR,
                "float32_matmul_precision": torch.get_float32_matmul_precision(),
                "argv": sys.argv[1:] if argv is None else list(argv)}
    print_flushed = lambda *a: print(*a, flush=True)  # noqa: E731  (the log is read live on a remote machine)
    sweep(plan(args.fields, args.batches, args.modes, impls), device, out, settings, args.budget_s,
          log=print_flushed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
