import torch
from torch import nn

from .layers import MLP, FeaturesEmbedding, FeaturesLinear, FieldIds, pooled_pairs
from .registry import PAIRS, POOLED, build_interaction, register_model

# What `ctrbench tune` searches: BARS's Frappe space (embedding_regularizer {0.05, 0.1, 0.2, 0.5},
# net_dropout {0, 0.1, 0.2}) plus the untuned run's (no regularizer) and a smaller step (0.01).
SEARCH_SPACE = {"embedding_regularizer": [0.0, 0.01, 0.05, 0.1, 0.2, 0.5], "dropout": [0.0, 0.1, 0.2]}


# `--preset bars`: BARS's DeepFM_frappe_x1_001, batch norm on as ours.
BARS = {"embed_dim": 10, "hidden": (400, 400, 400), "dropout": 0.2}


@register_model("deepfm", accepts={PAIRS, POOLED}, hparams={
    "embed_dim": "size E of each feature's latent vector, shared by the FM and the deep part",
    "hidden": "widths of the deep part's hidden layers over the F·E concatenated embeddings",
    "dropout": "dropout after each hidden layer of the deep part",
}, search_space=SEARCH_SPACE, presets={"bars": BARS})
class DeepFM(nn.Module):
    """DeepFM (Guo et al., IJCAI 2017): y = y_FM + y_DNN on one shared embedding table.

    FM part: w0 + Σ w_i + Σ_{i<j} <v_i, v_j>, the pair sum taken from the interaction (B, E) -> (B,).
    Deep part: embeddings (B, F, E) flattened to (B, F·E) -> MLP (Linear, BatchNorm, ReLU, Dropout per
    hidden layer) -> (B,). x: LongTensor (B, F) of global feature ids -> logits (B,).
    """

    def __init__(self, field_dims, interaction="sum_square", embed_dim: int = 16,
                 hidden: tuple[int, ...] = (64, 64), dropout: float = 0.2):
        super().__init__()
        self.fields = FieldIds(field_dims)
        self.linear = FeaturesLinear(self.fields.vocab_size)
        self.embedding = FeaturesEmbedding(self.fields.vocab_size, embed_dim)
        self.interaction = build_interaction(interaction, self.fields.num_fields, self)
        self.mlp = MLP(self.fields.num_fields * embed_dim, tuple(hidden), dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.fields.check(x)
        emb = self.embedding(x)                                              # (B, F, E)
        fm = self.linear(x) + pooled_pairs(self.interaction, emb).sum(1)    # (B,)
        deep = self.mlp(emb.flatten(start_dim=1)).squeeze(1)                 # (B,)
        return fm + deep
