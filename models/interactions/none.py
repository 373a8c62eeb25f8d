import torch
from torch import nn

from ..registry import NONE, register_interaction


@register_interaction("none", output=NONE)
class NoInteraction(nn.Module):
    """No pairwise product: what DCNv2, AutoInt and FinalMLP take, which cross features otherwise
    (cross layers, self-attention, two gated MLPs). (B, F, E) -> (B, F, E), unchanged.

    Registered so that every model has an implementation to name in records and `ctrbench list`; such a
    model never calls it, and the layer cells, which time a pairwise product alone, leave it out.
    """

    def __init__(self, num_fields: int):
        super().__init__()

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return emb
