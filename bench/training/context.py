"""Where and how a run trains, passed as one value instead of a parameter per concern at every layer."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RunContext:
    """What the protocol needs to know about the process a run trains in, beside the run itself.

    The defaults are a single process: the spec's own device, an ordinary evaluation, no wrapper.
    Under torchrun, `ctrbench.training.distributed.Distributed.context()` fills in the rank's part.
    """

    device: torch.device | None = None      # overrides the spec's (a torchrun rank's cuda:LOCAL_RANK)
    rank: int = 0
    world_size: int = 1
    # evaluate(model, data, batch_size) -> {"auc", "logloss", "samples_per_s"}; None: train.evaluate.
    # Distributed runs gather every rank's predictions before scoring.
    evaluate: Callable | None = None
    wrap: Callable | None = None            # model -> model (DistributedDataParallel), after torch.compile
    progress: bool = False                  # tqdm bars over epochs and batches
    # on_epoch(history entry) as each epoch ends; an exception it raises ends the fit (a tuner's pruning).
    on_epoch: Callable | None = None
    threads: int | None = None              # torch's intra-op threads for the run; None: leave as set
    cluster: object | None = None           # the Distributed job (agree, load_in_turn), None alone

    def but(self, **changes) -> RunContext:
        """A copy with `changes`."""
        return dataclasses.replace(self, **changes)

    @property
    def is_writer(self) -> bool:
        """Whether this process writes records and prints (rank 0, or the only process)."""
        return self.rank == 0


LOCAL = RunContext()
