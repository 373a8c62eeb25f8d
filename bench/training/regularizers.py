"""The protocol's two L2 regularizers, added to a train step's loss.

- The embedding regularizer, FuxiCTR's `embedding_regularizer`: (λ/2)·Σ ||w_r||² over the embedding
  rows r the batch uses, each row once, in every `nn.Embedding` of the model (the latent vectors and
  the first-order weights). Its gradient on a row the batch uses is λ·w_r, as FuxiCTR's term over
  the whole table gives; rows the batch does not use get none (the lazy form, so a sparse embedding
  gradient stays sparse). It is computed from the vectors the model's own forward gathered (a
  forward hook on each `nn.Embedding`), weighted by 1/(times the row occurs in the batch): no second
  lookup, and nothing over the whole table.
- The net regularizer, FuxiCTR's `net_regularizer`: (λ/2)·Σ ||p||² over every parameter that is not
  an embedding table (linear layers, attention net, BatchNorm, FwFM's pair weights, the global bias).

Both are 0 (off) by default; off, the model runs with no hook and the loss is the plain BCE.
"""
from __future__ import annotations

import torch
from torch import nn

from .embedding_updates.registry import embedding_modules, split_parameters


def embedding_penalty(ids: torch.Tensor, gathered: torch.Tensor) -> torch.Tensor:
    """Σ ||w_r||² over the distinct rows r in `ids` (any shape), from `gathered` = table[ids] (ids.shape + (E,))."""
    _, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    squares = gathered.pow(2).sum(dim=-1)                            # ids.shape
    return (squares / counts[inverse].to(squares.dtype)).sum()


class Regularizer:
    """The penalty of one configuration on one model: `penalty()` after each training forward.

    `model` may be compiled or wrapped (DDP): the hooks go on the `nn.Embedding` modules inside it.
    Use as a context manager (or call `close()`), which removes the hooks.
    """

    def __init__(self, model: nn.Module, embedding: float = 0.0, net: float = 0.0):
        if embedding < 0 or net < 0:
            raise ValueError(f"regularizers must be >= 0, got embedding {embedding}, net {net}")
        self.embedding, self.net = float(embedding), float(net)
        # modules() and parameters() reach inside torch.compile's and DDP's wrappers (they are submodules)
        _, dense = split_parameters(model)
        self.net_parameters = [p for p in dense if p.requires_grad]
        self._gathered: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._hooks = ([m.register_forward_hook(self._keep) for m in embedding_modules(model)]
                       if self.embedding else [])

    def _keep(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        if torch.is_grad_enabled():                              # a training forward, not an evaluation
            self._gathered.append((inputs[0], output))

    def penalty(self) -> torch.Tensor | None:
        """The regularization term for the forward just run (and forget its gathered rows); None when off."""
        gathered, self._gathered = self._gathered, []
        terms = []
        if self.embedding:
            terms += [0.5 * self.embedding * embedding_penalty(ids, rows) for ids, rows in gathered]
        if self.net:
            terms += [0.5 * self.net * sum(p.pow(2).sum() for p in self.net_parameters)]
        return torch.stack(terms).sum() if terms else None

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks, self._gathered = [], []

    def __enter__(self) -> "Regularizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def regularizer_for(model: nn.Module, config) -> Regularizer | None:
    """The config's regularizer on `model`, or None when both are off (no hooks, no cost)."""
    embedding, net = getattr(config, "embedding_regularizer", 0.0), getattr(config, "net_regularizer", 0.0)
    return Regularizer(model, embedding, net) if embedding or net else None
