"""Dense Adam over every parameter: the tables get dense gradients (a full-size zero tensor with the
batch's rows filled in) and two full-size moments, and every row moves every step (a row's moments decay
even when it is not in the batch)."""
import torch

from .registry import register_embedding_update


@register_embedding_update("adam", sparse_gradients=False, lazy=False)
def adam(params, tables, dense, lr, embedding_lr, weight_decay, modules):
    """One torch.optim.Adam over all parameters (the protocol's default; 3x the table in memory)."""
    if embedding_lr != lr:
        # one Adam keeps the parameters in their model order, so the default run is unchanged
        return torch.optim.Adam([{"params": tables, "lr": embedding_lr}, {"params": dense}], lr=lr,
                                weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
