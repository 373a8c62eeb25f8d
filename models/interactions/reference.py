"""The plain definitions every implementation is proven against: an explicit loop over field pairs.

Not registered (it is the yardstick, not a contender): tests and the fast paths' docstrings use it.
"""
import torch
from torch import nn

from ..registry import ATTENTION_POOLED, PAIRS


def pair_products_reference(emb: torch.Tensor) -> torch.Tensor:
    """emb (B, F, E) -> (B, P, E), pair p = (i, j) with i < j in row-major order."""
    num_fields = emb.shape[1]
    products = [emb[:, i] * emb[:, j] for i in range(num_fields) for j in range(i + 1, num_fields)]
    return torch.stack(products, dim=1)


def attention_pooling_reference(emb: torch.Tensor, attention) -> torch.Tensor:
    """emb (B, F, E) -> (B, E): AFM's attention pooling computed from the explicit pair products."""
    return attention(pair_products_reference(emb))


class ReferencePairs(nn.Module):
    """The explicit loop as an interaction module, so a whole model can be run on the definition."""

    output = PAIRS

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return pair_products_reference(emb)


class ReferenceAttentionPooling(nn.Module):
    """AFM's pooling on the explicit loop, in the fused contract (for testing fused implementations)."""

    output = ATTENTION_POOLED

    def forward(self, emb: torch.Tensor, attention) -> torch.Tensor:
        return attention_pooling_reference(emb, attention)

    def attention_weights(self, emb: torch.Tensor, attention) -> torch.Tensor:
        return attention.weights(pair_products_reference(emb))
