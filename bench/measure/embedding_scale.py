"""A whole-model train step against the size of the embedding tables, for every embedding-update strategy,
measured side by side in one process.

The cells are the suite's vocabulary cells (`ctrbench.measure.cells.vocab_cells`: Criteo's 39-field layout
at 40k, 1M and 10M rows, one fixed batch of uniformly drawn ids, `model_step`), so this is the full
profile's vocabulary axis run alone, in minutes rather than the suite's hours. For each model every
(rows, strategy) cell is built first and then timed in interleaved rounds (round r of every cell before
round r + 1 of any), so a change in the machine's load falls on all of them alike. Per cell: median and
min step time, samples/s, the bytes of optimizer state (deterministic), parameter bytes, and the
peak-RSS rise of one step. Writes results/embedding_scale/embedding_scale_<device>.json, rewritten after
each model; `ctrbench leaderboard` renders it beside the suite's vocabulary cells.

    ctrbench measure embedding_scale --models fm,afm --threads 1
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch

from ctrbench.files import write_text_atomic
from ctrbench.models import model_entry
from ctrbench.probes.memory import cuda_step_peak_bytes, peak_rss_rise_bytes, timed_rounds
from ctrbench.store.environment import LoadWindow, environment
from ctrbench.training.embedding_updates import optimizer_state_bytes

from .cells import ModelCell, model_step, model_too_large

KIND = "embedding_scale"
KEYS = frozenset({"kind", "environment", "settings", "cells", "summary"})


def read(path: Path) -> dict:
    """An embedding_scale file as `run` writes it (ValueError otherwise)."""
    from ctrbench.store.records import read_document
    return read_document(path, KIND, KEYS, lists=("cells",))

RESULTS = Path("results") / "embedding_scale"
# AFM's pooling in its fast CPU kernel, so that its step is not all pooling (see --interactions).
FAST_INTERACTIONS = ("afm:afm_kernel",)


def measure_model(model: str, rows_list: list[int], strategies: list[str], batch: int, device: torch.device,
                  rounds: int, calls: int, warmup: int, interaction: str | None = None, log=print) -> list[dict]:
    """Every (rows, strategy) cell of one model (its default implementation unless `interaction`),
    timed interleaved."""
    interaction = interaction or model_entry(model).default_interaction
    cells, steps, results = [], [], []
    for rows in rows_list:
        for strategy in strategies:
            cell = ModelCell(model, interaction, "criteo", batch, "train", rows=rows, embedding_optimizer=strategy)
            reason = model_too_large(cell, device)
            if reason:
                results.append({"model": model, "interaction": interaction, "rows": rows,
                                "embedding_optimizer": strategy, "batch": batch, "outcome": "skipped",
                                "reason": reason})
                log(f"{model} rows={rows:,} {strategy}: skipped ({reason})")
                continue
            step = model_step(cell, device)
            step()                                  # the optimizer's state exists after its first step
            cells.append(cell)
            steps.append(step)
    times = {id(step): [] for step in steps}
    for _ in range(warmup):
        for step in steps:
            step()
    for _ in range(rounds):
        for step in steps:
            times[id(step)] += timed_rounds(step, device, 0, 1, calls)
    for cell, step in zip(cells, steps):
        seconds = [t / calls for t in times[id(step)]]
        median = statistics.median(seconds)
        module_bytes = sum(p.numel() * p.element_size() for group in step.optimizer.param_groups
                           for p in group["params"])
        result = {"model": model, "interaction": interaction, "rows": cell.rows, "vocab_rows": sum(cell.field_dims()),
                  "num_fields": len(cell.field_dims()), "embedding_optimizer": cell.embedding_optimizer,
                  "batch": batch, "outcome": "ok", "median_s": median, "min_s": min(seconds),
                  "samples_per_s": batch / median, "optimizer_state_bytes": optimizer_state_bytes(step.optimizer),
                  "parameter_bytes": module_bytes}
        if device.type == "cuda":
            result["cuda_peak_bytes"] = cuda_step_peak_bytes(step, device)
        else:
            result["peak_rss_rise_bytes"] = peak_rss_rise_bytes(step)
        results.append(result)
        log(f"{model} rows={cell.rows:>10,} {cell.embedding_optimizer:>16}: {median * 1e3:8.2f} ms/step, "
            f"{batch / median:>10,.0f} samples/s, optimizer state {result['optimizer_state_bytes'] / 2**20:,.1f} MiB")
    return results


def scale_summary(cells: list[dict]) -> list[dict]:
    """Per model: each strategy's step time at the largest table over its own at the smallest, and the
    best strategy (fastest at the largest table) with that ratio (the issue's goal: <= 1.5)."""
    summary = []
    for model in dict.fromkeys(c["model"] for c in cells):
        ok = [c for c in cells if c["model"] == model and c.get("outcome") == "ok"]
        if not ok:
            continue
        smallest, largest = min(c["rows"] for c in ok), max(c["rows"] for c in ok)
        ratios = {}
        for strategy in dict.fromkeys(c["embedding_optimizer"] for c in ok):
            by_rows = {c["rows"]: c for c in ok if c["embedding_optimizer"] == strategy}
            if smallest in by_rows and largest in by_rows:
                ratios[strategy] = by_rows[largest]["median_s"] / by_rows[smallest]["median_s"]
        at_largest = {c["embedding_optimizer"]: c["median_s"] for c in ok if c["rows"] == largest}
        best = min(at_largest, key=at_largest.get)
        summary.append({"model": model, "smallest_rows": smallest, "largest_rows": largest,
                        "step_ratio_largest_over_smallest": ratios, "best_at_largest": best,
                        "best_ratio": ratios.get(best)})
    return summary


def default_batch(device: torch.device) -> int:
    """The batch where none is asked for: 4096 on the CPU, 65536 on a GPU."""
    return 4096 if device.type == "cpu" else 65536


def default_out(device: torch.device) -> Path:
    """results/embedding_scale/embedding_scale_<device type>.json."""
    return RESULTS / f"embedding_scale_{device.type}.json"


def run(models: list[str], rows_list: list[int], strategies: list[str], batch: int, device: torch.device,
        rounds: int, calls: int, warmup: int, interactions: dict[str, str], out: Path, command: str,
        log=print) -> dict:
    """Every model's cells (`interactions`: MODEL -> implementation where not its default), `out` rewritten
    after each model with the summary so far; `command` is the command line recorded in the settings."""
    window = LoadWindow()
    document = {"kind": "embedding_scale", "environment": environment(device),
                "settings": {"models": models, "interactions": interactions, "rows": rows_list,
                             "strategies": strategies, "batch": batch,
                             "threads": torch.get_num_threads(), "rounds": rounds, "calls": calls,
                             "warmup": warmup, "layout": "criteo (13 x 64 + 26 categorical fields)",
                             "ids": "uniform over each field, one fixed batch", "lr": 1e-3,
                             "command": command},
                "cells": []}
    for model in models:
        document["cells"] += measure_model(model, rows_list, strategies, batch, device, rounds, calls, warmup,
                                           interactions.get(model), log=log)
        document["summary"] = scale_summary(document["cells"])
        document["environment"]["load_avg"] = window.finish()
        write_text_atomic(out, json.dumps(document, indent=1, default=str) + "\n")
    return document


if __name__ == "__main__":    # the command line moved to the commands package
    raise SystemExit("run this as: ctrbench measure embedding_scale ARGS... (`--help` lists them)")
