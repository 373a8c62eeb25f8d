import math

import torch
from torch import nn

from .layers import MLP, FeaturesEmbedding, FeaturesLinear, FieldIds, pair_fields
from .registry import BILINEAR, build_interaction, register_model

BILINEAR_TYPES = ("field_all", "field_each", "field_interaction")

# What `ctrbench tune` searches: BARS's Frappe space for FiBiNET (FiBiNET_frappe_x1_tuner_config_03:
# bilinear_type {field_all, field_each, field_interaction}, reduction_ratio {1, 2}, embedding_regularizer
# fixed at 0.05) plus the untuned run's (no regularizer). The defaults are its best trial (FiBiNET_frappe_x1_002:
# field_all, r = 2, hidden [400, 400, 400] with batch norm, dropout 0.3, test AUC 0.9832 at embedding size 10).
SEARCH_SPACE = {"bilinear_type": list(BILINEAR_TYPES), "reduction_ratio": [1, 2],
                "embedding_regularizer": [0.0, 0.05]}


class SENet(nn.Module):
    """Squeeze-Excitation over fields (FiBiNET eq. 1-3): z_f = mean_e v_{f,e} (B, F) -> ReLU(W2 ReLU(W1 z))
    (B, F) = a field weight per sample -> V ⊙ a. (B, F, E) -> (B, F, E)."""

    def __init__(self, num_fields: int, reduction_ratio: int):
        super().__init__()
        reduced = max(1, num_fields // reduction_ratio)
        self.excitation = nn.Sequential(nn.Linear(num_fields, reduced, bias=False), nn.ReLU(),
                                        nn.Linear(reduced, num_fields, bias=False), nn.ReLU())

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        weights = self.excitation(emb.mean(dim=2))                          # (B, F)
        return emb * weights.unsqueeze(2)


class BilinearWeights(nn.Module):
    """The W of the bilinear interaction (v_i W) ⊙ v_j: (K, E, E), K = 1 shared (field_all), one per field
    that is ever a pair's left field (field_each: F - 1), or one per pair (field_interaction: P)."""

    def __init__(self, num_fields: int, embed_dim: int, bilinear_type: str):
        super().__init__()
        count = {"field_all": 1, "field_each": num_fields - 1,
                 "field_interaction": len(pair_fields(num_fields))}[bilinear_type]
        self.bilinear_type = bilinear_type
        self.weight = nn.Parameter(torch.randn(count, embed_dim, embed_dim) / math.sqrt(embed_dim))  # Xavier normal


# `--preset bars`: the defaults are BARS's best Frappe_x1 trial; BARS embeds in 10 dimensions.
BARS = {"embed_dim": 10}


@register_model("fibinet", accepts={BILINEAR}, hparams={
    "embed_dim": "size E of each feature's latent vector",
    "bilinear_type": "which W the bilinear interaction (v_i W) ⊙ v_j uses: field_all (one shared), "
                     "field_each (one per field i), field_interaction (one per pair)",
    "reduction_ratio": "SENET's squeeze: its hidden layer has F / reduction_ratio units",
    "hidden": "widths of the MLP's hidden layers over the two sets of bilinear products",
    "dropout": "dropout after each hidden layer",
}, search_space=SEARCH_SPACE, presets={"bars": BARS})
class FiBiNET(nn.Module):
    """FiBiNET (Huang et al., RecSys 2019): SENET field importance and bilinear feature interaction.

    embeddings V (B, F, E) and SENET's reweighted V ⊙ a (B, F, E) -> a bilinear interaction on each
    (v_i W) ⊙ v_j, p and q (B, P, E), each with its own W -> concatenated (B, 2·P·E) -> MLP -> logit, plus
    the linear term. x: LongTensor (B, F) of global feature ids -> logits (B,).
    """

    def __init__(self, field_dims, interaction="bilinear_project", embed_dim: int = 16,
                 bilinear_type: str = "field_all", reduction_ratio: int = 2,
                 hidden: tuple[int, ...] = (400, 400, 400), dropout: float = 0.3):
        super().__init__()
        if bilinear_type not in BILINEAR_TYPES:
            raise ValueError(f"bilinear_type must be one of {BILINEAR_TYPES}, got {bilinear_type!r}")
        if int(reduction_ratio) < 1:
            raise ValueError(f"reduction_ratio must be >= 1, got {reduction_ratio}")
        self.fields = FieldIds(field_dims)
        num_fields = self.fields.num_fields
        self.linear = FeaturesLinear(self.fields.vocab_size)
        self.embedding = FeaturesEmbedding(self.fields.vocab_size, embed_dim)
        self.interaction = build_interaction(interaction, num_fields, self)
        self.senet = SENet(num_fields, int(reduction_ratio))
        self.bilinear = BilinearWeights(num_fields, embed_dim, bilinear_type)           # on V
        self.senet_bilinear = BilinearWeights(num_fields, embed_dim, bilinear_type)     # on V ⊙ a
        self.mlp = MLP(2 * len(pair_fields(num_fields)) * embed_dim, tuple(hidden), dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.fields.check(x)
        emb = self.embedding(x)                                                       # (B, F, E)
        p = self.interaction(emb, self.bilinear.weight, self.bilinear.bilinear_type)  # (B, P, E)
        q = self.interaction(self.senet(emb), self.senet_bilinear.weight,
                             self.senet_bilinear.bilinear_type)                       # (B, P, E)
        combined = torch.cat([p.flatten(start_dim=1), q.flatten(start_dim=1)], dim=1)  # (B, 2·P·E)
        return self.linear(x) + self.mlp(combined).squeeze(1)
