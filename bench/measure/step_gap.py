"""The protocol's recorded train throughput against the suite's bare whole-model train step, same model,
shape, batch and device, measured in one process.

The bare step (`ctrbench.measure.cells.model_step`: forward, BCE, backward, Adam on one fixed batch) is what
the hardware can do; the protocol (`ctrbench.training.protocol.train_and_test` on the purchase log) adds what
training really needs: a shuffled order, a gather per batch, a last batch of another size, the loss
kept for the record. The ratio bare / protocol says what the loop costs: near 1 the loop is free, and
the issue's bar on a GPU is 2 at a batch that suits the GPU.

    ctrbench measure step_gap --device cuda --models fm,afm --batches 4096,65536 --out step_gap.json
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch

from ctrbench.datasets import load
from ctrbench.files import write_text_atomic
from ctrbench.models import model_entry
from ctrbench.probes.memory import timed_rounds
from ctrbench.store.environment import LoadWindow, environment
from ctrbench.training.context import RunContext
from ctrbench.training.protocol import RunSpec, train_and_test
from ctrbench.training.train import TrainConfig

from .cells import ModelCell, model_step

KIND = "step_gap"
KEYS = frozenset({"kind", "environment", "settings", "cells"})


def read(path: Path) -> dict:
    """A step_gap file as `measure_gap` writes it (ValueError otherwise)."""
    from ctrbench.store.records import read_document
    return read_document(path, KIND, KEYS, lists=("cells",))

SHAPE = "purchase"      # the suite's purchase shape is the purchase log's fields


def bare_samples_per_s(model: str, interaction: str, batch: int, device: torch.device, compile: bool = False,
                       warmup: int = 3, rounds: int = 5, steps: int = 10) -> float:
    """Median over `rounds` of batch × steps / seconds, each round `steps` back-to-back train steps
    between two synchronisations (as an epoch of the protocol is timed), after `warmup` steps."""
    step = model_step(ModelCell(model, interaction, SHAPE, batch, "train", compile=compile), device)
    return statistics.median(batch * steps / seconds for seconds in timed_rounds(step, device, warmup, rounds, steps))


def protocol_run(model: str, interaction: str, batch: int, device: torch.device, dataset, epochs: int,
                 compile: bool = False) -> dict:
    """`epochs` epochs of the protocol (no early stop before), seed 0; its recorded numbers."""
    config = TrainConfig(max_epochs=epochs, patience=epochs, batch_size=batch, eval_batch_size=max(8192, batch))
    spec = RunSpec(SHAPE, model, interaction, 0, config=config, device=str(device), compile=compile)
    run = train_and_test(spec, dataset, RunContext(device=device))
    return {"samples_per_s": run.fit.train_samples_per_s, "warmup_seconds": run.fit.warmup_seconds,
            "epoch_samples_per_s": [len(dataset.splits["train"]) / h["seconds"] for h in run.fit.history]}


def measure(models: list[str], batches: list[int], device: torch.device, rows: int, epochs: int,
            compile: bool = False, interactions: list[str] | None = None, out: Path | None = None,
            log=print) -> dict:
    """Both throughputs per (batch, model) (a model's default implementation unless `interactions`
    names one per model); the JSON is rewritten after each cell when `out` is given."""
    dataset = load(SHAPE, seed=0, rows=rows)
    window = LoadWindow()
    result = {"kind": "step_gap", "environment": environment(device),
              "settings": {"dataset": SHAPE, "rows": rows, "batches": batches, "epochs": epochs, "compile": compile},
              "cells": []}
    for batch, (number, model) in ((b, m) for b in batches for m in enumerate(models)):
        interaction = interactions[number] if interactions else model_entry(model).default_interaction
        protocol = protocol_run(model, interaction, batch, device, dataset, epochs, compile)
        bare = bare_samples_per_s(model, interaction, batch, device, compile)
        cell = {"model": model, "interaction": interaction, "batch": batch, "compile": compile,
                "bare_samples_per_s": bare, "protocol_samples_per_s": protocol["samples_per_s"],
                "bare_over_protocol": bare / protocol["samples_per_s"],
                "protocol_epoch_samples_per_s": protocol["epoch_samples_per_s"],
                "warmup_seconds": protocol["warmup_seconds"]}
        result["cells"].append(cell)
        log(f"{model}/{interaction} B={batch} {'compiled' if compile else 'eager'} on {device}: protocol "
            f"{cell['protocol_samples_per_s']:,.0f} samples/s, bare step {bare:,.0f} samples/s, "
            f"bare/protocol {cell['bare_over_protocol']:.2f}x (warm-up {cell['warmup_seconds']:.1f}s)")
        result["environment"]["load_avg"] = window.finish()
        if out is not None:
            write_text_atomic(out, json.dumps(result, indent=1, default=str) + "\n")
    return result


if __name__ == "__main__":    # the command line moved to the commands package
    raise SystemExit("run this as: ctrbench measure step_gap ARGS... (`--help` lists them)")
