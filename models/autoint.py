import math

import torch
from torch import nn

from .layers import MLP, FeaturesEmbedding, FieldIds
from .registry import NONE, build_interaction, register_model

# What `ctrbench tune` searches: BARS's Frappe space for AutoInt (AutoInt_frappe_x1_tuner_config_05:
# attention_layers {6, 7}, num_heads {1, 2, 4, 8}, embedding_regularizer fixed at 0.05) plus the untuned run's
# (no regularizer). The defaults are its best trial (AutoInt_frappe_x1_005: 6 layers, 4 heads, attention
# size 128, residual, unscaled, no layer norm, no DNN; test AUC 0.9831 at embedding size 10). BARS's AutoInt+
# (AutoInt+_frappe_x1_006, test AUC 0.9848) is hidden=[400,400,400], dropout=0.1, num_layers=5, scale and
# layer_norm true.
SEARCH_SPACE = {"num_layers": [6, 7], "num_heads": [1, 2, 4, 8], "embedding_regularizer": [0.0, 0.05]}


class FieldSelfAttention(nn.Module):
    """One interacting layer (AutoInt eq. 5-8): multi-head self-attention over the F fields with a residual.

    (B, F, d_in) -> Q, K, V (B, heads, F, d / heads) -> softmax(Q K^T [/ sqrt(d / heads)]) V, heads
    concatenated (B, F, d) -> + W_res x (a projection where d_in != d) -> [LayerNorm] -> ReLU -> (B, F, d).
    """

    def __init__(self, in_dim: int, attn_dim: int, num_heads: int, dropout: float, scale: bool, layer_norm: bool):
        super().__init__()
        if attn_dim % num_heads:
            raise ValueError(f"attn_dim ({attn_dim}) must be a multiple of num_heads ({num_heads})")
        self.num_heads = num_heads
        self.query = nn.Linear(in_dim, attn_dim, bias=False)
        self.key = nn.Linear(in_dim, attn_dim, bias=False)
        self.value = nn.Linear(in_dim, attn_dim, bias=False)
        self.residual = nn.Linear(in_dim, attn_dim, bias=False) if in_dim != attn_dim else nn.Identity()
        self.scale = 1 / math.sqrt(attn_dim // num_heads) if scale else 1.0
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(attn_dim) if layer_norm else nn.Identity()

    def heads(self, z: torch.Tensor) -> torch.Tensor:
        """(B, F, d) -> (B, heads, F, d / heads)."""
        return z.unflatten(2, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        q, k, v = self.heads(self.query(emb)), self.heads(self.key(emb)), self.heads(self.value(emb))
        weights = self.dropout(torch.softmax(q @ k.transpose(2, 3) * self.scale, dim=3))    # (B, heads, F, F)
        attended = (weights @ v).transpose(1, 2).flatten(start_dim=2)                      # (B, F, d)
        return torch.relu(self.norm(attended + self.residual(emb)))


# `--preset bars`: the defaults are BARS's best Frappe_x1 trial; BARS embeds in 10 dimensions.
BARS = {"embed_dim": 10}


@register_model("autoint", accepts={NONE}, hparams={
    "embed_dim": "size E of each feature's latent vector",
    "attn_dim": "width d of each interacting layer's queries, keys and values (d / num_heads per head)",
    "num_layers": "number of interacting (self-attention) layers",
    "num_heads": "attention heads per interacting layer",
    "scale": "divide the attention scores by sqrt(d / num_heads)",
    "layer_norm": "LayerNorm on each interacting layer's output, before its ReLU",
    "hidden": "widths of a DNN's hidden layers over the F·E concatenated embeddings (AutoInt+); [] for none",
    "dropout": "dropout on the attention weights and after each hidden layer of the DNN",
}, search_space=SEARCH_SPACE, presets={"bars": BARS})
class AutoInt(nn.Module):
    """AutoInt (Song et al., CIKM 2019): fields interact through stacked multi-head self-attention.

    embeddings (B, F, E) -> interacting layers (B, F, d) -> flattened (B, F·d) -> Linear -> logit, plus
    (AutoInt+) a DNN over the flattened embeddings. No pairwise product of embeddings (interaction "none").
    x: LongTensor (B, F) of global feature ids -> logits (B,).
    """

    def __init__(self, field_dims, interaction="none", embed_dim: int = 16, attn_dim: int = 128,
                 num_layers: int = 6, num_heads: int = 4, scale: bool = False, layer_norm: bool = False,
                 hidden: tuple[int, ...] = (), dropout: float = 0.0):
        super().__init__()
        self.fields = FieldIds(field_dims)
        num_fields = self.fields.num_fields
        self.embedding = FeaturesEmbedding(self.fields.vocab_size, embed_dim)
        self.interaction = build_interaction(interaction, num_fields, self)
        self.self_attention = nn.Sequential(*(
            FieldSelfAttention(embed_dim if layer == 0 else attn_dim, attn_dim, num_heads, dropout, scale, layer_norm)
            for layer in range(num_layers)))
        self.output = nn.Linear(num_fields * (attn_dim if num_layers else embed_dim), 1)
        self.dnn = MLP(num_fields * embed_dim, tuple(hidden), dropout) if hidden else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.fields.check(x)
        emb = self.embedding(x)                                                   # (B, F, E)
        logit = self.output(self.self_attention(emb).flatten(start_dim=1)).squeeze(1)   # (B, F·d) -> (B,)
        if self.dnn is not None:
            logit = logit + self.dnn(emb.flatten(start_dim=1)).squeeze(1)
        return logit
