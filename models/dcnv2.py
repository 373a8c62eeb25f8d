import torch
from torch import nn

from .layers import MLP, FeaturesEmbedding, FieldIds
from .registry import NONE, build_interaction, register_model

STRUCTURES = ("parallel", "stacked", "crossnet_only")

# What `ctrbench tune` searches: BARS's Frappe space for DCNv2 (DCNv2_frappe_x1_tuner_config_03:
# num_cross_layers {4, 5, 6}, net_dropout {0.3, 0.4}, embedding_regularizer {0.05, 0.1}) plus the untuned
# run's (no regularizer). The defaults are its best trial (DCNv2_frappe_x1_007: parallel, 4 full-rank cross
# layers, DNN [400, 400, 400] with batch norm, dropout 0.4; test AUC 0.9845 at embedding size 10).
SEARCH_SPACE = {"cross_layers": [4, 5, 6], "dropout": [0.3, 0.4], "embedding_regularizer": [0.0, 0.05, 0.1]}


class CrossLayer(nn.Module):
    """x_{l+1} = x_0 ⊙ (W x_l + b) + x_l, W (D, D) full rank (DCNv2 eq. 1). (B, D), (B, D) -> (B, D)."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.linear(x) + x


class LowRankMixtureLayer(nn.Module):
    """DCN-Mix (DCNv2 eq. 3-4): x_{l+1} = Σ_e G_e(x_l) E_e(x_l) + x_l, expert E_e(x) = x_0 ⊙ (U_e g(C_e g(V_e^T x))
    + b), g = tanh, rank r << D, gates G = softmax over experts of a linear score of x_l. (B, D), (B, D) -> (B, D)."""

    def __init__(self, dim: int, rank: int, experts: int):
        super().__init__()
        def per_expert(rows, cols):    # Xavier normal on each expert's matrix
            return nn.Parameter(torch.stack([nn.init.xavier_normal_(torch.empty(rows, cols)) for _ in range(experts)]))
        self.V = per_expert(dim, rank)         # (experts, D, r)
        self.C = per_expert(rank, rank)        # (experts, r, r)
        self.U = per_expert(rank, dim)         # (experts, r, D)
        self.bias = nn.Parameter(torch.zeros(dim))
        self.gate = nn.Linear(dim, experts, bias=False)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        low = torch.tanh(torch.einsum("bd,edr->ber", x, self.V))             # (B, experts, r)
        low = torch.tanh(torch.einsum("ber,ers->bes", low, self.C))          # (B, experts, r)
        experts = x0.unsqueeze(1) * (torch.einsum("ber,erd->bed", low, self.U) + self.bias)   # (B, experts, D)
        gates = torch.softmax(self.gate(x), dim=1).unsqueeze(2)              # (B, experts, 1)
        return (gates * experts).sum(dim=1) + x


# `--preset bars`: the defaults are BARS's best Frappe_x1 trial; BARS embeds in 10 dimensions.
BARS = {"embed_dim": 10}


@register_model("dcnv2", accepts={NONE}, hparams={
    "embed_dim": "size E of each feature's latent vector",
    "structure": "how the cross network and the DNN combine: parallel (side by side), stacked (DNN on the "
                 "cross network's output) or crossnet_only",
    "cross_layers": "number of cross layers",
    "hidden": "widths of the DNN's hidden layers",
    "dropout": "dropout after each hidden layer of the DNN",
    "low_rank": "rank r of each cross layer's mixture of low-rank experts (DCN-Mix); 0: one full-rank W",
    "experts": "experts per cross layer when low_rank > 0",
}, search_space=SEARCH_SPACE, presets={"bars": BARS})
class DCNv2(nn.Module):
    """DCN-V2 (Wang et al., WWW 2021): a cross network of explicit bounded-degree crosses and a DNN.

    x_0 = embeddings (B, F, E) flattened to (B, D), D = F·E -> cross layers x_{l+1} = x_0 ⊙ (W x_l + b) + x_l
    -> parallel: [x_L, DNN(x_0)] -> Linear; stacked: DNN(x_L) -> Linear; crossnet_only: x_L -> Linear.
    No pairwise product of embeddings (interaction "none"). x: LongTensor (B, F) -> logits (B,).
    """

    def __init__(self, field_dims, interaction="none", embed_dim: int = 16, structure: str = "parallel",
                 cross_layers: int = 4, hidden: tuple[int, ...] = (400, 400, 400), dropout: float = 0.4,
                 low_rank: int = 0, experts: int = 4):
        super().__init__()
        if structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
        if structure != "crossnet_only" and not hidden:
            raise ValueError(f"structure {structure!r} needs DNN layers (hidden), got {hidden!r}")
        self.fields = FieldIds(field_dims)
        self.embedding = FeaturesEmbedding(self.fields.vocab_size, embed_dim)
        self.interaction = build_interaction(interaction, self.fields.num_fields, self)
        dim = self.fields.num_fields * embed_dim
        self.structure = structure
        self.cross = nn.ModuleList(LowRankMixtureLayer(dim, low_rank, experts) if low_rank > 0 else CrossLayer(dim)
                                   for _ in range(cross_layers))
        self.dnn = None if structure == "crossnet_only" else MLP(dim, tuple(hidden), dropout, out_dim=None)
        width = dim if self.dnn is None else self.dnn.out_features + (dim if structure == "parallel" else 0)
        self.output = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.fields.check(x)
        x0 = self.embedding(x).flatten(start_dim=1)                  # (B, D)
        crossed = x0
        for layer in self.cross:
            crossed = layer(x0, crossed)                             # (B, D)
        if self.structure == "parallel":
            top = torch.cat([crossed, self.dnn(x0)], dim=1)          # (B, D + hidden[-1])
        elif self.structure == "stacked":
            top = self.dnn(crossed)                                  # (B, hidden[-1])
        else:
            top = crossed
        return self.output(top).squeeze(1)
