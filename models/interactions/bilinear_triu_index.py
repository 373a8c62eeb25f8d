import torch
from torch import nn

from ..registry import BILINEAR, register_interaction


@register_interaction("bilinear_triu_index", output=BILINEAR)
class BilinearTriuIndex(nn.Module):
    """FiBiNET's bilinear interaction as `triu_index` does pairs: gather v_i and v_j per pair, gather each
    pair's W, one batched product. (B, F, E), W (K, E, E), type -> (B, P, E): (v_i W_k) ⊙ v_j.

    The plain vectorised definition: P products v_i W per sample, whatever the type.
    """

    def __init__(self, num_fields: int):
        super().__init__()
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        # which W each pair uses: k = 0, i or p
        self.register_buffer("each", rows.clone(), persistent=False)
        self.register_buffer("per_pair", torch.arange(len(rows)), persistent=False)

    def forward(self, emb: torch.Tensor, weight: torch.Tensor, bilinear_type: str) -> torch.Tensor:
        left = emb.index_select(1, self.rows)                                # (B, P, E)
        if bilinear_type == "field_all":
            projected = left @ weight[0]                                     # (B, P, E)
        else:
            index = self.each if bilinear_type == "field_each" else self.per_pair
            projected = torch.einsum("bpe,pef->bpf", left, weight.index_select(0, index))
        return projected * emb.index_select(1, self.cols)
