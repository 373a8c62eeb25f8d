import torch
from torch import nn

from .layers import MLP, FeaturesEmbedding, FieldIds, inner_products, pair_fields
from .registry import INNER, PAIRS, build_interaction, register_model

# What `ctrbench tune` searches: BARS's Frappe space for IPNN (PNN_frappe_x1_tuner_config_06: batch_norm
# {True, False}, net_dropout {0.2, 0.3, 0.4, 0.5}, embedding_regularizer {0.005, 0.01, 0.05, 0.1}) plus the
# untuned run's (no regularizer). The defaults are its best trial (PNN_frappe_x1_020: hidden [400, 400, 400],
# dropout 0.3, no batch norm, test AUC 0.9841 at embedding size 10).
SEARCH_SPACE = {"dropout": [0.2, 0.3, 0.4, 0.5], "batch_norm": [True, False],
                "embedding_regularizer": [0.0, 0.005, 0.01, 0.05, 0.1]}


# `--preset bars`: the defaults are BARS's best Frappe_x1 trial; BARS embeds in 10 dimensions.
BARS = {"embed_dim": 10}


@register_model("ipnn", accepts={PAIRS, INNER}, hparams={
    "embed_dim": "size E of each feature's latent vector",
    "hidden": "widths of the MLP's hidden layers over the embeddings and inner products",
    "dropout": "dropout after each hidden layer",
    "batch_norm": "BatchNorm after each hidden layer's Linear",
}, search_space=SEARCH_SPACE, presets={"bars": BARS})
class IPNN(nn.Module):
    """Inner-product Neural Network (Qu et al., ICDM 2016), PNN with inner products.

    product layer: the embeddings (B, F, E) flattened to l_z (B, F·E) beside the inner products
    l_p = <v_i, v_j> (B, P) (the pair products (B, P, E) summed over E, or an implementation that gives the
    inner products directly) -> MLP (ReLU) -> logit.
    x: LongTensor (B, F) of global feature ids -> logits (B,).
    """

    def __init__(self, field_dims, interaction="triu_index", embed_dim: int = 16,
                 hidden: tuple[int, ...] = (400, 400, 400), dropout: float = 0.3, batch_norm: bool = False):
        super().__init__()
        self.fields = FieldIds(field_dims)
        self.embedding = FeaturesEmbedding(self.fields.vocab_size, embed_dim)
        self.interaction = build_interaction(interaction, self.fields.num_fields, self)
        num_pairs = len(pair_fields(self.fields.num_fields))
        self.mlp = MLP(self.fields.num_fields * embed_dim + num_pairs, tuple(hidden), dropout,
                       batch_norm=batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.fields.check(x)
        emb = self.embedding(x)                                             # (B, F, E)
        inner = inner_products(self.interaction, emb)                       # (B, P): <v_i, v_j>
        product = torch.cat([emb.flatten(start_dim=1), inner], dim=1)       # (B, F·E + P)
        return self.mlp(product).squeeze(1)
