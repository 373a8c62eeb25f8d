"""The registry of embedding-update strategies, and what they share: finding the tables, splitting
the parameters, an optimizer made of two, and the bytes of optimizer state."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

DEFAULT = "adam"       # one dense Adam over every parameter: what the protocol always did


@dataclass(frozen=True)
class EmbeddingUpdate:
    name: str
    builder: Callable[..., torch.optim.Optimizer]   # (params, tables, dense, lr, embedding_lr, weight_decay, modules)
    sparse_gradients: bool   # the tables give sparse gradients (only the batch's rows)
    lazy: bool               # rows not in the batch are left exactly as they were
    description: str
    fused: bool = False      # the tables are updated inside the lookup's backward (no gradient tensor at all)

    @property
    def data_parallel(self) -> bool:
        """Whether DistributedDataParallel can average this strategy's gradients (dense ones only)."""
        return not (self.sparse_gradients or self.fused)


_STRATEGIES: dict[str, EmbeddingUpdate] = {}


def register_embedding_update(name: str, sparse_gradients: bool, lazy: bool, fused: bool = False):
    """Register `builder(params, tables, dense, lr, embedding_lr, weight_decay, modules) -> optimizer`.

    `params` is every parameter in the model's order, `tables` the weights of every `nn.Embedding`
    (already switched to sparse gradients where the strategy declares them), `dense` the rest, `modules`
    the `nn.Embedding`s themselves (a fused strategy replaces their forward); the builder returns one
    optimizer that updates all of them (`SplitOptimizer` joins two).
    """
    def decorate(builder):
        if name in _STRATEGIES:
            raise ValueError(f"embedding update {name!r} is already registered")
        doc = (builder.__doc__ or "").strip()
        _STRATEGIES[name] = EmbeddingUpdate(name, builder, sparse_gradients, lazy, doc.splitlines()[0] if doc else "",
                                            fused)
        builder.registry_name = name
        return builder
    return decorate


def list_embedding_updates() -> list[str]:
    return sorted(_STRATEGIES)


def embedding_update(name: str) -> EmbeddingUpdate:
    try:
        return _STRATEGIES[name]
    except KeyError:
        known = ", ".join(list_embedding_updates())
        raise ValueError(f"unknown embedding optimizer {name!r}; known: {known}") from None


def embedding_modules(model: nn.Module) -> list[nn.Embedding]:
    """Every embedding table of `model` (the feature embeddings and the linear term's weights)."""
    return [module for module in model.modules() if isinstance(module, nn.Embedding)]


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(the tables' weights, every other parameter), each in `model.parameters()` order."""
    tables = {id(module.weight) for module in embedding_modules(model)}
    params = list(model.parameters())
    return [p for p in params if id(p) in tables], [p for p in params if id(p) not in tables]


def build_optimizer(model: nn.Module, name: str = DEFAULT, lr: float = 1e-3, weight_decay: float = 0.0,
                    embedding_lr: float | None = None) -> torch.optim.Optimizer:
    """The optimizer of strategy `name` for `model`; switches the model's tables to sparse gradients
    (or back to dense) as the strategy needs. `embedding_lr` (default `lr`) is the tables' rate."""
    strategy = embedding_update(name)
    modules = embedding_modules(model)
    for module in modules:
        module.sparse = strategy.sparse_gradients
        module.__dict__.pop("forward", None)      # a fused strategy's lookup, from an earlier build
    tables, dense = split_parameters(model)
    return strategy.builder(list(model.parameters()), tables, dense, lr=lr,
                            embedding_lr=lr if embedding_lr is None else embedding_lr, weight_decay=weight_decay,
                            modules=modules)


class SplitOptimizer:
    """Several optimizers over disjoint parameters, used as one (`zero_grad`, `step`, `param_groups`,
    `state_dict`): the tables' own and the dense layers' Adam."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = [o for o in optimizers if o is not None]

    @property
    def param_groups(self) -> list[dict]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    @property
    def state(self) -> dict:
        return {p: s for optimizer in self.optimizers for p, s in optimizer.state.items()}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def state_dict(self) -> list[dict]:
        return [optimizer.state_dict() for optimizer in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        for optimizer, state in zip(self.optimizers, states, strict=True):
            optimizer.load_state_dict(state)


def dense_adam(params: list[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Adam | None:
    """The dense layers' own Adam (None for a model that has none)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay) if params else None


def optimizer_state_bytes(optimizer) -> int:
    """Bytes of every tensor the optimizer keeps as state (Adam's moments, Adagrad's sums, step counts):
    deterministic, unlike a memory reading. Adam allocates its state on the first step, so measure after one."""
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total
