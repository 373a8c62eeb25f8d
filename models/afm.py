import torch
from torch import nn

from .layers import (
    FeaturesEmbedding,
    FeaturesLinear,
    FieldIds,
    PairAttention,
    attention_pooled_pairs,
    attention_weights,
    pair_fields,
)
from .registry import ATTENTION_POOLED, PAIRS, build_interaction, register_model

# What `ctrbench tune` searches: BARS's Frappe space (attention_dim {64, 128}, attention_dropout
# {0, 0.1, 0.2}, embedding_regularizer {1e-4, 1e-5, 1e-6}) plus the untuned values (A=16, no regularizer).
SEARCH_SPACE = {"attn_dim": [16, 64, 128], "dropout": [0.0, 0.1, 0.2],
                "embedding_regularizer": [0.0, 1e-6, 1e-5, 1e-4]}


# `--preset bars`: BARS's AFM_frappe_x1_011 (attention_dropout [0.1, 0.1]; ours drops the weights once).
BARS = {"embed_dim": 10, "attn_dim": 128, "dropout": 0.1}


@register_model("afm", accepts={PAIRS, ATTENTION_POOLED}, hparams={
    "embed_dim": "size E of each feature's latent vector",
    "attn_dim": "size A of the attention net's hidden layer",
    "dropout": "dropout on the attention weights",
}, search_space=SEARCH_SPACE, presets={"bars": BARS})
class AFM(nn.Module):
    """Attentional Factorization Machine (Xiao et al., IJCAI 2017), as the article builds it.

    pair products (B, P, E) -> attention net (Linear E->A, ReLU, Linear A->1, softmax over pairs,
    dropout) -> weighted sum (B, E) -> Linear E->1, plus the linear term.
    x: LongTensor (B, F) -> logits (B,).
    """

    def __init__(self, field_dims, interaction="triu_index", embed_dim: int = 16, attn_dim: int = 16,
                 dropout: float = 0.2):
        super().__init__()
        self.fields = FieldIds(field_dims)
        self.linear = FeaturesLinear(self.fields.vocab_size)
        self.embedding = FeaturesEmbedding(self.fields.vocab_size, embed_dim)
        self.interaction = build_interaction(interaction, self.fields.num_fields, self)
        self.attention = PairAttention(embed_dim, attn_dim, dropout)
        self.projection = nn.Linear(embed_dim, 1, bias=False)   # p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.fields.check(x)
        emb = self.embedding(x)                                                 # (B, F, E)
        pooled = attention_pooled_pairs(self.interaction, emb, self.attention)  # (B, E)
        return self.linear(x) + self.projection(pooled).squeeze(1)

    @torch.no_grad()
    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, F) -> attention weights (B, P), rows sum to one; pair p is `pair_fields()[p]`."""
        self.fields.check(x)
        return attention_weights(self.interaction, self.embedding(x), self.attention)

    def pair_fields(self) -> list[tuple[int, int]]:
        """(field_i, field_j) of each pair number, the article's order."""
        return pair_fields(self.fields.num_fields)
