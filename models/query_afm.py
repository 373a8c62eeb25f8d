from __future__ import annotations

import torch
from torch import nn

from .afm import SEARCH_SPACE as AFM_SEARCH_SPACE
from .layers import FeaturesEmbedding, FeaturesLinear, FieldIds, pair_fields
from .registry import PAIRS, build_interaction, register_model

# What `ctrbench tune` searches: AFM's space (BARS's Frappe AFM space plus the untuned point), since the
# query only adds U to AFM's attention net; BARS has no query-attention model to take a space from.
# query_fields is the question the model asks, not a knob to tune, so it stays out.
SEARCH_SPACE = dict(AFM_SEARCH_SPACE)

def check_query_fields(query_fields, num_fields: int) -> tuple[int, ...]:
    """A non-empty tuple of distinct field indices in [0, num_fields), or a ValueError saying what is wrong."""
    if isinstance(query_fields, int) and not isinstance(query_fields, bool):
        query_fields = (query_fields,)
    if isinstance(query_fields, (str, bytes)) or not hasattr(query_fields, "__iter__"):
        raise ValueError(f"query_fields must be a list of field indices, e.g. [7, 8, 9] "
                         f"(on the command line: --set query_fields=[7,8,9]), got {query_fields!r}")
    fields = tuple(query_fields)
    if not fields:
        raise ValueError("query_fields must name at least one field")
    for f in fields:
        if isinstance(f, bool) or not isinstance(f, int):
            raise ValueError(f"query_fields must be integer field indices, got {f!r} in {fields}")
        if not 0 <= f < num_fields:
            raise ValueError(f"query field {f} is outside the model's fields [0, {num_fields}) in {fields}")
    if len(set(fields)) != len(fields):
        raise ValueError(f"query_fields has a repeated field: {fields}")
    return fields


class QueryPairAttention(nn.Module):
    """AFM's attention with a query: a'_p = h^T ReLU(W (v_i ⊙ v_j) + U q + b), a = softmax_p(a').

    pairs (B, P, E) and query (B, E) -> weights (B, P). With U = 0 this is AFM's `PairAttention`.
    """

    def __init__(self, embed_dim: int, attn_dim: int, dropout: float):
        super().__init__()
        self.hidden = nn.Linear(embed_dim, attn_dim)               # W, b
        self.query = nn.Linear(embed_dim, attn_dim, bias=False)    # U
        self.score = nn.Linear(attn_dim, 1, bias=False)            # h
        self.dropout = nn.Dropout(dropout)

    def weights(self, pairs: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """(B, P, E), (B, E) -> attention weights (B, P), each row a distribution (no dropout)."""
        hidden = torch.relu(self.hidden(pairs) + self.query(query).unsqueeze(1))   # (B, P, A)
        return torch.softmax(self.score(hidden).squeeze(-1), dim=1)

    def forward(self, pairs: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """(B, P, E), (B, E) -> attention-pooled (B, E)."""
        weights = self.dropout(self.weights(pairs, query))                          # (B, P)
        return torch.einsum("bp,bpe->be", weights, pairs)


# `--preset bars`: AFM's (BARS has no qAFM).
BARS = {"embed_dim": 10, "attn_dim": 128, "dropout": 0.1}


@register_model("qafm", accepts={PAIRS}, hparams={
    "embed_dim": "size E of each feature's latent vector",
    "attn_dim": "size A of the attention net's hidden layer",
    "dropout": "dropout on the attention weights",
    "query_fields": "field indices whose mean embedding is the attention's query; null = the "
                    "data set's item fields ([7, 8, 9] on purchase, [1] on frappe), else the last field",
}, search_space=SEARCH_SPACE, presets={"bars": BARS})
class QueryAFM(nn.Module):
    """AFM whose attention also sees a query from the sample itself (the article's proposal).

    AFM (Xiao et al., IJCAI 2017) scores each pair from its product alone, so its weights can only encode
    a global importance per pair. Here the hidden layer also gets q(x) = mean_{f ∈ query_fields} v_f
    (e.g. the target item's embeddings), so the weights can differ per sample:
    pair products (B, P, E), query (B, E) -> ReLU(W p + U q + b) -> h -> softmax over pairs, dropout
    -> weighted sum (B, E) -> Linear E->1, plus the linear term.
    x: LongTensor (B, F) of global feature ids -> logits (B,).
    """

    def __init__(self, field_dims, interaction="triu_index", embed_dim: int = 16, attn_dim: int = 16,
                 dropout: float = 0.2, query_fields=None):
        super().__init__()
        self.fields = FieldIds(field_dims)
        if query_fields is None:      # the protocol passes the data set's item fields where it has them
            query_fields = (self.fields.num_fields - 1,)
        self.query_fields = check_query_fields(query_fields, self.fields.num_fields)
        self.register_buffer("query_index", torch.tensor(self.query_fields), persistent=False)
        self.linear = FeaturesLinear(self.fields.vocab_size)
        self.embedding = FeaturesEmbedding(self.fields.vocab_size, embed_dim)
        self.interaction = build_interaction(interaction, self.fields.num_fields, self)
        self.attention = QueryPairAttention(embed_dim, attn_dim, dropout)
        self.projection = nn.Linear(embed_dim, 1, bias=False)   # p

    def _pairs_and_query(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.embedding(x)                                    # (B, F, E)
        query = emb.index_select(1, self.query_index).mean(dim=1)  # (B, E)
        return self.interaction(emb), query                        # (B, P, E), (B, E)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.fields.check(x)
        pairs, query = self._pairs_and_query(x)
        pooled = self.attention(pairs, query)                      # (B, E)
        return self.linear(x) + self.projection(pooled).squeeze(1)

    @torch.no_grad()
    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, F) -> attention weights (B, P), rows sum to one; pair p is `pair_fields()[p]`."""
        self.fields.check(x)
        return self.attention.weights(*self._pairs_and_query(x))

    def pair_fields(self) -> list[tuple[int, int]]:
        """(field_i, field_j) of each pair number, the article's order."""
        return pair_fields(self.fields.num_fields)
