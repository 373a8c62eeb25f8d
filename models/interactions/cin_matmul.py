import torch
from torch import nn

from ..registry import CIN, register_interaction


@register_interaction("cin_matmul", output=CIN)
class CINMatmul(nn.Module):
    """One CIN layer as the paper draws it: the outer product z (B, H·F, E) of the H feature maps with the
    F fields, compressed by a 1x1 convolution over its H·F channels, here one matmul by W (H', H·F).

    hidden (B, H, E), emb (B, F, E), W (H', H, F) -> (B, H', E). Holds z: B·H·F·E numbers.
    """

    def __init__(self, num_fields: int):
        super().__init__()

    def forward(self, hidden: torch.Tensor, emb: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        batch, maps, dim = hidden.shape
        z = (hidden.unsqueeze(2) * emb.unsqueeze(1)).reshape(batch, maps * emb.shape[1], dim)   # (B, H·F, E)
        return weight.reshape(weight.shape[0], -1) @ z                                           # (B, H', E)
