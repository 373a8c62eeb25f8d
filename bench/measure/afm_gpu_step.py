"""Issue 15's table in one process on one GPU (`ctrbench measure afm_gpu_step --out FILE.json`).

A whole AFM model step (forward, BCE, backward, Adam; E = A = 16, float32, dropout 0.2), train and
inference, for triu_index (eager), afm_fused, torch.compile of the triu_index model, afm_triton (exact
float32), afm_triton_tf32, and FM's sum_square on the same fields and batch; F = 39 (criteo's fields) at
B = 16384, 65536, 4096 and F = 100 at B = 16384. Before timing anything it checks afm_triton (both modes)
against triu_index on the device, logits and every parameter's gradient, and records the largest
errors. Each cell: the median of `reps` synchronised steps after `warmup`, and one more step's peak
CUDA allocation above what was allocated before it. A failing cell (out of memory, any error) is
recorded and the run goes on; the JSON is rewritten atomically after every cell; past --budget-s no
new cell starts (the compiled model's cells come last, so a budget cuts those first). The steps are
cells.model_step's (ModelCell), the same as the benchmark suite's. On an H200: about 3-4 minutes.
"""
from __future__ import annotations

import gc
import time
from pathlib import Path

import torch

from ctrbench.models import create_model, interaction_entry, running_backend
from ctrbench.probes.memory import time_step
from ctrbench.store.environment import LoadWindow, device_name, environment
from ctrbench.store.records import write_record

from .cells import SHAPES, ModelCell, model_step, random_ids
from .device_sweep import now

KIND = "afm_gpu_step"
KEYS = frozenset({"kind", "environment", "device_name", "started", "finished", "complete", "stopped", "settings",
                  "cells", "checks"})


def read(path: Path) -> dict:
    """An afm_gpu_step file as `run` writes it (ValueError otherwise)."""
    from ctrbench.store.records import read_document
    return read_document(path, KIND, KEYS, lists=("cells",))

# (label, model, interaction, compiled): the contenders of one shape, run back to back.
CONTENDERS = (
    ("triu_index", "afm", "triu_index", False),
    ("afm_fused", "afm", "afm_fused", False),
    ("afm_triton", "afm", "afm_triton", False),
    ("afm_triton_tf32", "afm", "afm_triton_tf32", False),
    ("fm sum_square", "fm", "sum_square", False),
    ("compile(triu_index)", "afm", "triu_index", True),
)
SHAPE_OF_FIELDS = {39: "criteo", 100: "wide"}
# The shapes, most wanted first, so a run stopped by the budget has them.
SHAPES_RUN = ((39, 16384), (39, 65536), (100, 16384), (39, 4096))
MODES = ("train", "inference")
CHECKED = ("afm_triton", "afm_triton_tf32")


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double(), expected.double()
    scale = expected.abs().max().item()
    return (actual - expected).abs().max().item() / scale if scale else (actual - expected).abs().max().item()


def _logits_and_grads(model, x) -> tuple[torch.Tensor, dict]:
    logits = model(x)
    logits.square().mean().backward()
    return logits.detach(), {n: p.grad for n, p in model.named_parameters()}


def check_against_triu_index(name: str, num_fields: int, batch: int, device: torch.device) -> dict:
    """`name`'s AFM and the triu_index AFM (float32, same weights, no dropout: its equality is in the
    tests) against the triu_index AFM in float64: the largest error of the logits and of each
    parameter's gradient, relative to the largest exact value. Within tolerance means no farther from
    float64 than the declared tolerance, or than twice the float32 triu_index's distance (at real
    sizes a few hidden units sit on ReLU's kink, and any two float32 orders of summation differ there)."""
    field_dims = SHAPES[SHAPE_OF_FIELDS[num_fields]]() if num_fields in SHAPE_OF_FIELDS else [10] * num_fields
    torch.manual_seed(0)
    fast = create_model("afm", field_dims, interaction=name, dropout=0.0).to(device)
    # Unit-sized embeddings: at the model's own (tiny) initialisation every pair gets nearly the same
    # score, the attention has nothing to say and the gradients of b and h are rounding noise.
    torch.nn.init.normal_(fast.embedding.embedding.weight)
    slow = create_model("afm", field_dims, interaction="triu_index", dropout=0.0).to(device)
    slow.load_state_dict(fast.state_dict())
    exact = create_model("afm", field_dims, interaction="triu_index", dropout=0.0).to(device, torch.float64)
    exact.load_state_dict(fast.state_dict())
    x = random_ids(field_dims, batch).to(device)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False           # the float32 reference in exact float32
    try:
        (logits, grads), (f32_logits, f32_grads), (ref_logits, ref_grads) = (
            _logits_and_grads(model, x) for model in (fast, slow, exact))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    grad_errors = {n: _relative_error(grads[n], ref_grads[n]) for n in ref_grads}
    f32_grad_errors = {n: _relative_error(f32_grads[n], ref_grads[n]) for n in ref_grads}
    tolerance = interaction_entry(name).tolerance or (1e-5, 1e-4)
    forward_error, f32_forward_error = _relative_error(logits, ref_logits), _relative_error(f32_logits, ref_logits)
    within = forward_error <= max(tolerance[0], 2 * f32_forward_error) and all(
        grad_errors[n] <= max(tolerance[1], 2 * f32_grad_errors[n]) for n in grad_errors)
    return {"impl": name, "num_fields": num_fields, "batch": batch, "backend": running_backend(fast, device),
            "forward_max_rel_error": forward_error, "grad_max_rel_error": max(grad_errors.values()),
            "grad_rel_errors": grad_errors, "triu_index_float32_forward_error": f32_forward_error,
            "triu_index_float32_grad_errors": f32_grad_errors, "tolerance": list(tolerance),
            "within_tolerance": within}


def run_cell(label: str, model: str, interaction: str, compiled: bool, num_fields: int, batch: int, mode: str,
             device: torch.device, warmup: int, reps: int) -> dict:
    """One cell's result, whatever happens: ok, oom or error."""
    result = {"impl": label, "model": model, "interaction": interaction, "compile": compiled,
              "num_fields": num_fields, "batch": batch, "mode": mode, "status": None, "backend": None,
              "median_s": None, "min_s": None, "samples_per_s": None, "peak_extra_bytes": None, "error": None}
    try:
        step = model_step(ModelCell(model, interaction, SHAPE_OF_FIELDS[num_fields], batch, mode, compiled), device)
        result["backend"] = step.backend
        timed = time_step(step, device, warmup, reps)
        result.update(timed, status="ok", samples_per_s=batch / timed["median_s"])
    except Exception as error:  # noqa: BLE001  (a failed cell is a result, not the end of the run)
        oom = isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()
        result.update(status="oom" if oom else "error", error=f"{type(error).__name__}: {error}"[:1000])
    step = None
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def progress_line(cell: dict, elapsed: float) -> str:
    shape = f"{elapsed:6.1f}s F={cell['num_fields']:<3} B={cell['batch']:<6} {cell['mode']:<9} {cell['impl']:<20}"
    if cell["status"] != "ok":
        return f"{shape} {cell['status'].upper()}: {cell['error']}"[:300]
    memory = "" if cell["peak_extra_bytes"] is None else f" {cell['peak_extra_bytes'] / 2**20:,.0f} MiB"
    return f"{shape} {cell['samples_per_s'] / 1e6:8.3f} M samples/s{memory}  [{cell['backend']}]"


def run(device: torch.device, out: Path, shapes, modes, contenders, warmup: int, reps: int, budget_s: float,
        check_batch: int, argv: list[str], clock=time.monotonic, log=print) -> dict:
    """The checks against triu_index, then every cell of `contenders` (the compiled ones last), `out`
    rewritten after each; the settings record the command line `argv` that asked for it."""
    started = clock()
    window = LoadWindow()          # the load over the whole measurement, rewritten with the file
    document = {"kind": "afm_gpu_step", "environment": environment(device), "device_name": device_name(device),
                "started": now(), "finished": None, "complete": False, "stopped": None,
                "settings": {"shapes": [list(s) for s in shapes], "modes": list(modes),
                             "contenders": [c[0] for c in contenders], "warmup": warmup, "reps": reps,
                             "budget_s": budget_s, "embed_dim": 16, "attn_dim": 16, "dropout": 0.2,
                             "dtype": "float32", "float32_matmul_precision": torch.get_float32_matmul_precision(),
                             "argv": argv},
                "checks": [], "cells": []}
    write_record(out, document)
    log(f"afm_gpu_step on {document['device_name']} ({device}; torch {torch.__version__}), writing {out}")
    for num_fields in sorted({f for f, _ in shapes}):
        for name in CHECKED:
            try:
                check = check_against_triu_index(name, num_fields, check_batch, device)
            except Exception as error:  # noqa: BLE001
                check = {"impl": name, "num_fields": num_fields, "batch": check_batch,
                         "error": f"{type(error).__name__}: {error}"[:1000], "within_tolerance": False}
            document["checks"].append(check)
            write_record(out, document)
            log(f"check {name} F={num_fields} B={check_batch}: "
                + (check.get("error") or f"forward {check['forward_max_rel_error']:.2e}, gradients "
                   f"{check['grad_max_rel_error']:.2e} vs float64 (triu_index float32: "
                   f"{check['triu_index_float32_forward_error']:.2e}, "
                   f"{max(check['triu_index_float32_grad_errors'].values()):.2e}; "
                   f"{'within' if check['within_tolerance'] else 'OUTSIDE'} {check['tolerance']} or 2x that) "
                   f"[{check['backend']}]"))
    # The compiled model last, over all shapes: its compilation (tens of seconds a shape) is what a
    # budget cuts, and then every shape still has the eager and Triton figures.
    cells = [(f, b, mode, c) for compiled in (False, True) for mode in modes for f, b in shapes
             for c in contenders if c[3] == compiled]
    for index, (num_fields, batch, mode, (label, model, interaction, compiled)) in enumerate(cells, 1):
        if clock() - started >= budget_s:
            document["stopped"] = f"stopped at the time budget ({budget_s:g} s) after {index - 1} of {len(cells)} cells"
            log(document["stopped"])
            break
        cell = run_cell(label, model, interaction, compiled, num_fields, batch, mode, device, warmup, reps)
        document["cells"].append(cell)
        write_record(out, document)
        log(progress_line(cell, clock() - started))
    else:
        document["complete"] = True
    document["finished"] = now()
    document["environment"]["load_avg"] = window.finish()
    write_record(out, document)
    log(f"done in {clock() - started:.1f} s; complete={document['complete']}; {out}")
    return document


if __name__ == "__main__":    # the command line moved to the commands package
    raise SystemExit("run this as: ctrbench measure afm_gpu_step ARGS... (`--help` lists them)")
