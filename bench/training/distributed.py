"""Data-parallel training on PyTorch's own engine.

`torchrun` starts one process per rank and sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT; `Distributed.start` joins them with `torch.distributed` (gloo on CPU, nccl on CUDA, each
rank on cuda:LOCAL_RANK) and DistributedDataParallel averages the gradients.

What a distributed run is:

* Every rank loads the whole dataset and draws the same shuffled order (same seed). `--batch-size`
  is the global batch G: at step k each rank trains on its contiguous share (G/N rows, +-1) of batch k
  of that order and scales its summed loss by N / G, so DDP's gradient average is exactly the
  single-process mean gradient of batch k (up to floating-point summation order). Dropout draws and
  BatchNorm statistics are per rank, so NFM/AFM follow the single-process run only statistically.
* Validation and test rows are split across ranks; predictions are all-gathered in row order and
  every rank scores the same array, so every rank takes the same early-stopping decision and stops
  at the same epoch.
* Throughput in the record is global: all training rows per epoch over the epoch's wall time.
* Only rank 0 writes records and the leaderboard and prints progress; rank 0 also decides which
  runs of a grid are pending (`agree`) so that the ranks never disagree about the work.
* `timeout` bounds every collective (and the rendezvous), so a rank that hangs ends the job instead
  of stalling it; a rank that dies is noticed by torchrun, which stops the others and exits non-zero.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ctrbench.probes.memory import synchronize

from .context import RunContext
from .data_source import DataSource, data_source
from .train import local_module, predict_on_device, scores

TIMEOUT_ENV = "CTRBENCH_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun(environ=None) -> bool:
    """True in a process that torchrun started: more than one rank, or one rank that torchrun's
    agent launched (TORCHELASTIC_RUN_ID), so that `--nproc_per_node=1` runs the same process group,
    DDP and gathered evaluation (nccl on a single GPU) as N ranks do."""
    environ = os.environ if environ is None else environ
    try:
        return int(environ.get("WORLD_SIZE", "1")) > 1 or "TORCHELASTIC_RUN_ID" in environ
    except ValueError:
        return False


def backend_for(device: torch.device | str) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def default_timeout_s(environ=None) -> float:
    environ = os.environ if environ is None else environ
    value = environ.get(TIMEOUT_ENV)
    try:
        return float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"${TIMEOUT_ENV} must be a number of seconds, got {value!r}") from None


@dataclass
class Distributed:
    """This process's place in a torchrun job; hooks for `run_grid` / `run_one`."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @classmethod
    def start(cls, device: str = "cpu", timeout_s: float | None = None, environ=None) -> "Distributed":
        """Join the process group described by torchrun's environment variables."""
        from ctrbench.probes.device import resolve_device

        environ = os.environ if environ is None else environ
        missing = [name for name in TORCHRUN_VARS if name not in environ]
        if missing:
            raise ValueError(f"distributed run without {', '.join(missing)}: start it with "
                             "torchrun --nproc_per_node=N -m ctrbench run ...")
        rank, world_size, local_rank = (int(environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
        resolved = resolve_device(device)
        if resolved.type == "cuda":
            if resolved.index is not None:
                raise ValueError(f"--device {device} under torchrun: say --device cuda; rank r uses cuda:LOCAL_RANK")
            if local_rank >= torch.cuda.device_count():
                raise ValueError(f"LOCAL_RANK {local_rank} but this machine has {torch.cuda.device_count()} GPU(s); "
                                 "use --nproc_per_node <= the GPU count")
            torch.cuda.set_device(local_rank)
            resolved = torch.device("cuda", local_rank)
        timeout_s = default_timeout_s(environ) if timeout_s is None else timeout_s
        if timeout_s <= 0:
            raise ValueError(f"the distributed timeout must be > 0 seconds, got {timeout_s}")
        backend = backend_for(resolved)
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=timeout_s))
        return cls(rank, world_size, local_rank, backend, resolved)

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    # hooks for run_grid / run_one ------------------------------------------------------------------

    def context(self, progress: bool = False, threads: int | None = None) -> RunContext:
        """This rank's RunContext: its device, gathered evaluation, DDP wrapper; progress on rank 0 only."""
        return RunContext(device=self.device, rank=self.rank, world_size=self.world_size, evaluate=self.evaluate,
                          wrap=self.wrap, progress=progress and self.is_writer, threads=threads, cluster=self)

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP over `model` (which every rank built from the same seed; DDP broadcasts rank 0's anyway)."""
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def agree(self, specs: list, pending: list) -> list:
        """Rank 0's choice of pending runs, on every rank (records may look different from each host)."""
        box = [[spec.key() for spec in pending]] if self.rank == 0 else [None]
        dist.broadcast_object_list(box, src=0)
        keys = set(box[0])
        return [spec for spec in specs if spec.key() in keys]

    def load_in_turn(self, load, *args, **kwargs):
        """Each machine's local rank 0 loads first (and fills any preprocessing cache), then the rest."""
        if self.local_rank == 0:
            dataset = load(*args, **kwargs)
        self.barrier()
        if self.local_rank != 0:
            dataset = load(*args, **kwargs)
        return dataset

    def barrier(self) -> None:
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def evaluate(self, model: nn.Module, data: DataSource, batch_size: int = 8192) -> dict:
        """`train.evaluate` over all ranks: each predicts its contiguous share of the rows, the shares
        are all-gathered in row order, and every rank scores the same predictions."""
        data = data_source(data)
        rows = len(data)
        bounds = [rows * r // self.world_size for r in range(self.world_size + 1)]
        sizes = [bounds[r + 1] - bounds[r] for r in range(self.world_size)]
        synchronize(self.device)
        start = time.perf_counter()
        lo, hi = bounds[self.rank], bounds[self.rank + 1]
        mine = predict_on_device(local_module(model), data.rows(lo, hi), batch_size)
        padded = torch.zeros(max(sizes), dtype=torch.float32, device=self.device)
        padded[:len(mine)] = mine.to(self.device)
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        probabilities = torch.cat([part[:size] for part, size in zip(parts, sizes)]).cpu().numpy()
        seconds = time.perf_counter() - start
        return {**scores(data.labels(), probabilities.astype(np.float32)),
                "samples_per_s": rows / max(seconds, 1e-9)}


def report_failure(cluster: Distributed, error: BaseException) -> None:
    """One clear line on stderr before the exception ends this rank (torchrun then stops the others),
    and torchrun's error file, so that its failure summary shows the message and traceback too.
    Call it inside the `except` block."""
    from torch.distributed.elastic.multiprocessing.errors import get_error_handler

    get_error_handler().record_exception(error)
    print(f"ctrbench run: rank {cluster.rank} of {cluster.world_size} ({cluster.backend}) failed: "
          f"{type(error).__name__}: {error}. torchrun stops the other ranks and exits non-zero.",
          file=sys.stderr, flush=True)
