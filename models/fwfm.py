import torch
from torch import nn

from .layers import FeaturesEmbedding, FeaturesLinear, FieldIds, pair_fields
from .registry import PAIRS, build_interaction, register_model

# What `ctrbench tune` searches (BARS publishes no FwFM space for Frappe; ours): FM's embedding
# regularizer range, and an L2 on the pair weights r (the net regularizer), each with 0 (the untuned run);
# and, as for FM (still improving at epoch 100 on frappe at 1e-3), Adam's learning rate.
SEARCH_SPACE = {"embedding_regularizer": [0.0, 1e-6, 1e-5, 1e-4, 1e-3], "net_regularizer": [0.0, 1e-6, 1e-5, 1e-4],
                "lr": [1e-3, 3e-3, 1e-2]}


# `--preset bars`: BARS has no FwFM on Frappe; its embedding size.
BARS = {"embed_dim": 10}


@register_model("fwfm", accepts={PAIRS}, hparams={
    "embed_dim": "size E of each feature's latent vector",
}, search_space=SEARCH_SPACE, presets={"bars": BARS})
class FwFM(nn.Module):
    """Field-weighted Factorization Machine (Pan et al., WWW 2018): w0 + Σ w_i + Σ_p r_p <v_i, v_j>.

    One learned scalar r_p per field pair p = (i, j): a global pair importance with no attention net,
    the yardstick for the claim that AFM's query-less attention can learn nothing more.
    pair products (B, P, E) -> sum over E (B, P) -> weighted by r (P,) -> (B,), plus the linear term.
    x: LongTensor (B, F) of global feature ids -> logits (B,).

    r starts at 1, so an untrained FwFM is exactly FM with the same embeddings; r then only records how
    far each pair moves away from FM's equal weighting. (r = 0 would also train, but the embeddings
    would get no gradient from the pair term until r left zero.)
    """

    def __init__(self, field_dims, interaction="triu_index", embed_dim: int = 16):
        super().__init__()
        self.fields = FieldIds(field_dims)
        self.linear = FeaturesLinear(self.fields.vocab_size)
        self.embedding = FeaturesEmbedding(self.fields.vocab_size, embed_dim)
        self.interaction = build_interaction(interaction, self.fields.num_fields, self)
        num_pairs = len(pair_fields(self.fields.num_fields))
        self.pair_weight = nn.Parameter(torch.ones(num_pairs))   # r, (P,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.fields.check(x)
        emb = self.embedding(x)                          # (B, F, E)
        dots = self.interaction(emb).sum(dim=2)          # (B, P): <v_i, v_j> per pair
        return self.linear(x) + dots @ self.pair_weight  # (B,)

    @torch.no_grad()
    def pair_weights(self) -> torch.Tensor:
        """The learned r (P,), a copy; pair p is `pair_fields()[p]`. Unlike AFM's attention these are
        not normalised: they can be negative and need not sum to one."""
        return self.pair_weight.detach().clone()

    def pair_fields(self) -> list[tuple[int, int]]:
        """(field_i, field_j) of each pair number, the article's order."""
        return pair_fields(self.fields.num_fields)
