"""Row-wise Adagrad applied inside the lookup's backward, as TorchRec/FBGEMM's fused tables do: the
backward of `table[ids]` sums the batch's gradient per distinct row and updates those rows at once, so
no gradient tensor of the table (dense or sparse) is ever made, and there is no optimizer step for it.
The arithmetic is `rowwise_adagrad`'s (one float of state per row); the same batch gives the same rows.

It replaces the forward of each `nn.Embedding` it is built for (an instance attribute, removed when
another strategy is built for the model); evaluation under no_grad runs the plain lookup.
"""
import torch
import torch.nn.functional as F

from .registry import SplitOptimizer, dense_adam, register_embedding_update
from .rowwise_adagrad import update_rows


class FusedRowWiseAdagrad(torch.optim.Optimizer):
    """The tables' state (`sum`: (rows,)) and rates; `step` does nothing: the lookup's backward updates."""

    def __init__(self, params, lr: float = 1e-2, eps: float = 1e-8, weight_decay: float = 0.0):
        if lr <= 0 or eps <= 0 or weight_decay < 0:
            raise ValueError(f"need lr > 0, eps > 0, weight_decay >= 0; got {lr}, {eps}, {weight_decay}")
        super().__init__(params, {"lr": lr, "eps": eps, "weight_decay": weight_decay})
        for group in self.param_groups:
            for param in group["params"]:
                self.state[param]["sum"] = torch.zeros(param.shape[0], dtype=param.dtype, device=param.device)

    def step(self, closure=None):
        return None

    def group_of(self, param: torch.nn.Parameter) -> dict:
        return next(group for group in self.param_groups if any(p is param for p in group["params"]))

    @torch.no_grad()
    def update(self, param: torch.Tensor, ids: torch.Tensor, grad_out: torch.Tensor) -> None:
        """Row-wise Adagrad on the rows `ids` (any shape) whose lookup received `grad_out` (ids.shape + (E,))."""
        group = self.group_of(param)
        rows, inverse = torch.unique(ids.reshape(-1), return_inverse=True)               # (n,), (B*F,)
        width = param.shape[1]
        grad = grad_out.new_zeros(len(rows), width).index_add_(0, inverse, grad_out.reshape(-1, width))   # (n, E)
        update_rows(param, self.state[param]["sum"], rows, grad, group["lr"], group["eps"], group["weight_decay"])


class LookupWithUpdate(torch.autograd.Function):
    """table[ids] forward; backward updates the table's rows in place and gives no gradient to the table."""

    @staticmethod
    def forward(ctx, ids, weight, optimizer):
        ctx.save_for_backward(ids)
        ctx.weight, ctx.optimizer = weight, optimizer
        return F.embedding(ids, weight)

    @staticmethod
    def backward(ctx, grad_out):
        (ids,) = ctx.saved_tensors
        ctx.optimizer.update(ctx.weight, ids, grad_out)
        return None, None, None


def fused_lookup(module: torch.nn.Embedding, optimizer: FusedRowWiseAdagrad):
    def forward(ids: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and module.weight.requires_grad):
            return F.embedding(ids, module.weight)
        return LookupWithUpdate.apply(ids, module.weight, optimizer)
    return forward


@register_embedding_update("fused_rowwise_adagrad", sparse_gradients=False, lazy=True, fused=True)
def fused_rowwise_adagrad(params, tables, dense, lr, embedding_lr, weight_decay, modules):
    """Row-wise Adagrad inside the lookup's backward (no table gradient, no table step); the dense layers' own Adam."""
    if not tables:
        return SplitOptimizer(dense_adam(dense, lr, weight_decay))
    tables_optimizer = FusedRowWiseAdagrad(tables, lr=embedding_lr, weight_decay=weight_decay)
    for module in modules:
        module.forward = fused_lookup(module, tables_optimizer)
    return SplitOptimizer(tables_optimizer, dense_adam(dense, lr, weight_decay))
