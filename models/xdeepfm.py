import math

import torch
from torch import nn

from .layers import MLP, FeaturesEmbedding, FeaturesLinear, FieldIds
from .registry import CIN, build_interaction, register_model

# What `ctrbench tune` searches: BARS's Frappe space for xDeepFM (xDeepFM_frappe_x1_tuner_config_02:
# embedding_regularizer {0.05, 0.1}; cin_layer_units {[32], [64], [16, 16], [32, 16], [16, 16, 16]}, left
# out: a tuner parameter takes single values) plus the untuned run's (no regularizer). The defaults are its
# best trial (xDeepFM_frappe_x1_005: CIN [64], DNN [400, 400, 400] with batch norm, dropout 0.2; test AUC
# 0.9845 at embedding size 10).
SEARCH_SPACE = {"embedding_regularizer": [0.0, 0.05, 0.1]}


class CINWeights(nn.Module):
    """A CIN layer's 1x1 convolution over the H·F outer-product maps: W (H', H, F) and bias (H',),
    initialised as torch's Conv1d would be (uniform ±1/sqrt(H·F))."""

    def __init__(self, maps_in: int, num_fields: int, maps_out: int):
        super().__init__()
        bound = 1 / math.sqrt(maps_in * num_fields)
        self.weight = nn.Parameter(torch.empty(maps_out, maps_in, num_fields).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(maps_out).uniform_(-bound, bound))


# `--preset bars`: the defaults are BARS's best Frappe_x1 trial; BARS embeds in 10 dimensions.
BARS = {"embed_dim": 10}


@register_model("xdeepfm", accepts={CIN}, hparams={
    "embed_dim": "size E of each feature's latent vector, shared by CIN and the DNN",
    "cin_layers": "feature maps H_k of each CIN layer",
    "hidden": "widths of the DNN's hidden layers over the F·E concatenated embeddings",
    "dropout": "dropout after each hidden layer of the DNN",
}, search_space=SEARCH_SPACE, presets={"bars": BARS})
class XDeepFM(nn.Module):
    """xDeepFM (Lian et al., KDD 2018): linear term + Compressed Interaction Network + DNN.

    CIN: x^0 = embeddings (B, F, E); layer k forms the outer products x^{k-1}_h ⊙ x^0_i (H_{k-1}·F maps)
    and compresses them to H_k maps (B, H_k, E) by the interaction; each layer is sum-pooled over E and
    the pooled (B, Σ H_k) -> Linear -> (B,). DNN: (B, F·E) -> MLP -> (B,).
    x: LongTensor (B, F) of global feature ids -> logits (B,).
    """

    def __init__(self, field_dims, interaction="cin_matmul", embed_dim: int = 16,
                 cin_layers: tuple[int, ...] = (64,), hidden: tuple[int, ...] = (400, 400, 400),
                 dropout: float = 0.2):
        super().__init__()
        if not cin_layers or any(int(h) < 1 for h in cin_layers):
            raise ValueError(f"cin_layers must be one or more positive map counts, got {cin_layers!r}")
        self.fields = FieldIds(field_dims)
        num_fields = self.fields.num_fields
        self.linear = FeaturesLinear(self.fields.vocab_size)
        self.embedding = FeaturesEmbedding(self.fields.vocab_size, embed_dim)
        self.interaction = build_interaction(interaction, num_fields, self)
        maps = [num_fields, *cin_layers]
        self.cin = nn.ModuleList(CINWeights(maps[k], num_fields, maps[k + 1]) for k in range(len(cin_layers)))
        self.cin_output = nn.Linear(sum(cin_layers), 1)
        self.mlp = MLP(num_fields * embed_dim, tuple(hidden), dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.fields.check(x)
        emb = self.embedding(x)                                                # (B, F, E)
        hidden, pooled = emb, []
        for layer in self.cin:
            hidden = self.interaction(hidden, emb, layer.weight) + layer.bias.view(1, -1, 1)   # (B, H_k, E)
            pooled.append(hidden.sum(dim=2))                                  # (B, H_k)
        cin = self.cin_output(torch.cat(pooled, dim=1)).squeeze(1)            # (B,)
        deep = self.mlp(emb.flatten(start_dim=1)).squeeze(1)                  # (B,)
        return self.linear(x) + cin + deep
