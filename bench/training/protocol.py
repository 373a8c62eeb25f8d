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
from ctrbench.datasets.batching import block_batches
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


def split_data(dataset, split: str, device: torch.device) -> tuple:
    """(X, y) tensors on `device`, or (SplitView, None) for a set that `streams`."""
    return (dataset.view(split), None) if streams(dataset) else as_tensors(dataset, split, device)


def check_split_values(fields, X, block_rows: int = 1 << 20) -> None:
    """`fields.check_values` over tensors, or over a split view block by block (rows counted in the split)."""
    if isinstance(X, torch.Tensor):
        fields.check_values(X)
        return
    start = 0
    for xb, _ in block_batches(X, block_rows):
        try:
            fields.check_values(xb)
        except ValueError as error:
            raise ValueError(f"{error} (rows counted from the split's row {start})") from None
        start += len(xb)


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


def train_and_test(spec: RunSpec, dataset, progress: bool = False, evaluate_fn=evaluate, rank: int = 0,
                   world_size: int = 1, model_wrapper=None, device: torch.device | str | None = None,
                   on_epoch=None) -> TrainedRun:
    """Build the spec's model with its seed, train it with early stopping on the already loaded dataset
    (split by `spec.seed`), restore the best epoch and score the test split once.

    `device` overrides the spec's (a torchrun rank's own GPU, cuda:LOCAL_RANK); `on_epoch` goes to
    `fit`. Every split's ids are checked against the model's fields here, once, before anything runs
    on the device: the model's forward checks values only in eager CPU mode, and an out-of-range id on
    a GPU is a device-side assert that kills the process without saying which id.
    """
    device = torch.device(device) if device is not None else resolve_device(spec.device)
    generator = seed_everything(spec.seed)
    model = create_model(spec.model, dataset.field_dims, interaction=spec.interaction,
                         **model_hparams(spec, dataset)).to(device)
    splits = {name: split_data(dataset, name, device) for name in ("train", "validation", "test")}
    for name, (X, _) in splits.items():
        try:
            check_split_values(model.fields, X)
        except ValueError as error:
            raise ValueError(f"{getattr(dataset, 'name', 'dataset')} {name} split: {error}") from None
    trained = torch.compile(model) if spec.compile else model
    trained = model_wrapper(trained) if model_wrapper else trained
    wall_start = time.perf_counter()
    with track_peak_memory(device) as peak:
        result = fit(trained, splits["train"], splits["validation"], spec.config, generator, progress, evaluate_fn,
                     rank, world_size, on_epoch)
        test_scores = evaluate_fn(trained, *splits["test"], spec.config.eval_batch_size)
    # fit opens a new CUDA peak window per epoch; the tracker's reading covers the test evaluation.
    windows = [b for b in (result.cuda_peak_bytes, peak.cuda_peak_bytes) if b is not None]
    return TrainedRun(model, result, test_scores, peak, time.perf_counter() - wall_start,
                      max(windows) if windows else None)


def run_one(spec: RunSpec, dataset, progress: bool = False, evaluate_fn=evaluate, rank: int = 0,
            world_size: int = 1, model_wrapper=None, device: torch.device | str | None = None) -> dict:
    """Train and test one run on an already loaded dataset; returns its record."""
    window = LoadWindow()
    run = train_and_test(spec, dataset, progress, evaluate_fn, rank, world_size, model_wrapper, device)
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
        "world_size": world_size,
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


def run_grid(dataset_name: str, models: list[str], interactions, seeds: list[int], results_dir: Path,
             hparams: dict | None = None, dataset_options: dict | None = None,
             config: TrainConfig | None = None, device: str = "cpu", data_dir=None,
             progress: bool = False, log=print, distributed=None, compile: bool = False,
             tuned: dict | None = None, record_extra: dict | None = None) -> list[dict]:
    """Run every (model, interaction, seed) not already stored; return all the grid's records.

    Each record is written the moment its run ends, so a killed grid loses at most the run in flight
    and a restart skips what is done. `distributed` (a `ctrbench.training.distributed.Distributed`, under
    torchrun) trains every run on all ranks; rank 0 decides what is pending and alone writes records.
    `tuned` marks the runs as a tuned configuration's re-run (part of their key, see `RunSpec.tuned`);
    `record_extra` is added to each new record (the tuner's trial count and best trial), and replaces
    those fields of a stored record it skips.
    """
    config = config or TrainConfig()
    hparams = hparams or {}
    dataset_options = dataset_options or {}
    check_hparams(models, hparams)
    choices = {}
    if interactions == auto.AUTO or (not isinstance(interactions, str) and auto.AUTO in interactions):
        if distributed is not None:
            raise ValueError("--interactions auto calibrates on one process; under torchrun name the implementations")
        for model in models:
            model_entry(model)
        fields = load(dataset_name, data_dir=data_dir, seed=seeds[0], **dataset_options).num_fields
        choices = {m: auto.resolve(m, fields, config.batch_size, resolve_device(device), log) for m in models}
        rest = [] if isinstance(interactions, str) else [i for i in interactions if i != auto.AUTO]
        cells = list(dict.fromkeys([(m, choices[m]["picked"]) for m in models]
                                   + (expand_grid(models, rest) if rest else [])))
    else:
        cells = expand_grid(models, interactions)
    records = []
    total = len(cells) * len(seeds)
    done = trained = 0
    extra = json.loads(json.dumps(record_extra or {}, default=str))     # as a stored record holds it
    for seed in seeds:
        specs = [RunSpec(dataset_name, m, i, seed, hparams_for(m, hparams),
                         dataset_options, config, device, distributed.world_size if distributed else 1, compile,
                         tuned)
                 for m, i in cells]
        pending = []
        for spec in specs:
            path = spec.record_path(results_dir)
            try:
                record = read_record(path)
                if any(record.get(k) != v for k, v in extra.items()):
                    # the same run, described anew (a continued study whose best is unchanged: its trial count)
                    record.update(extra)
                    if distributed is None or distributed.rank == 0:
                        write_record(path, record)
                records.append(record)
                done += 1
                log(f"[{done}/{total}] {spec.model}/{spec.interaction} seed {seed}: already stored, skipped")
            except ValueError as error:
                if path.exists():
                    log(f"warning: {error}; running it again")
                pending.append(spec)
        if distributed:
            pending = distributed.agree(specs, pending)
        if not pending:
            continue
        dataset = (distributed.load_in_turn(load, dataset_name, data_dir=data_dir, seed=seed, **dataset_options)
                   if distributed else load(dataset_name, data_dir=data_dir, seed=seed, **dataset_options))
        if not trained and distributed is None:
            warning = busy_machine_warning(torch.get_num_threads())
            if warning:
                log(f"warning: {warning}")
        for spec in pending:
            record = run_one(spec, dataset, progress, **(distributed.run_options() if distributed else {}))
            record.update(extra)
            if spec.model in choices and choices[spec.model]["picked"] == spec.interaction:
                record["interaction_choice"] = {k: v for k, v in choices[spec.model].items() if k != "cached"}
            if distributed is None or distributed.rank == 0:
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
