"""The plain definitions every implementation is proven against: an explicit loop over field pairs.

Not registered (it is the yardstick, not a contender): tests and the fast paths' docstrings use it.
"""
import torch
from torch import nn

from ctrbench.pairs import pair_fields

from ..registry import ATTENTION_POOLED, BILINEAR, CIN, NONE, PAIRS


def pair_products_reference(emb: torch.Tensor) -> torch.Tensor:
    """emb (B, F, E) -> (B, P, E), pair p = (i, j) with i < j in row-major order."""
    num_fields = emb.shape[1]
    products = [emb[:, i] * emb[:, j] for i in range(num_fields) for j in range(i + 1, num_fields)]
    return torch.stack(products, dim=1)


def attention_pooling_reference(emb: torch.Tensor, attention) -> torch.Tensor:
    """emb (B, F, E) -> (B, E): AFM's attention pooling computed from the explicit pair products."""
    return attention(pair_products_reference(emb))


def bilinear_pairs_reference(emb: torch.Tensor, weight: torch.Tensor, bilinear_type: str) -> torch.Tensor:
    """FiBiNET's bilinear interaction: emb (B, F, E), W (K, E, E) -> (B, P, E), pair p = (i, j) giving
    (v_i W_k) ⊙ v_j with k = 0 (field_all: K = 1), i (field_each: K = F - 1) or p (field_interaction: K = P)."""
    products = []
    for p, (i, j) in enumerate(pair_fields(emb.shape[1])):
        k = {"field_all": 0, "field_each": i, "field_interaction": p}[bilinear_type]
        products.append((emb[:, i] @ weight[k]) * emb[:, j])
    return torch.stack(products, dim=1)


def cin_layer_reference(hidden: torch.Tensor, emb: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """One CIN layer (xDeepFM, eq. 6): hidden x^{k-1} (B, H, E), emb x^0 (B, F, E), W (H', H, F) -> (B, H', E),
    x^k_m = Σ_h Σ_i W_{m,h,i} (x^{k-1}_h ⊙ x^0_i), one outer-product term (h, i) at a time."""
    out = hidden.new_zeros(hidden.shape[0], weight.shape[0], hidden.shape[2])
    for h in range(hidden.shape[1]):
        for i in range(emb.shape[1]):
            z = hidden[:, h] * emb[:, i]                                  # (B, E)
            out = out + weight[:, h, i].view(1, -1, 1) * z.unsqueeze(1)   # (B, H', E)
    return out


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


class ReferenceBilinearPairs(nn.Module):
    """FiBiNET's bilinear interaction on the explicit loop, in the `bilinear_pairs` contract."""

    output = BILINEAR

    def forward(self, emb: torch.Tensor, weight: torch.Tensor, bilinear_type: str) -> torch.Tensor:
        return bilinear_pairs_reference(emb, weight, bilinear_type)


class ReferenceCINLayer(nn.Module):
    """A CIN layer on the explicit loop, in the `cin_layer` contract."""

    output = CIN

    def forward(self, hidden: torch.Tensor, emb: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return cin_layer_reference(hidden, emb, weight)


class ReferenceNone(nn.Module):
    """The pass-through: a model that forms no pairwise product has nothing to check against."""

    output = NONE

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return emb


def reference_interaction(output: str) -> nn.Module:
    """The explicit loop for an output kind, as a module a whole model can run on (tests): per-pair
    products serve `pairs`, `pooled` and AFM's pooling alike (the model's helpers sum or pool them)."""
    return {BILINEAR: ReferenceBilinearPairs, CIN: ReferenceCINLayer, NONE: ReferenceNone}.get(output, ReferencePairs)()
