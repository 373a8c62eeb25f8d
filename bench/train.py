"""Training and evaluation as small plain functions: one epoch, one evaluation, early stopping."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.metrics import log_loss, roc_auc_score
from torch import nn
from tqdm.auto import tqdm

from ctrbench.datasets.batching import batches

from .memory import synchronize


@dataclass
class TrainConfig:
    max_epochs: int = 100
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10                  # the article stops after 10 epochs without val-AUC gain
    plateau_lr_factor: float | None = None  # BARS: 0.1 with patience 2 (cut the lr on each epoch without gain)
    eval_batch_size: int = 8192

    def __post_init__(self):
        for name in ("max_epochs", "batch_size", "patience", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.plateau_lr_factor is not None and not 0 < self.plateau_lr_factor < 1:
            raise ValueError(f"plateau_lr_factor must be in (0, 1), got {self.plateau_lr_factor}")

    def as_dict(self) -> dict:
        return asdict(self)


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, X: torch.Tensor, y: torch.Tensor,
                batch_size: int, generator: torch.Generator, progress: bool = False,
                rank: int = 0, world_size: int = 1) -> float:
    """One pass over (X, y) in shuffled batches; returns the mean training loss.

    With world_size > 1 (a DistributedDataParallel `model`, every rank holding all of X and the same
    `generator` state), `batch_size` is the global batch: each rank takes its share of every batch
    and scales its summed loss by world_size / (rows of the whole batch), so DDP's gradient average
    over ranks is the single-process mean gradient of that batch. The returned loss is the global mean.
    """
    model.train()
    distributed = world_size > 1
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum" if distributed else "mean")
    total, count = torch.zeros((), device=X.device), 0
    steps = math.ceil(X.shape[0] / batch_size)
    for step, (xb, yb) in enumerate(tqdm(batches(X, y, batch_size, shuffle=True, generator=generator, rank=rank,
                                                 world_size=world_size, shard="rows"),
                                         total=steps, desc="batches", leave=False, disable=not progress)):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        if distributed:
            (loss * (world_size / min(batch_size, X.shape[0] - step * batch_size))).backward()
            total += loss.detach()
        else:
            loss.backward()
            total += loss.detach() * len(yb)
        optimizer.step()
        count += len(yb)
    if distributed and torch.distributed.is_available() and torch.distributed.is_initialized():
        sums = torch.stack([total.double(), torch.tensor(float(count), dtype=torch.float64, device=X.device)])
        torch.distributed.all_reduce(sums)
        total, count = sums[0], int(sums[1])
    return float(total) / max(count, 1)


@torch.no_grad()
def predict(model: nn.Module, X: torch.Tensor, batch_size: int = 8192) -> np.ndarray:
    """Click probabilities for every row of X, in eval mode."""
    model.eval()
    parts = [torch.sigmoid(model(xb)).float().cpu() for xb, _ in batches(X, X[:, 0], batch_size)]
    return torch.cat(parts).numpy() if parts else np.zeros(0, dtype=np.float32)


def scores(y_true: np.ndarray, probabilities: np.ndarray) -> dict:
    """AUC and logloss (scikit-learn). A split with one class only has no AUC: a clear error."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        raise ValueError(f"cannot compute AUC: the split has {len(y_true)} rows of a single class")
    probabilities = np.clip(probabilities.astype(np.float64), 1e-7, 1 - 1e-7)
    return {"auc": float(roc_auc_score(y_true, probabilities)),
            "logloss": float(log_loss(y_true, probabilities, labels=[0, 1]))}


def evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int = 8192) -> dict:
    """AUC, logloss, and inference throughput (samples/s) on (X, y)."""
    synchronize(X.device)
    start = time.perf_counter()
    probabilities = predict(model, X, batch_size)
    seconds = time.perf_counter() - start
    return {**scores(y.cpu().numpy(), probabilities), "samples_per_s": len(X) / max(seconds, 1e-9)}


@dataclass
class FitResult:
    best_epoch: int                 # 1-based epoch whose weights were restored
    epochs_run: int
    best_validation: dict
    history: list[dict]             # per epoch: loss, val auc/logloss, lr, seconds
    train_seconds: float            # wall time spent in training steps only
    train_samples: int

    @property
    def train_samples_per_s(self) -> float:
        return self.train_samples / max(self.train_seconds, 1e-9)


def fit(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], validation: tuple[torch.Tensor, torch.Tensor],
        config: TrainConfig, generator: torch.Generator, progress: bool = False,
        evaluate_fn=evaluate, rank: int = 0, world_size: int = 1) -> FitResult:
    """Adam with early stopping on validation AUC; the best epoch's weights are restored at the end.

    `evaluate_fn(model, X, y, batch_size)` is replaceable so that distributed runs can gather
    predictions from every rank before deciding.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best_auc, best_epoch, best_state, best_validation = -math.inf, 0, None, {}
    history, train_seconds, train_samples = [], 0.0, 0
    epochs = tqdm(range(1, config.max_epochs + 1), desc="epochs", disable=not progress, leave=False)
    for epoch in epochs:
        synchronize(train[0].device)
        start = time.perf_counter()
        loss = train_epoch(model, optimizer, *train, config.batch_size, generator, progress, rank, world_size)
        synchronize(train[0].device)
        seconds = time.perf_counter() - start
        train_seconds += seconds
        train_samples += len(train[0])
        validation_scores = evaluate_fn(model, *validation, config.eval_batch_size)
        lr = optimizer.param_groups[0]["lr"]
        history.append({"epoch": epoch, "loss": loss, "val_auc": validation_scores["auc"],
                        "val_logloss": validation_scores["logloss"], "lr": lr, "seconds": seconds})
        epochs.set_postfix(loss=f"{loss:.4f}", val_auc=f"{validation_scores['auc']:.4f}")
        if validation_scores["auc"] > best_auc:
            best_auc, best_epoch, best_validation = validation_scores["auc"], epoch, validation_scores
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= config.patience:
            break
        elif config.plateau_lr_factor is not None:
            for group in optimizer.param_groups:
                group["lr"] *= config.plateau_lr_factor
    model.load_state_dict(best_state)
    return FitResult(best_epoch, len(history), best_validation, history, train_seconds, train_samples)
