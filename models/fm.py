import torch
from torch import nn

from .layers import FeaturesEmbedding, FeaturesLinear, FieldIds, pooled_pairs
from .registry import PAIRS, POOLED, build_interaction, register_model

# What `ctrbench tune` searches. BARS's Frappe space (FuxiCTR's `regularizer`, on FM's embeddings) is
# {5e-5, 5e-6}; we add 0 (the untuned run) and the decades around it. And Adam's learning rate: at BARS's
# 1e-3 (the untuned run's) FM was still improving at epoch 100 of 100 on frappe, under every regularizer.
SEARCH_SPACE = {"embedding_regularizer": [0.0, 1e-6, 5e-6, 1e-5, 5e-5, 1e-4], "lr": [1e-3, 3e-3, 1e-2]}


# `--preset bars`: BARS's FM_frappe_x1 embeds in 10 dimensions.
BARS = {"embed_dim": 10}


@register_model("fm", accepts={PAIRS, POOLED}, hparams={"embed_dim": "size E of each feature's latent vector"},
                search_space=SEARCH_SPACE, presets={"bars": BARS})
class FM(nn.Module):
    """Factorization Machine (Rendle, ICDM 2010): w0 + Σ w_i + Σ_{i<j} <v_i, v_j>.

    x: LongTensor (B, F) of global feature ids -> logits (B,).
    """

    def __init__(self, field_dims, interaction="sum_square", embed_dim: int = 16):
        super().__init__()
        self.fields = FieldIds(field_dims)
        self.linear = FeaturesLinear(self.fields.vocab_size)
        self.embedding = FeaturesEmbedding(self.fields.vocab_size, embed_dim)
        self.interaction = build_interaction(interaction, self.fields.num_fields, self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.fields.check(x)
        emb = self.embedding(x)                                # (B, F, E)
        pairwise = pooled_pairs(self.interaction, emb).sum(1)  # (B,)
        return self.linear(x) + pairwise
