import torch
from torch import nn

from ..registry import CIN, register_interaction


@register_interaction("cin_einsum", output=CIN)
class CINEinsum(nn.Module):
    """One CIN layer as a single `torch.einsum`: x^k_{m,e} = Σ_{h,i} W_{m,h,i} x^{k-1}_{h,e} x^0_{i,e}.

    hidden (B, H, E), emb (B, F, E), W (H', H, F) -> (B, H', E); torch picks the contraction order.
    """

    def __init__(self, num_fields: int):
        super().__init__()

    def forward(self, hidden: torch.Tensor, emb: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bhe,bie,mhi->bme", hidden, emb, weight)
