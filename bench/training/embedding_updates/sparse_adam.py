"""Lazy Adam: sparse gradients and torch.optim.SparseAdam on the tables, which moves only the batch's
rows and updates only their moments (the moments stay full-size: 3x the table in memory)."""
import torch

from .registry import SplitOptimizer, dense_adam, register_embedding_update


@register_embedding_update("sparse_adam", sparse_gradients=True, lazy=True)
def sparse_adam(params, tables, dense, lr, embedding_lr, weight_decay, modules):
    """Sparse gradients + torch.optim.SparseAdam on the tables (lazy Adam); the dense layers' own Adam."""
    if weight_decay:
        raise ValueError("sparse_adam has no weight decay on the tables (torch.optim.SparseAdam has none); "
                         "use an embedding regularizer, or another embedding optimizer")
    return SplitOptimizer(torch.optim.SparseAdam(tables, lr=embedding_lr) if tables else None,
                          dense_adam(dense, lr, weight_decay))
