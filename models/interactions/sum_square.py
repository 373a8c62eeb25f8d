import torch
from torch import nn

from ..registry import POOLED, register_interaction


@register_interaction("sum_square", output=POOLED)
class SumSquare(nn.Module):
    """Rendle's O(F·E) identity: sum_{i<j} v_i ⊙ v_j = ½((Σ_i v_i)² − Σ_i v_i²). (B, F, E) -> (B, E).

    Gives only the pooled sum, so it serves FM and NFM but not AFM, which weights each pair.
    """

    def __init__(self, num_fields: int):
        super().__init__()

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        square_of_sum = emb.sum(dim=1).pow(2)      # (B, E)
        sum_of_squares = emb.pow(2).sum(dim=1)     # (B, E)
        return 0.5 * (square_of_sum - sum_of_squares)
