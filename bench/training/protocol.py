"""The protocol: one run = (dataset, model, interaction, hyper-parameters, seed) trained with early
stopping and scored once on the test split; a grid is many runs, each stored as soon as it ends."""
from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ctrbench.datasets import load
from ctrbench.models import (
    check_hparams,
    check_pair,
    create_model,
    hparams_for,
    list_interactions,
    model_entry,
    running_backend,
)
from ctrbench.probes.device import resolve_device  # noqa: F401  (re-exported: the protocol's device, its old home)
from ctrbench.probes.memory import PeakMemory, track_peak_memory
from ctrbench.store.environment import LoadWindow, busy_machine_warning, environment, load_warning
from ctrbench.store.records import SCHEMA, read_record, write_record

from . import auto
from .context import LOCAL, RunContext
from .data_source import DataSource, StreamedData, TensorData
from .train import FitResult, TrainConfig, evaluate, fit


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    model: str
    interaction: str
    seed: int
    hparams: dict = field(default_factory=dict)          # given ones; defaults are filled in
    dataset_options: dict = field(default_factory=dict)
    config: TrainConfig = field(default_factory=TrainConfig)
    device: str = "cpu"
    world_size: int = 1                 # data-parallel processes (torchrun); > 1 is a different run
    compile: bool = False               # torch.compile the model for training and evaluation
    tuned: dict | None = None           # a tuned configuration's re-run: {"study", "space_hash"} (ctrbench.tuning)

    def full_hparams(self) -> dict:
        defaults = {name: default for name, (default, _) in model_entry(self.model).hparams.items()}
        return {**defaults, **self.hparams}

    def identity(self) -> dict:
        """What makes two runs the same run (and so what a restarted grid may skip)."""
        return {"dataset": self.dataset, "dataset_options": self.dataset_options, "model": self.model,
                "interaction": self.interaction, "hparams": self.full_hparams(), "seed": self.seed,
                "config": self.config.as_dict(), "device": self.device,
                **({"world_size": self.world_size} if self.world_size > 1 else {}),
                **({"compile": True} if self.compile else {}),
                **({"tuned": self.tuned} if self.tuned else {})}

    def key(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def record_path(self, results_dir: Path) -> Path:
        name = f"{self.model}__{self.interaction}__seed{self.seed}__{self.key()}.json"
        return Path(results_dir) / "runs" / self.dataset / name


def seed_everything(seed: int) -> torch.Generator:
    """One seed fixes initialisation and dropout (global RNGs) and returns the shuffling generator."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def as_tensors(dataset, split: str, device: torch.device):
    X, y = dataset.split(split)
    return torch.as_tensor(np.ascontiguousarray(X), device=device), torch.as_tensor(y, device=device)


# A memory-mapped set with more rows than this is trained from its file, split by split, in bounded
# blocks (`block_batches`) rather than copied into memory as tensors: 5M rows of 39 int32 ids are
# ~0.8 GB, where copying every split starts to compete with the machine's RAM.
STREAM_ROWS = 5_000_000


def streams(dataset) -> bool:
    """Whether `train_and_test` reads the dataset's splits as views of its memory-mapped file."""
    return isinstance(dataset.X, np.memmap) and len(dataset.X) > STREAM_ROWS


def split_data(dataset, split: str, device: torch.device) -> DataSource:
    """The split as tensors on `device`, or as a view of its memory-mapped file for a set that `streams`."""
    return StreamedData(dataset.view(split)) if streams(dataset) else TensorData(*as_tensors(dataset, split, device))


@dataclass
class TrainedRun:
    model: torch.nn.Module              # the best epoch's weights, unwrapped
    fit: FitResult
    test: dict                          # auc, logloss, samples_per_s
    peak: PeakMemory
    wall_seconds: float
    cuda_peak_bytes: int | None         # max_memory_allocated over the whole run (CUDA only)


def model_hparams(spec: RunSpec, dataset) -> dict:
    """The spec's hyper-parameters, with those a data set supplies filled in where the run leaves them
    unset (null): qAFM's query is the data set's item side, where its loader declares one."""
    supplied = {"query_fields": list(getattr(dataset, "item_fields", ())) or None}
    hparams = dict(spec.hparams)
    for name, value in supplied.items():
        if name in model_entry(spec.model).hparams and value is not None and hparams.get(name) is None:
            hparams[name] = value
    return hparams


def train_and_test(spec: RunSpec, dataset, context: RunContext = LOCAL) -> TrainedRun:
    """Build the spec's model with its seed, train it with early stopping on the already loaded dataset
    (split by `spec.seed`), restore the best epoch and score the test split once.

    `context` says where it trains (its device overrides the spec's: a torchrun rank's own GPU,
    cuda:LOCAL_RANK), how it is evaluated and wrapped, and what sees each epoch. Every split's ids
    are checked against the model's fields here, once, before anything runs on the device: the
    model's forward checks values only in eager CPU mode, and an out-of-range id on a GPU is a
    device-side assert that kills the process without saying which id.
    """
    if context.threads:
        torch.set_num_threads(context.threads)
    device = torch.device(context.device) if context.device is not None else resolve_device(spec.device)
    generator = seed_everything(spec.seed)
    model = create_model(spec.model, dataset.field_dims, interaction=spec.interaction,
                         **model_hparams(spec, dataset)).to(device)
    splits = {name: split_data(dataset, name, device) for name in ("train", "validation", "test")}
    for name, data in splits.items():
        try:
            data.check_values(model.fields)
        except ValueError as error:
            raise ValueError(f"{getattr(dataset, 'name', 'dataset')} {name} split: {error}") from None
    trained = torch.compile(model) if spec.compile else model
    trained = context.wrap(trained) if context.wrap else trained
    evaluate_fn = context.evaluate or evaluate
    wall_start = time.perf_counter()
    with track_peak_memory(device) as peak:
        result = fit(trained, splits["train"], splits["validation"], spec.config, generator, context)
        test_scores = evaluate_fn(trained, splits["test"], spec.config.eval_batch_size)
    # fit opens a new CUDA peak window per epoch; the tracker's reading covers the test evaluation.
    windows = [b for b in (result.cuda_peak_bytes, peak.cuda_peak_bytes) if b is not None]
    return TrainedRun(model, result, test_scores, peak, time.perf_counter() - wall_start,
                      max(windows) if windows else None)


def run_one(spec: RunSpec, dataset, context: RunContext = LOCAL) -> dict:
    """Train and test one run on an already loaded dataset; returns its record."""
    window = LoadWindow()
    run = train_and_test(spec, dataset, context)
    load_avg = window.finish()
    result, peak = run.fit, run.peak
    device = next(run.model.parameters()).device
    # The key holds `compile` only when on (old keys stay valid); every record states it either way.
    return {
        "schema": SCHEMA, "kind": "run", "key": spec.key(), **spec.identity(), "compile": spec.compile,
        "embedding_optimizer": spec.config.embedding_optimizer,
        "dataset_options": dataset.options, "field_dims": list(dataset.field_dims),
        "rows": {s: int(len(dataset.splits[s])) for s in ("train", "validation", "test")},
        **({"data_path": "memory-mapped"} if streams(dataset) else {}),
        "test": {"auc": run.test["auc"], "logloss": run.test["logloss"]},
        "validation": {"auc": result.best_validation["auc"], "logloss": result.best_validation["logloss"]},
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "history": result.history,
        "train_samples_per_s": result.train_samples_per_s,
        "inference_samples_per_s": run.test["samples_per_s"],
        "warmup_seconds": result.warmup_seconds,
        "wall_seconds": run.wall_seconds,
        "memory": {"rss_peak_bytes": peak.rss_peak_bytes, "rss_rise_bytes": peak.rss_rise_bytes,
                   "cuda_peak_bytes": run.cuda_peak_bytes, "warmup_cuda_peak_bytes": result.warmup_cuda_peak_bytes},
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "running_backend": running_backend(run.model, device),
        "world_size": context.world_size,
        "backend": torch.distributed.get_backend() if torch.distributed.is_available()
        and torch.distributed.is_initialized() else None,
        "environment": {**environment(device, load_avg), **kernel_build(run.model, device)},
    }


def kernel_build(model: torch.nn.Module, device: torch.device) -> dict:
    """{"afm_kernel_isa": the build that ran ("avx2", "native:avx512", ...)} where afm_kernel computed the
    run's pooling, else {}: the kernel's speed is a property of the vector ISA it was compiled for."""
    if running_backend(model, device) != "afm_kernel":
        return {}
    from ctrbench.models.interactions.afm_kernel import kernel_isa
    return {"afm_kernel_isa": kernel_isa()}


def expand_grid(models: list[str], interactions: list[str] | str) -> list[tuple[str, str]]:
    """(model, interaction) cells. `interactions` is a list of names, "all" (every valid one per
    model) or "default" (each model's default). A named interaction that fits a model is used for
    it; one that fits none of the models, or an empty grid, is an error listing the valid choices."""
    for model in models:
        model_entry(model)
    if interactions == "all":
        return [(m, i) for m in models for i in list_interactions(model=m)]
    if interactions == "default":
        return [(m, model_entry(m).default_interaction) for m in models]
    cells = []
    for interaction in interactions:
        fitting = [m for m in models if interaction in list_interactions(model=m)]
        if not fitting:
            check_pair(models[0], interaction)      # raises with the valid list (or unknown name)
        cells += [(m, interaction) for m in fitting]
    return sorted(set(cells), key=lambda cell: (models.index(cell[0]), interactions.index(cell[1])))


@dataclass(frozen=True)
class Grid:
    """What a grid trains: every (model, interaction) cell of `models` × `interactions`, on each seed.

    `interactions` is a list of names, "all", "default" or "auto" (`expand_grid`, `auto.resolve`).
    `tuned` marks the runs as a tuned configuration's re-run (part of their key, see `RunSpec.tuned`);
    `record_extra` is added to each new record (the tuner's trial count and best trial), and replaces
    those fields of a stored record the grid skips."""

    dataset: str
    models: list[str]
    interactions: list[str] | str = "default"
    seeds: list[int] = field(default_factory=lambda: [0])
    hparams: dict = field(default_factory=dict)
    dataset_options: dict = field(default_factory=dict)
    config: TrainConfig = field(default_factory=TrainConfig)
    device: str = "cpu"
    data_dir: Path | str | None = None
    compile: bool = False
    tuned: dict | None = None
    record_extra: dict | None = None

    def spec(self, model: str, interaction: str, seed: int, world_size: int = 1) -> RunSpec:
        return RunSpec(self.dataset, model, interaction, seed, hparams_for(model, self.hparams),
                       self.dataset_options, self.config, self.device, world_size, self.compile, self.tuned)

    def load(self, seed: int):
        return load(self.dataset, data_dir=self.data_dir, seed=seed, **self.dataset_options)


def grid_cells(grid: Grid, context: RunContext, log=print) -> tuple[list[tuple[str, str]], dict, dict]:
    """The grid's (model, interaction) cells, {model: auto's choice} where it names "auto", and {seed:
    dataset} for the split auto loaded to learn the field count (the grid trains on it next: not loaded twice)."""
    interactions, models = grid.interactions, grid.models
    if not (interactions == auto.AUTO or (not isinstance(interactions, str) and auto.AUTO in interactions)):
        return expand_grid(models, interactions), {}, {}
    if context.cluster is not None:
        raise ValueError("--interactions auto calibrates on one process; under torchrun name the implementations")
    for model in models:
        model_entry(model)
    loaded = {grid.seeds[0]: grid.load(grid.seeds[0])}
    fields = loaded[grid.seeds[0]].num_fields
    choices = {m: auto.resolve(m, fields, grid.config.batch_size, resolve_device(grid.device), log) for m in models}
    rest = [] if isinstance(interactions, str) else [i for i in interactions if i != auto.AUTO]
    cells = list(dict.fromkeys([(m, choices[m]["picked"]) for m in models]
                               + (expand_grid(models, rest) if rest else [])))
    return cells, choices, loaded


def run_grid(grid: Grid, results_dir: Path, context: RunContext = LOCAL, log=print) -> list[dict]:
    """Run every (model, interaction, seed) of the grid not already stored; return all its records.

    Each record is written the moment its run ends, so a killed grid loses at most the run in flight
    and a restart skips what is done. Under torchrun (`context.cluster`, a
    `ctrbench.training.distributed.Distributed`) every run trains on all ranks; rank 0 decides what is
    pending and alone writes records.
    """
    check_hparams(grid.models, grid.hparams)
    if context.threads:       # before grid_cells: `auto` calibrates at the thread count the runs train with
        torch.set_num_threads(context.threads)
    cells, choices, loaded = grid_cells(grid, context, log)
    cluster = context.cluster
    records = []
    total = len(cells) * len(grid.seeds)
    done = trained = 0
    extra = json.loads(json.dumps(grid.record_extra or {}, default=str))     # as a stored record holds it
    for seed in grid.seeds:
        specs = [grid.spec(m, i, seed, context.world_size) for m, i in cells]
        pending = []
        for spec in specs:
            path = spec.record_path(results_dir)
            try:
                record = read_record(path)
                if any(record.get(k) != v for k, v in extra.items()):
                    # the same run, described anew (a continued study whose best is unchanged: its trial count)
                    record.update(extra)
                    if context.is_writer:
                        write_record(path, record)
                records.append(record)
                done += 1
                log(f"[{done}/{total}] {spec.model}/{spec.interaction} seed {seed}: already stored, skipped")
            except ValueError as error:
                if path.exists():
                    log(f"warning: {error}; running it again")
                pending.append(spec)
        if cluster is not None:
            pending = cluster.agree(specs, pending)
        dataset = loaded.pop(seed, None)            # whatever happens, the next seeds load their own split
        if not pending:
            continue
        if dataset is None:
            dataset = cluster.load_in_turn(grid.load, seed) if cluster is not None else grid.load(seed)
        if not trained and cluster is None:
            warning = busy_machine_warning(torch.get_num_threads())
            if warning:
                log(f"warning: {warning}")
        for spec in pending:
            record = run_one(spec, dataset, context)
            record.update(extra)
            if spec.model in choices and choices[spec.model]["picked"] == spec.interaction:
                record["interaction_choice"] = {k: v for k, v in choices[spec.model].items() if k != "cached"}
            if context.is_writer:
                write_record(spec.record_path(results_dir), record)
            records.append(record)
            done += 1
            trained += 1
            log(f"[{done}/{total}] {spec.model}/{spec.interaction} seed {seed}: test AUC "
                f"{record['test']['auc']:.4f}, logloss {record['test']['logloss']:.4f}, "
                f"best epoch {record['best_epoch']}/{record['epochs_run']}, "
                f"{record['train_samples_per_s']:,.0f} train samples/s")
            warning = load_warning(record["environment"]["load_avg"], record["environment"]["threads"])
            if warning:
                log(f"warning: {warning}")
    if total and len(records) == total and not trained:
        log(f"all {total} runs were stored already under {Path(results_dir) / 'runs'}: nothing trained "
            "(their records stand; --results-dir DIR trains them afresh into DIR)")
    return records
