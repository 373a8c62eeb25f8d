import torch
from torch import nn

from ..registry import PAIRS, register_interaction


@register_interaction("loop_gather", output=PAIRS)
class LoopGather(nn.Module):
    """The article's method: Python lists of (i, j) built on every forward, then gather and multiply.

    Rebuilding the index lists and copying them to the device each step is deliberate: this is the
    baseline the other implementations are measured against. (B, F, E) -> (B, P, E).
    """

    def __init__(self, num_fields: int):
        super().__init__()
        self.num_fields = num_fields

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        rows, cols = [], []
        for i in range(self.num_fields - 1):
            for j in range(i + 1, self.num_fields):
                rows.append(i)
                cols.append(j)
        rows = torch.tensor(rows, device=emb.device)
        cols = torch.tensor(cols, device=emb.device)
        return emb[:, rows] * emb[:, cols]
