import torch
from torch import nn

from .layers import MLP, FeaturesEmbedding, FeaturesLinear, FieldIds, pooled_pairs
from .registry import PAIRS, POOLED, build_interaction, register_model

# What `ctrbench tune` searches: BARS's Frappe space (embedding_regularizer 1e-5 … 0.05, net_dropout
# 0.1 … 0.4) plus the untuned run's (no regularizer).
SEARCH_SPACE = {"embedding_regularizer": [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 0.05], "dropout": [0.1, 0.2, 0.3, 0.4]}


# `--preset bars`: BARS's NFM_frappe_x1_012 (its MLP without batch norm; ours keeps it).
BARS = {"embed_dim": 10, "hidden": (400, 400, 400), "dropout": 0.4}


@register_model("nfm", accepts={PAIRS, POOLED}, hparams={
    "embed_dim": "size E of each feature's latent vector",
    "hidden": "widths of the MLP's hidden layers above the bi-interaction pooling",
    "dropout": "dropout on the pooled vector and after each hidden layer",
}, search_space=SEARCH_SPACE, presets={"bars": BARS})
class NFM(nn.Module):
    """Neural Factorization Machine (He & Chua, SIGIR 2017).

    Bi-interaction pooling Σ_{i<j} v_i ⊙ v_j -> BatchNorm, dropout -> MLP -> logit, plus the linear term.
    x: LongTensor (B, F) -> logits (B,).
    """

    def __init__(self, field_dims, interaction="sum_square", embed_dim: int = 16,
                 hidden: tuple[int, ...] = (64,), dropout: float = 0.2):
        super().__init__()
        self.fields = FieldIds(field_dims)
        self.linear = FeaturesLinear(self.fields.vocab_size)
        self.embedding = FeaturesEmbedding(self.fields.vocab_size, embed_dim)
        self.interaction = build_interaction(interaction, self.fields.num_fields, self)
        self.pooled_norm = nn.Sequential(nn.BatchNorm1d(embed_dim), nn.Dropout(dropout))
        self.mlp = MLP(embed_dim, tuple(hidden), dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.fields.check(x)
        emb = self.embedding(x)                                      # (B, F, E)
        pooled = self.pooled_norm(pooled_pairs(self.interaction, emb))  # (B, E)
        return self.linear(x) + self.mlp(pooled).squeeze(1)
