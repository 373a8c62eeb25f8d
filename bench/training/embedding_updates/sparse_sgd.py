"""Plain SGD on the batch's rows: no optimizer state at all for the tables, the floor of what an update
costs (its learning rate wants to be far larger than Adam's: see `--embedding-lr`)."""
import torch

from .registry import SplitOptimizer, dense_adam, register_embedding_update


@register_embedding_update("sparse_sgd", sparse_gradients=True, lazy=True)
def sparse_sgd(params, tables, dense, lr, embedding_lr, weight_decay, modules):
    """Sparse gradients + torch.optim.SGD on the tables (no state); the dense layers' own Adam."""
    if weight_decay:
        raise ValueError("sparse_sgd has no weight decay on the tables (torch.optim.SGD refuses it with sparse "
                         "gradients); use an embedding regularizer, or another embedding optimizer")
    return SplitOptimizer(torch.optim.SGD(tables, lr=embedding_lr) if tables else None,
                          dense_adam(dense, lr, weight_decay))
