"""Blocks shared by the models: embeddings, the linear term, the MLP, and AFM's pair attention.

Shapes: B batch, F fields, E embedding size, P = F(F-1)/2 field pairs, A attention size.
"""
from __future__ import annotations

import torch
from torch import nn

from ctrbench.pairs import pair_fields  # noqa: F401  (the article's pair numbering, re-exported for the models)

from .registry import ATTENTION_POOLED, INNER, PAIRS, POOLED


class FieldIds(nn.Module):
    """Holds the field layout and checks that a batch of global feature ids fits it.

    Field f owns the global ids [offsets[f], offsets[f] + field_dims[f]).
    """

    def __init__(self, field_dims):
        super().__init__()
        field_dims = [int(d) for d in field_dims]
        if len(field_dims) < 2:
            raise ValueError(f"need at least 2 fields for pairwise interactions, got {len(field_dims)}")
        if any(d < 1 for d in field_dims):
            raise ValueError(f"every field needs a vocabulary size >= 1, got {field_dims}")
        self.field_dims = tuple(field_dims)
        self.num_fields = len(field_dims)
        self.vocab_size = sum(field_dims)
        offsets = torch.tensor([0, *field_dims[:-1]]).cumsum(0)
        self.register_buffer("lower", offsets, persistent=False)
        self.register_buffer("upper", offsets + torch.tensor(field_dims), persistent=False)

    def check(self, x: torch.Tensor) -> None:
        """x: LongTensor (B, F). Raises TypeError/ValueError with what is wrong.

        Type and shape are checked always (free, and static under torch.compile). The id values are
        checked only in eager mode on the CPU: reading the result of a check on a GPU waits for the
        device in every forward, and under torch.compile it breaks the graph. There the data is
        checked once where it enters (`check_values`, which the protocol calls on every split).
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"feature ids must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"feature ids must be an integer tensor (torch.long), got {x.dtype}")
        if x.dim() != 2 or x.shape[1] != self.num_fields:
            raise ValueError(f"feature ids must have shape (batch, {self.num_fields}), got {tuple(x.shape)}")
        if x.device.type == "cpu" and not torch.compiler.is_compiling():
            self.check_values(x)

    def check_values(self, x: torch.Tensor) -> None:
        """ValueError naming the first id of x (B, F), in row order, outside its field's range.

        One reduction per field and one read of its result, so it suits a whole split on any device.
        """
        if x.shape[0] == 0:
            return
        lower, upper = self.lower.to(x.device), self.upper.to(x.device)
        if bool(((x.amin(dim=0) < lower) | (x.amax(dim=0) >= upper)).any()):
            outside = (x < lower) | (x >= upper)
            row, col = (int(v) for v in outside.nonzero()[0])
            raise ValueError(
                f"feature id {int(x[row, col])} at row {row}, field {col} is outside that field's "
                f"global id range [{int(lower[col])}, {int(upper[col])}) "
                f"(vocabulary size {self.vocab_size})")


class FeaturesEmbedding(nn.Module):
    """x: LongTensor (B, F) of global ids -> (B, F, E)."""

    def __init__(self, vocab_size: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        nn.init.xavier_uniform_(self.embedding.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x)


class FeaturesLinear(nn.Module):
    """First-order term w0 + sum_f w[x_f]. x: (B, F) -> (B,)."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.weight = nn.Embedding(vocab_size, 1)
        nn.init.zeros_(self.weight.weight)
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight(x).sum(dim=(1, 2)) + self.bias


class MLP(nn.Module):
    """(B, in) -> (B, out): Linear -> BatchNorm -> ReLU -> Dropout per hidden layer, then Linear.

    With out_dim=None there is no output Linear: (B, in) -> (B, hidden[-1]), a tower whose last hidden
    layer is what the model reads (FinalMLP's two streams). `out_features` is the output width either way.
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...], dropout: float, out_dim: int | None = 1,
                 batch_norm: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers.append(nn.Linear(in_dim, width))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers += [nn.ReLU(), nn.Dropout(dropout)]
            in_dim = width
        if out_dim is not None:
            layers.append(nn.Linear(in_dim, out_dim))
        self.out_features = in_dim if out_dim is None else out_dim
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


class PairAttention(nn.Module):
    """AFM's attention over pair products (Xiao et al. 2017, eq. 4).

    a'_p = h^T ReLU(W (v_i ⊙ v_j) + b),  a = softmax_p(a'),  then dropout on a.
    No bias on h: it would cancel in the softmax.
    """

    def __init__(self, embed_dim: int, attn_dim: int, dropout: float):
        super().__init__()
        self.hidden = nn.Linear(embed_dim, attn_dim)        # W, b
        self.score = nn.Linear(attn_dim, 1, bias=False)     # h
        self.dropout = nn.Dropout(dropout)

    def weights(self, pairs: torch.Tensor) -> torch.Tensor:
        """pairs (B, P, E) -> attention weights (B, P), each row a distribution (no dropout)."""
        scores = self.score(torch.relu(self.hidden(pairs))).squeeze(-1)  # (B, P)
        return torch.softmax(scores, dim=1)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """pairs (B, P, E) -> attention-pooled (B, E)."""
        weights = self.dropout(self.weights(pairs))                      # (B, P)
        return torch.einsum("bp,bpe->be", weights, pairs)


def pooled_pairs(interaction: nn.Module, emb: torch.Tensor) -> torch.Tensor:
    """Sum of all pair products, (B, F, E) -> (B, E), whatever the interaction outputs."""
    if interaction.output == POOLED:
        return interaction(emb)
    if interaction.output == PAIRS:
        return interaction(emb).sum(dim=1)
    raise ValueError(f"interaction output {interaction.output!r} cannot be summed into (B, E)")


def inner_products(interaction: nn.Module, emb: torch.Tensor) -> torch.Tensor:
    """<v_i, v_j> of every field pair, (B, F, E) -> (B, P), whatever the interaction outputs."""
    if interaction.output == INNER:
        return interaction(emb)
    if interaction.output == PAIRS:
        return interaction(emb).sum(dim=2)
    raise ValueError(f"interaction output {interaction.output!r} cannot give per-pair inner products")


def attention_pooled_pairs(interaction: nn.Module, emb: torch.Tensor, attention: PairAttention) -> torch.Tensor:
    """AFM's pooling (B, F, E) -> (B, E), by per-pair products or by a fused implementation."""
    if interaction.output == ATTENTION_POOLED:
        return interaction(emb, attention)
    if interaction.output == PAIRS:
        return attention(interaction(emb))
    raise ValueError(f"interaction output {interaction.output!r} cannot feed attention pooling")


def attention_weights(interaction: nn.Module, emb: torch.Tensor, attention: PairAttention) -> torch.Tensor:
    """AFM's attention weights (B, P) for embeddings (B, F, E), without dropout."""
    if interaction.output == ATTENTION_POOLED:
        return interaction.attention_weights(emb, attention)
    return attention.weights(interaction(emb))
