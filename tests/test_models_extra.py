"""FwFM, query-conditioned AFM and DeepFM: each reduces to FM/AFM where it should, qAFM's attention is per
sample, bad query fields are clear errors, and every model trains. (Equality with the explicit loop for
every valid interaction, and bad-id errors, are covered for all models by tests/test_models.py.)"""
import pytest
import torch

from ctrbench.measure.cells import random_ids
from ctrbench.models import PAIRS, available_pairs, create_model, interaction_entry, list_interactions, list_models

FIELD_DIMS = [4, 3, 6, 2, 5, 7, 3, 8, 6, 4]
NUM_PAIRS = 45


def copy_shared(source, target):
    """Copy the parameters `target` shares by name with `source` (embeddings, linear term, ...)."""
    target.load_state_dict({**target.state_dict(), **{k: v for k, v in source.state_dict().items()
                                                      if k in target.state_dict()}})


def test_registered_with_the_right_interactions():
    assert {"fwfm", "qafm", "deepfm"} <= set(list_models())
    per_pair = [i for i in list_interactions() if interaction_entry(i).output == PAIRS]
    assert {"triu_index", "einsum", "loop_gather"} <= set(per_pair)
    for model in ("fwfm", "qafm"):
        assert list_interactions(model=model) == per_pair
    assert list_interactions(model="deepfm") == list_interactions(model="fm")
    assert ("deepfm", "sum_square") in available_pairs()


# FwFM ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("interaction", list_interactions(model="fwfm"))
def test_fwfm_with_unit_pair_weights_is_fm(interaction):
    torch.manual_seed(0)
    fwfm = create_model("fwfm", FIELD_DIMS, interaction=interaction, embed_dim=8).double()
    fm = create_model("fm", FIELD_DIMS, embed_dim=8).double()
    torch.nn.init.normal_(fwfm.linear.weight.weight)          # non-zero linear term, to compare it too
    copy_shared(fwfm, fm)
    x = random_ids(FIELD_DIMS, 32)
    torch.testing.assert_close(fwfm.pair_weights(), torch.ones(NUM_PAIRS, dtype=torch.float64))
    torch.testing.assert_close(fwfm(x), fm(x))


def test_fwfm_pair_weight_scales_its_pair():
    torch.manual_seed(0)
    model = create_model("fwfm", FIELD_DIMS).double()
    x = random_ids(FIELD_DIMS, 8)
    emb = model.embedding(x)
    p = model.pair_fields().index((2, 8))
    dot = (emb[:, 2] * emb[:, 8]).sum(1)
    before = model(x)
    with torch.no_grad():
        model.pair_weight[p] = 3.0
    torch.testing.assert_close(model(x) - before, 2.0 * dot)
    assert model.pair_weights()[p] == 3.0 and model.pair_weights().shape == (NUM_PAIRS,)
    assert model.pair_fields() == create_model("afm", FIELD_DIMS).pair_fields()


# Query-conditioned AFM -----------------------------------------------------------------------------------

def test_qafm_attention_rows_are_distributions_and_ignore_training_mode():
    torch.manual_seed(0)
    model = create_model("qafm", FIELD_DIMS, dropout=0.5).train()
    x = random_ids(FIELD_DIMS, 50)
    weights = model.attention_weights(x)
    assert weights.shape == (50, NUM_PAIRS) and (weights >= 0).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(50))
    torch.testing.assert_close(weights, model.eval().attention_weights(x))
    assert model.pair_fields() == create_model("afm", FIELD_DIMS).pair_fields()


def test_qafm_attention_follows_the_query():
    """Two samples that differ only in a query field: AFM's weights change only on the pairs holding that
    field (their products changed); qAFM's change on every pair, since all of them see the query."""
    torch.manual_seed(0)
    qafm = create_model("qafm", FIELD_DIMS, query_fields=[7, 8]).double()
    afm = create_model("afm", FIELD_DIMS).double()
    x = random_ids(FIELD_DIMS, 1).repeat(2, 1)
    x[1, 8] = x[0, 8] + 1 if x[0, 8] < sum(FIELD_DIMS[:9]) - 1 else x[0, 8] - 1
    untouched = [p for p, (i, j) in enumerate(qafm.pair_fields()) if 8 not in (i, j)]

    def relative(weights):   # compare the pairs without field 8 after renormalising among themselves
        kept = weights[:, untouched]
        return kept / kept.sum(dim=1, keepdim=True)

    afm_rel = relative(afm.attention_weights(x))
    torch.testing.assert_close(afm_rel[0], afm_rel[1])
    qafm_rel = relative(qafm.attention_weights(x))
    assert (qafm_rel[0] - qafm_rel[1]).abs().max() > 1e-4


def test_qafm_without_query_weights_is_afm():
    torch.manual_seed(0)
    qafm = create_model("qafm", FIELD_DIMS, dropout=0.0).double()
    afm = create_model("afm", FIELD_DIMS, dropout=0.0).double()
    torch.nn.init.zeros_(qafm.attention.query.weight)
    copy_shared(qafm, afm)
    x = random_ids(FIELD_DIMS, 16)
    torch.testing.assert_close(qafm(x), afm(x))
    torch.testing.assert_close(qafm.attention_weights(x), afm.attention_weights(x))


def test_qafm_default_query_is_the_last_field_unless_given():
    assert create_model("qafm", FIELD_DIMS).query_fields == (9,)
    assert create_model("qafm", [3, 4], query_fields=0).query_fields == (0,)


def test_protocol_gives_qafm_the_data_sets_item_fields_unless_the_run_sets_them():
    from ctrbench.datasets import load
    from ctrbench.training.protocol import RunSpec, model_hparams
    purchase = load("purchase", rows=200)
    assert purchase.item_fields == (7, 8, 9)
    assert [purchase.field_names[f] for f in purchase.item_fields] == ["category_l2", "brand", "origin"]
    assert model_hparams(RunSpec("purchase", "qafm", "triu_index", 0), purchase)["query_fields"] == [7, 8, 9]
    given = RunSpec("purchase", "qafm", "triu_index", 0, hparams={"query_fields": [2]})
    assert model_hparams(given, purchase)["query_fields"] == [2]
    assert "query_fields" not in model_hparams(RunSpec("purchase", "afm", "triu_index", 0), purchase)


@pytest.mark.parametrize("query_fields,match", [
    ([], "at least one field"),
    ([10], r"query field 10 is outside the model's fields \[0, 10\)"),
    ([-1], r"query field -1 is outside"),
    ([7, 7], "repeated"),
    ([7.0], "integer field indices"),
    ("7,8,9", r"list of field indices.*query_fields=\[7,8,9\]"),
])
def test_qafm_bad_query_fields_are_clear_errors(query_fields, match):
    with pytest.raises(ValueError, match=match):
        create_model("qafm", FIELD_DIMS, query_fields=query_fields)


# DeepFM --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("interaction", list_interactions(model="deepfm"))
def test_deepfm_without_deep_output_is_fm(interaction):
    torch.manual_seed(0)
    deepfm = create_model("deepfm", FIELD_DIMS, interaction=interaction, embed_dim=8).double().train()
    fm = create_model("fm", FIELD_DIMS, embed_dim=8).double()
    torch.nn.init.normal_(deepfm.linear.weight.weight)
    output_layer = deepfm.mlp.layers[-1]
    torch.nn.init.zeros_(output_layer.weight)
    torch.nn.init.zeros_(output_layer.bias)
    copy_shared(deepfm, fm)
    x = random_ids(FIELD_DIMS, 32)
    torch.testing.assert_close(deepfm(x), fm(x))


def test_deepfm_shares_one_embedding_table():
    model = create_model("deepfm", FIELD_DIMS, embed_dim=4, hidden=[8])
    tables = [m for m in model.modules() if isinstance(m, torch.nn.Embedding) and m.embedding_dim == 4]
    assert len(tables) == 1
    assert model.mlp.layers[0].in_features == len(FIELD_DIMS) * 4


# Training ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_name", ["fwfm", "qafm", "deepfm"])
def test_trains_and_loss_decreases(model_name):
    torch.manual_seed(0)
    x = random_ids(FIELD_DIMS, 256, seed=1)
    y = ((x[:, 2] + x[:, 8]) % 2).double()       # a pure pair effect between fields 2 and 8
    model = create_model(model_name, FIELD_DIMS, embed_dim=8).double().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.9 * losses[0], losses
