"""Training and evaluation as small plain functions: one epoch, one evaluation, early stopping."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ctrbench.probes.memory import synchronize

from .context import LOCAL, RunContext
from .data_source import DataSource, data_source
from .embedding_updates import DEFAULT as DEFAULT_EMBEDDING_UPDATE
from .embedding_updates import build_optimizer, embedding_update
from .regularizers import Regularizer, regularizer_for


@dataclass
class TrainConfig:
    max_epochs: int = 100
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10                  # the article stops after 10 epochs without val-AUC gain
    plateau_lr_factor: float | None = None  # BARS: 0.1 with patience 2 (cut the lr on each epoch without gain)
    eval_batch_size: int = 8192
    # L2 on the embedding rows each batch uses / on every other parameter (training.regularizers); 0: off.
    embedding_regularizer: float = 0.0
    net_regularizer: float = 0.0
    # How the embedding tables are updated (training.embedding_updates; the dense layers keep Adam),
    # and their learning rate (None: lr). Row-wise Adagrad and SGD want a larger one than Adam.
    embedding_optimizer: str = DEFAULT_EMBEDDING_UPDATE
    embedding_lr: float | None = None

    def __post_init__(self):
        for name in ("max_epochs", "batch_size", "patience", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        embedding_update(self.embedding_optimizer)        # ValueError naming the known ones
        if self.embedding_lr is not None and self.embedding_lr <= 0:
            raise ValueError(f"embedding_lr must be > 0, got {self.embedding_lr}")
        for name in ("embedding_regularizer", "net_regularizer"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.plateau_lr_factor is not None and not 0 < self.plateau_lr_factor < 1:
            raise ValueError(f"plateau_lr_factor must be in (0, 1), got {self.plateau_lr_factor}")

    def as_dict(self) -> dict:
        """The settings, less those of OPTIONAL_SETTINGS left at their default: a setting added later
        leaves the run key (and so the stored records) of runs made without it unchanged."""
        settings = asdict(self)
        for name, default in OPTIONAL_SETTINGS.items():
            if settings.get(name) == default:
                del settings[name]
        return settings


# Settings that appear in a run's key and record only when set; {name: default}.
OPTIONAL_SETTINGS = {"embedding_regularizer": 0.0, "net_regularizer": 0.0,
                     "embedding_optimizer": DEFAULT_EMBEDDING_UPDATE, "embedding_lr": None}


# Named training settings, the one place every command and the suite take their defaults from (`--preset`; a
# flag given explicitly overrides its preset's value). "article" is the article's protocol, TrainConfig's
# defaults: Adam at 1e-3 on batches of 1024, stopped after 10 epochs without validation-AUC gain (AFM on
# purchase never stops before its 100 epochs). "quick" is the main job's: batches of 4096 at 4× the learning
# rate and a patience of 2 (BARS's), at most 30 epochs. "bars-budget" is BARS's budget without its lr cuts, what
# `ctrbench tune` trains every trial with; "bars" adds BARS's schedule (the lr divided by 10 on each epoch
# without gain). "attention" is `ctrbench attention`'s, "suite" the benchmark suite's quality cells'.
PRESETS = {
    "article": {},
    "quick": {"batch_size": 4096, "lr": 4e-3, "patience": 2, "max_epochs": 30},
    "bars-budget": {"batch_size": 4096, "lr": 1e-3, "patience": 2, "max_epochs": 100},
    "bars": {"batch_size": 4096, "lr": 1e-3, "patience": 2, "max_epochs": 100, "plateau_lr_factor": 0.1},
    "attention": {"batch_size": 1024, "lr": 1e-3, "patience": 3, "max_epochs": 30},
    "suite": {"batch_size": 1024, "lr": 1e-3, "patience": 3},
}


def preset_config(name: str, **overrides) -> TrainConfig:
    """The preset's TrainConfig with `overrides` (None values ignored) applied; ValueError for an unknown name."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return TrainConfig(**{**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}})


def preset_of(config: dict) -> str | None:
    """The name of the preset whose settings `config` (a record's) has, everything else at its default."""
    for name in PRESETS:
        if preset_config(name).as_dict() == config:
            return name
    return None


def make_optimizer(model: nn.Module, config: TrainConfig):
    """The config's optimizer for `model`: its embedding-update strategy on the tables (which may switch
    them to sparse gradients), Adam on the dense layers; the default is one Adam over everything."""
    return build_optimizer(model, config.embedding_optimizer, lr=config.lr, weight_decay=config.weight_decay,
                           embedding_lr=config.embedding_lr)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module, xb: torch.Tensor,
               yb: torch.Tensor, scale: float = 1.0, regularizer: Regularizer | None = None) -> torch.Tensor:
    """One step: forward, loss, backward (of (loss + regularizer's penalty) × scale), optimizer step.
    Returns the data loss (without the penalty), detached and left on the device: nothing here waits
    for the device."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(xb), yb)
    penalty = regularizer.penalty() if regularizer is not None else None
    objective = loss if penalty is None else loss + penalty
    (objective * scale if scale != 1.0 else objective).backward()
    optimizer.step()
    return loss.detach()


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters are (the CPU for a model without any)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, data, batch_size: int,
                generator: torch.Generator, context: RunContext = LOCAL,
                regularizer: Regularizer | None = None) -> torch.Tensor:
    """One pass over `data` (a DataSource, or (X, y) tensors) in shuffled batches; returns the mean
    training loss as a 0-dim float64 tensor on the data's device (reading it is the caller's one wait
    for the device per epoch). A streamed split's batches are read in bounded blocks and moved to the
    model's device one at a time.

    With context.world_size > 1 (a DistributedDataParallel `model`, every rank holding all of the data
    and the same `generator` state), `batch_size` is the global batch: each rank takes its share of
    every batch and scales its summed loss by world_size / (rows of the whole batch), so DDP's gradient
    average over ranks is the single-process mean gradient of that batch. The returned loss is the
    global mean.
    """
    data = data_source(data)
    model.train()
    world_size = context.world_size
    distributed = world_size > 1
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum" if distributed else "mean")
    rows = len(data)
    device = data.device(model_device(model))
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    steps = data.batches(batch_size, device, shuffle=True, generator=generator, rank=context.rank,
                         world_size=world_size, shard="rows")
    if context.progress:
        steps = tqdm(steps, total=math.ceil(rows / batch_size), desc="batches", leave=False)
    for step, (xb, yb) in enumerate(steps):
        if distributed:
            total += train_step(model, optimizer, loss_fn, xb, yb,
                                scale=world_size / min(batch_size, rows - step * batch_size), regularizer=regularizer)
        else:
            total.add_(train_step(model, optimizer, loss_fn, xb, yb, regularizer=regularizer), alpha=len(yb))
        count += len(yb)
    if distributed and torch.distributed.is_available() and torch.distributed.is_initialized():
        sums = torch.stack([total, torch.tensor(float(count), dtype=torch.float64, device=device)])
        torch.distributed.all_reduce(sums)
        return sums[0] / sums[1].clamp(min=1)
    return total / max(count, 1)


def local_module(model: nn.Module) -> nn.Module:
    """The module a rank runs on its own: the one inside DistributedDataParallel, else `model`."""
    return model.module if isinstance(model, DistributedDataParallel) else model


@torch.no_grad()
def predict_on_device(model: nn.Module, data, batch_size: int = 8192) -> torch.Tensor:
    """Click probabilities (rows,) float32 for every row of `data` (a DataSource, a SplitView or a
    tensor X), in eval mode, left on the data's device (for a streamed split, in index order, on the
    model's device)."""
    data = data_source(data)
    model.eval()
    device = data.device(model_device(model))
    parts = [torch.sigmoid(model(xb)).float() for xb, _ in data.batches(batch_size, device)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float32, device=device)


def predict(model: nn.Module, data, batch_size: int = 8192) -> np.ndarray:
    """Click probabilities for every row of `data`, in eval mode, as a NumPy array (one copy to the host)."""
    return predict_on_device(model, data, batch_size).cpu().numpy()


def scores(y_true: np.ndarray, probabilities: np.ndarray) -> dict:
    """AUC and logloss (scikit-learn). A split with one class only has no AUC: a clear error."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        raise ValueError(f"cannot compute AUC: the split has {len(y_true)} rows of a single class")
    probabilities = np.clip(probabilities.astype(np.float64), 1e-7, 1 - 1e-7)
    # imported here: scikit-learn takes ~2 s to import, which a process that never scores (a timing
    # cell, `ctrbench --help`) should not pay
    from sklearn.metrics import log_loss, roc_auc_score
    return {"auc": float(roc_auc_score(y_true, probabilities)),
            "logloss": float(log_loss(y_true, probabilities, labels=[0, 1]))}


def evaluate(model: nn.Module, data, batch_size: int = 8192) -> dict:
    """AUC, logloss, and inference throughput (samples/s) on `data` (a DataSource, or (X, y) tensors)."""
    data = data_source(data)
    synchronize(data.device(model_device(model)))
    start = time.perf_counter()
    probabilities = predict(model, data, batch_size)
    seconds = time.perf_counter() - start
    return {**scores(data.labels(), probabilities), "samples_per_s": len(data) / max(seconds, 1e-9)}


def reset_cuda_peak(device: torch.device) -> None:
    """Start a new window for `cuda_peak_bytes` (no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def cuda_peak_bytes(device: torch.device) -> int | None:
    """CUDA's max_memory_allocated since the last reset; None off CUDA."""
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def warm_up(model: nn.Module, train: DataSource, evaluation: list[DataSource], config: TrainConfig,
            context: RunContext = LOCAL, regularizer: Regularizer | None = None) -> float:
    """Do once each kind of work that `fit` times, then put the model back as it was; returns seconds.

    Train steps at the epoch's full and last batch sizes (with a throwaway optimizer and order) and
    predictions at the evaluation batch sizes: whatever is built on first use is built here, outside
    the timed epochs (CUDA's libraries and allocator, torch.compile's graphs for training and eval
    mode and for a second batch size, afm_kernel's C++ build). Weights, buffers and the random
    number generators are restored afterwards, so a warmed run trains exactly as an unwarmed one.
    """
    train, evaluation = data_source(train), [data_source(data) for data in evaluation]
    device = model_device(model)
    synchronize(device)
    start = time.perf_counter()
    state = copy.deepcopy(model.state_dict())
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    rows = min(len(train), config.batch_size + len(train) % config.batch_size)
    optimizer = make_optimizer(model, config)
    float(train_epoch(model, optimizer, train.head(rows), config.batch_size, torch.Generator(),
                      context.but(progress=False), regularizer))
    for data in evaluation:
        rows = min(len(data), config.eval_batch_size + len(data) % config.eval_batch_size)
        predict_on_device(local_module(model), data.head(rows), config.eval_batch_size)
    model.load_state_dict(state)
    torch.set_rng_state(cpu_rng)
    if cuda_rng is not None:
        torch.cuda.set_rng_state(cuda_rng, device)
    synchronize(device)
    return time.perf_counter() - start


@dataclass
class FitResult:
    best_epoch: int                 # 1-based epoch whose weights were restored
    epochs_run: int
    best_validation: dict
    history: list[dict]             # per epoch: loss, val auc/logloss, lr, seconds (+ CUDA peak bytes)
    train_seconds: float            # wall time spent in training steps only
    train_samples: int
    warmup_seconds: float = 0.0     # `warm_up`, before the first epoch (not in train_seconds)
    cuda_peak_bytes: int | None = None  # max_memory_allocated over the epochs (CUDA only)
    warmup_cuda_peak_bytes: int | None = None  # the same over the warm-up

    @property
    def train_samples_per_s(self) -> float:
        return self.train_samples / max(self.train_seconds, 1e-9)


def fit(model: nn.Module, train, validation, config: TrainConfig, generator, context=LOCAL) -> FitResult:
    """Adam (or the config's embedding optimizer on the tables) with early stopping on validation AUC;
    the best epoch's weights are restored at the end. `train` and `validation` are DataSources (or
    (X, y) tensors); `generator` draws the batches' order.

    `context.evaluate(model, data, batch_size)` replaces `evaluate` where distributed runs gather
    predictions from every rank before deciding. The epochs are timed after a `warm_up`, and the
    loop waits for the device once per epoch (no per-batch reads of device values).
    `context.on_epoch(entry)`, if given, sees each epoch's history entry (epoch, loss, val_auc, ...)
    as it ends; an exception it raises ends the fit (a tuner's pruning). The config's regularizers
    are added to the loss (`ctrbench.training.regularizers`).
    """
    train, validation = data_source(train), data_source(validation)
    evaluate_fn = context.evaluate or evaluate
    world_size = context.world_size
    device = model_device(model)
    if world_size > 1 and (config.embedding_regularizer or config.net_regularizer):
        raise ValueError("the embedding and net regularizers are single-process only (each rank would see "
                         "the rows of its own shard, not of the global batch)")
    if world_size > 1 and not embedding_update(config.embedding_optimizer).data_parallel:
        raise ValueError(f"embedding optimizer {config.embedding_optimizer!r} is single-process only (sparse "
                         "gradients or updates inside backward, which DistributedDataParallel does not average)")
    regularizer = regularizer_for(local_module(model), config)
    try:                                  # the regularizer's hooks come off the model however the fit ends
        reset_cuda_peak(device)
        warmup_seconds = warm_up(model, train, [validation], config, context, regularizer)
        # Kept apart from training's peak: first use builds one-off workspaces (Triton's autotuner times
        # every configuration on scratch copies of the outputs, cuBLAS its workspace).
        warmup_peak, peaks = cuda_peak_bytes(device), []
        optimizer = make_optimizer(model, config)
        best_auc, best_epoch, best_state, best_validation = -math.inf, 0, None, {}
        history, train_seconds, train_samples = [], 0.0, 0
        epochs = tqdm(range(1, config.max_epochs + 1), desc="epochs", disable=not context.progress, leave=False)
        for epoch in epochs:
            reset_cuda_peak(device)
            synchronize(device)
            start = time.perf_counter()
            loss = train_epoch(model, optimizer, train, config.batch_size, generator, context, regularizer)
            synchronize(device)
            seconds = time.perf_counter() - start
            loss = float(loss)
            train_seconds += seconds
            train_samples += len(train)
            validation_scores = evaluate_fn(model, validation, config.eval_batch_size)
            lr = optimizer.param_groups[0]["lr"]
            history.append({"epoch": epoch, "loss": loss, "val_auc": validation_scores["auc"],
                            "val_logloss": validation_scores["logloss"], "lr": lr, "seconds": seconds})
            if device.type == "cuda":
                peaks.append(cuda_peak_bytes(device))
                history[-1]["cuda_peak_bytes"] = peaks[-1]
            epochs.set_postfix(loss=f"{loss:.4f}", val_auc=f"{validation_scores['auc']:.4f}")
            if context.on_epoch is not None:
                context.on_epoch(dict(history[-1]))
            if validation_scores["auc"] > best_auc:
                best_auc, best_epoch, best_validation = validation_scores["auc"], epoch, validation_scores
                best_state = copy.deepcopy(model.state_dict())
            elif epoch - best_epoch >= config.patience:
                break
            elif config.plateau_lr_factor is not None:
                for group in optimizer.param_groups:
                    group["lr"] *= config.plateau_lr_factor
    finally:
        if regularizer is not None:
            regularizer.close()
    model.load_state_dict(best_state)
    return FitResult(best_epoch, len(history), best_validation, history, train_seconds, train_samples,
                     warmup_seconds, max(peaks) if device.type == "cuda" else None, warmup_peak)
