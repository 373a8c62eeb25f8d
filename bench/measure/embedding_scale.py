"""`python -m ctrbench.measure.embedding_scale`: a whole-model train step against the size of the embedding
tables, for every embedding-update strategy, measured side by side in one process.

The cells are the suite's vocabulary cells (`ctrbench.measure.cells.vocab_cells`: Criteo's 39-field layout
at 40k, 1M and 10M rows, one fixed batch of uniformly drawn ids, `model_step`), so this is the full
profile's vocabulary axis run alone, in minutes rather than the suite's hours. For each model every
(rows, strategy) cell is built first and then timed in interleaved rounds (round r of every cell before
round r + 1 of any), so a change in the machine's load falls on all of them alike. Per cell: median and
min step time, samples/s, the bytes of optimizer state (deterministic), parameter bytes, and the
peak-RSS rise of one step. Writes results/embedding_scale/embedding_scale_<device>.json, rewritten after
each model; `ctrbench leaderboard` renders it beside the suite's vocabulary cells.

    python -m ctrbench.measure.embedding_scale --models fm,afm --threads 1
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from ctrbench.files import write_text_atomic
from ctrbench.models import list_models, model_entry
from ctrbench.probes.device import resolve_device
from ctrbench.probes.memory import cuda_step_peak_bytes, peak_rss_rise_bytes, timed_rounds
from ctrbench.store.environment import LoadWindow, environment
from ctrbench.training.embedding_updates import list_embedding_updates, optimizer_state_bytes
from ctrbench.values import comma_list

from .cells import VOCAB_ROWS, ModelCell, model_step, model_too_large

KIND = "embedding_scale"
KEYS = frozenset({"kind", "environment", "settings", "cells", "summary"})


def read(path: Path) -> dict:
    """An embedding_scale file as `main` writes it (ValueError otherwise)."""
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ctrbench.measure.embedding_scale",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=comma_list, default=["fm", "afm"],
                        help=f"from {', '.join(list_models())} (default fm,afm), each at its default implementation")
    parser.add_argument("--rows", type=lambda s: [int(float(v)) for v in comma_list(s)], default=list(VOCAB_ROWS),
                        help="embedding rows (default 40000,1000000,10000000)")
    parser.add_argument("--interactions", type=comma_list, default=list(FAST_INTERACTIONS),
                        help="MODEL:IMPLEMENTATION overrides of the default implementation (default "
                             f"{','.join(FAST_INTERACTIONS)}: AFM's default, triu_index, takes ~6 s a step at F=39, "
                             "B=4096 on 2 cores, all of it in the pooling; an empty string: the defaults)")
    parser.add_argument("--strategies", type=comma_list, default=list_embedding_updates(),
                        help=f"from {', '.join(list_embedding_updates())} (default all)")
    parser.add_argument("--batch", type=int, default=None, help="default 4096 on the CPU, 65536 on a GPU")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per cell (median; default 7)")
    parser.add_argument("--calls", type=int, default=3, help="steps per round (default 3)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per cell before timing (default 2)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"the JSON (default {RESULTS}/embedding_scale_<device>.json)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    for strategy in args.strategies:
        if strategy not in list_embedding_updates():
            parser.error(f"unknown strategy {strategy!r}; known: {', '.join(list_embedding_updates())}")
    batch = args.batch or (4096 if device.type == "cpu" else 65536)
    overrides = dict(item.split(":", 1) for item in args.interactions if item)
    out = args.out or RESULTS / f"embedding_scale_{device.type}.json"
    window = LoadWindow()
    document = {"kind": "embedding_scale", "environment": environment(device),
                "settings": {"models": args.models, "interactions": overrides, "rows": args.rows,
                             "strategies": args.strategies, "batch": batch,
                             "threads": torch.get_num_threads(), "rounds": args.rounds, "calls": args.calls,
                             "warmup": args.warmup, "layout": "criteo (13 x 64 + 26 categorical fields)",
                             "ids": "uniform over each field, one fixed batch", "lr": 1e-3,
                             "command": " ".join(["python -m ctrbench.measure.embedding_scale",
                                                  *(argv or sys.argv[1:])])},
                "cells": []}
    for model in args.models:
        document["cells"] += measure_model(model, args.rows, args.strategies, batch, device, args.rounds, args.calls,
                                           args.warmup, overrides.get(model))
        document["summary"] = scale_summary(document["cells"])
        document["environment"]["load_avg"] = window.finish()
        write_text_atomic(out, json.dumps(document, indent=1, default=str) + "\n")
    for entry in document["summary"]:
        ratios = ", ".join(f"{k} {v:.2f}" for k, v in entry["step_ratio_largest_over_smallest"].items())
        print(f"{entry['model']}: step at {entry['largest_rows']:,} rows / at {entry['smallest_rows']:,}: {ratios}; "
              f"best at the largest: {entry['best_at_largest']} ({entry['best_ratio']:.2f})")
    print(f"embedding_scale: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
