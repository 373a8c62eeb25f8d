import torch
from torch import nn

from ..registry import BILINEAR, register_interaction


@register_interaction("bilinear_einsum", output=BILINEAR)
class BilinearEinsum(nn.Module):
    """FiBiNET's bilinear interaction as `einsum` does pairs: every (i, j) of the F x F grid by one
    `torch.einsum` against a grid of weights, then the upper triangle. (B, F, E), W (K, E, E), type ->
    (B, P, E). Like `einsum`, it computes both orders and the diagonal: about twice the work.
    """

    def __init__(self, num_fields: int):
        super().__init__()
        self.num_fields = num_fields
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("flat_upper", rows * num_fields + cols, persistent=False)
        # W_k of each grid cell (i, j), flattened; cells off the upper triangle take any valid k and are dropped
        grid_i = torch.arange(num_fields).repeat_interleave(num_fields)
        pair_of_cell = torch.zeros(num_fields * num_fields, dtype=torch.long)
        pair_of_cell[rows * num_fields + cols] = torch.arange(len(rows))
        self.register_buffer("each", grid_i.clamp(max=num_fields - 2), persistent=False)
        self.register_buffer("per_pair", pair_of_cell, persistent=False)

    def forward(self, emb: torch.Tensor, weight: torch.Tensor, bilinear_type: str) -> torch.Tensor:
        batch, num_fields, dim = emb.shape
        if bilinear_type == "field_all":
            grid = torch.einsum("bie,ef,bjf->bijf", emb, weight[0], emb)                  # (B, F, F, E)
        else:
            index = self.each if bilinear_type == "field_each" else self.per_pair
            weights = weight.index_select(0, index).view(num_fields, num_fields, dim, dim)
            grid = torch.einsum("bie,ijef,bjf->bijf", emb, weights, emb)                 # (B, F, F, E)
        return grid.reshape(batch, num_fields * num_fields, dim).index_select(1, self.flat_upper)
