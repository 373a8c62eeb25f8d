import torch
from torch import nn

from ..registry import PAIRS, register_interaction


@register_interaction("triu_index", output=PAIRS)
class TriuIndex(nn.Module):
    """Pair indices from `torch.triu_indices`, built once and held as buffers; index_select, multiply.

    (B, F, E) -> (B, P, E).
    """

    def __init__(self, num_fields: int):
        super().__init__()
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
        # Non-persistent buffers follow .to(device) but stay out of checkpoints.
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return emb.index_select(1, self.rows) * emb.index_select(1, self.cols)
