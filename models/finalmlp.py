import torch
from torch import nn

from .layers import MLP, FeaturesEmbedding, FieldIds
from .registry import NONE, build_interaction, register_model

# What `ctrbench tune` searches: BARS's Frappe space for FinalMLP (FinalMLP_frappe_x1_tuner_config_16:
# mlp1_dropout {0.4, 0.5}, mlp2_dropout {0.3, 0.4}, use_fs {True, False}, num_heads {2, 5}, fs_hidden_units
# {[400], [800]} left out as a list, embedding_regularizer fixed at 0.05) plus the untuned run's (no
# regularizer). The defaults are its best trial (FinalMLP_frappe_x1_004: streams [400] and [100] with batch
# norm, dropout 0.4 each, feature selection with gates [400], 5 fusion heads; test AUC 0.9861 at embedding
# size 10). BARS gave the gates the user and item fields as context (on frappe: fs1_context=[0],
# fs2_context=[1]); here the default is none (a learned vector), which suits any data set.
SEARCH_SPACE = {"dropout1": [0.4, 0.5], "dropout2": [0.3, 0.4], "feature_selection": [True, False],
                "fusion_heads": [2, 5], "embedding_regularizer": [0.0, 0.05]}


def check_fields(fields, num_fields: int, name: str) -> tuple[int, ...]:
    fields = (fields,) if isinstance(fields, int) else tuple(fields)
    if any(isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < num_fields for f in fields):
        raise ValueError(f"{name} must be field indices in [0, {num_fields}), got {fields!r}")
    return fields


class FeatureGate(nn.Module):
    """FinalMLP's feature selection for one stream (eq. 2): g = 2 σ(MLP(context)) (B, F·E), applied as
    flat embeddings ⊙ g. The context is the concatenated embeddings of the `context` fields (B, C·E), taken
    from the model's one table (FuxiCTR gives them a table of their own), or a learned vector (1, E) where
    there are none, so one gate (1, F·E) for every sample. That vector starts small but not at 0 (FuxiCTR's),
    so the gate's first layer gets a gradient from the first step."""

    def __init__(self, num_fields: int, embed_dim: int, hidden: tuple[int, ...], context: tuple[int, ...]):
        super().__init__()
        self.register_buffer("context", torch.tensor(context, dtype=torch.long), persistent=False)
        self.learned_context = None if context else nn.Parameter(torch.randn(1, embed_dim) * 0.01)
        self.mlp = MLP(embed_dim * max(1, len(context)), hidden, dropout=0.0, out_dim=num_fields * embed_dim,
                       batch_norm=False)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """emb (B, F, E) -> gated flat embeddings (B, F·E)."""
        if self.learned_context is None:
            context = emb.index_select(1, self.context).flatten(start_dim=1)          # (B, C·E)
        else:
            context = self.learned_context                                            # (1, E), broadcast
        return emb.flatten(start_dim=1) * 2 * torch.sigmoid(self.mlp(context))


class BilinearFusion(nn.Module):
    """FinalMLP's multi-head bilinear fusion (eq. 5-6): the two streams' outputs o1 (B, D1), o2 (B, D2) are
    cut into k heads and y = b + w1^T o1 + w2^T o2 + Σ_h o1_h^T W_h o2_h, W_h (D1/k, D2/k) -> (B,)."""

    def __init__(self, dim1: int, dim2: int, heads: int):
        super().__init__()
        if dim1 % heads or dim2 % heads:
            raise ValueError(f"both streams' output widths ({dim1}, {dim2}) must be multiples of "
                             f"fusion_heads ({heads})")
        self.heads = heads
        self.linear1 = nn.Linear(dim1, 1)
        self.linear2 = nn.Linear(dim2, 1, bias=False)
        self.weight = nn.Parameter(nn.init.xavier_normal_(torch.empty(heads, dim1 // heads, dim2 // heads)))

    def forward(self, o1: torch.Tensor, o2: torch.Tensor) -> torch.Tensor:
        h1, h2 = o1.unflatten(1, (self.heads, -1)), o2.unflatten(1, (self.heads, -1))   # (B, k, D1/k), (B, k, D2/k)
        bilinear = torch.einsum("bhi,hij,bhj->b", h1, self.weight, h2)
        return (self.linear1(o1) + self.linear2(o2)).squeeze(1) + bilinear


# `--preset bars`: the defaults are BARS's best Frappe_x1 trial; BARS embeds in 10 dimensions.
BARS = {"embed_dim": 10}


@register_model("finalmlp", accepts={NONE}, hparams={
    "embed_dim": "size E of each feature's latent vector",
    "hidden1": "widths of the first MLP stream's hidden layers",
    "hidden2": "widths of the second MLP stream's hidden layers",
    "dropout1": "dropout after each hidden layer of the first stream",
    "dropout2": "dropout after each hidden layer of the second stream",
    "feature_selection": "gate each stream's input by 2 σ(MLP(context)) (stream-specific feature selection)",
    "gate_hidden": "widths of each feature-selection gate's hidden layers",
    "fs1_context": "field indices whose embeddings are the first gate's context; [] = a learned vector",
    "fs2_context": "field indices whose embeddings are the second gate's context; [] = a learned vector",
    "fusion_heads": "heads k of the bilinear fusion of the two streams",
}, search_space=SEARCH_SPACE, presets={"bars": BARS})
class FinalMLP(nn.Module):
    """FinalMLP (Mao et al., AAAI 2023): two MLP streams with stream-specific feature gating, fused bilinearly.

    embeddings (B, F, E) flattened (B, F·E) -> gated per stream (feature selection) -> MLP1 (B, D1) and
    MLP2 (B, D2), their last hidden layers -> multi-head bilinear fusion -> logit. No pairwise product of
    embeddings (interaction "none"). x: LongTensor (B, F) of global feature ids -> logits (B,).
    """

    def __init__(self, field_dims, interaction="none", embed_dim: int = 16, hidden1: tuple[int, ...] = (400,),
                 hidden2: tuple[int, ...] = (100,), dropout1: float = 0.4, dropout2: float = 0.4,
                 feature_selection: bool = True, gate_hidden: tuple[int, ...] = (400,), fs1_context=(),
                 fs2_context=(), fusion_heads: int = 5):
        super().__init__()
        if not hidden1 or not hidden2:
            raise ValueError(f"both streams need hidden layers, got hidden1={hidden1!r}, hidden2={hidden2!r}")
        self.fields = FieldIds(field_dims)
        num_fields = self.fields.num_fields
        self.embedding = FeaturesEmbedding(self.fields.vocab_size, embed_dim)
        self.interaction = build_interaction(interaction, num_fields, self)
        contexts = (check_fields(fs1_context, num_fields, "fs1_context"),
                    check_fields(fs2_context, num_fields, "fs2_context"))
        self.gates = nn.ModuleList(FeatureGate(num_fields, embed_dim, tuple(gate_hidden), context)
                                   for context in contexts) if feature_selection else None
        self.mlp1 = MLP(num_fields * embed_dim, tuple(hidden1), dropout1, out_dim=None)
        self.mlp2 = MLP(num_fields * embed_dim, tuple(hidden2), dropout2, out_dim=None)
        self.fusion = BilinearFusion(self.mlp1.out_features, self.mlp2.out_features, fusion_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.fields.check(x)
        emb = self.embedding(x)                                                   # (B, F, E)
        if self.gates is None:
            in1 = in2 = emb.flatten(start_dim=1)                                  # (B, F·E)
        else:
            in1, in2 = (gate(emb) for gate in self.gates)                         # (B, F·E) each
        return self.fusion(self.mlp1(in1), self.mlp2(in2))                        # (B,)
