import torch
from torch import nn

from ..registry import INNER, register_interaction


@register_interaction("gram_triu", output=INNER)
class GramTriu(nn.Module):
    """Every inner product at once: one batched matrix product emb @ emb^T (the Gram matrix), then its
    upper triangle. (B, F, E) -> (B, F, F) -> (B, P).

    F·F·E multiply-adds a row where a pair gather does P·E (about twice, both triangles and the diagonal),
    but it never holds a (B, P, E) tensor: the gather moves P scalars a row instead of P·E, and the
    backward is two more batched products instead of a scatter-add into the embeddings.
    """

    def __init__(self, num_fields: int):
        super().__init__()
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("flat_upper", rows * num_fields + cols, persistent=False)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        gram = torch.bmm(emb, emb.transpose(1, 2))                          # (B, F, F)
        return gram.flatten(start_dim=1).index_select(1, self.flat_upper)   # (B, P)
