"""IPNN, FiBiNET, xDeepFM, DCNv2, AutoInt and FinalMLP: registered with the right interactions, shapes,
gradients to every parameter, determinism under a seed, a short epoch lowers the loss, each block against
its formula written out, and BARS's spaces. (Equality with the explicit loop for every valid interaction,
and bad-id errors, are covered for all models by tests/test_models.py; the new interaction kinds by
tests/test_interactions.py.)"""
import pytest
import torch

from ctrbench.measure.cells import implementations, random_ids
from ctrbench.models import (
    BILINEAR,
    CIN,
    INNER,
    NONE,
    PAIRS,
    POOLED,
    create_model,
    interaction_entry,
    list_interactions,
    list_models,
    model_entry,
)
from ctrbench.training.train import TrainConfig
from ctrbench.tuning.spaces import search_space, untuned_point

FIELD_DIMS = [4, 3, 6, 2, 5, 7, 3, 8, 6, 4]
NEW = ["ipnn", "fibinet", "xdeepfm", "dcnv2", "autoint", "finalmlp"]
# Small towers where the test is not about the defaults: the defaults' 400-wide layers only cost time.
SMALL = {"ipnn": {"hidden": (32, 32)}, "fibinet": {"hidden": (32,)}, "xdeepfm": {"hidden": (32,), "cin_layers": (8, 8)},
         "dcnv2": {"hidden": (32,), "cross_layers": 2}, "autoint": {"attn_dim": 16, "num_layers": 2, "num_heads": 2},
         "finalmlp": {"hidden1": (40,), "hidden2": (20,), "gate_hidden": (16,)}}
# Variants whose every parameter must get a gradient too.
VARIANTS = [(name, {}) for name in NEW] + [
    ("ipnn", {"batch_norm": True}),
    ("fibinet", {"bilinear_type": "field_each"}), ("fibinet", {"bilinear_type": "field_interaction"}),
    ("dcnv2", {"structure": "stacked"}), ("dcnv2", {"structure": "crossnet_only"}),
    ("dcnv2", {"low_rank": 4, "experts": 3}),
    ("autoint", {"hidden": (16,), "dropout": 0.1, "scale": True, "layer_norm": True}),
    ("finalmlp", {"feature_selection": False}), ("finalmlp", {"fs1_context": [0], "fs2_context": [1, 2]}),
]


def variant_id(variant):
    name, hparams = variant
    return name + "".join(f"-{k}={v}" for k, v in hparams.items())


def test_registered_with_the_right_interactions():
    assert set(NEW) <= set(list_models())
    of_kind = {kind: [i for i in list_interactions() if interaction_entry(i).output == kind]
               for kind in (PAIRS, INNER, BILINEAR, CIN, NONE)}
    assert set(list_interactions(model="ipnn")) == {*of_kind[PAIRS], *of_kind[INNER]} and "gram_triu" in of_kind[INNER]
    assert list_interactions(model="fibinet") == of_kind[BILINEAR]
    assert {"bilinear_triu_index", "bilinear_einsum", "bilinear_project"} <= set(of_kind[BILINEAR])
    assert list_interactions(model="xdeepfm") == of_kind[CIN] and {"cin_einsum", "cin_matmul"} <= set(of_kind[CIN])
    for name in ("dcnv2", "autoint", "finalmlp"):
        assert list_interactions(model=name) == ["none"]
    for old in ("fm", "nfm", "afm", "deepfm", "fwfm", "qafm"):   # nobody else can take the new kinds
        assert not set(list_interactions(model=old)) & {*of_kind[BILINEAR], *of_kind[CIN], *of_kind[INNER], "none"}
    # the layer cells time a product alone: kinds that need a model's weights, and "none", are not among them
    assert set(implementations("product")) == {i for i in list_interactions()
                                               if interaction_entry(i).output in (PAIRS, POOLED)}
    with pytest.raises(ValueError, match="fibinet.*cannot use interaction 'triu_index'"):
        create_model("fibinet", FIELD_DIMS, interaction="triu_index")


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_shapes_and_every_parameter_gets_a_gradient(variant):
    name, hparams = variant
    torch.manual_seed(0)
    model = create_model(name, FIELD_DIMS, **{**SMALL[name], **hparams}).train()
    logits = model(random_ids(FIELD_DIMS, 16))
    assert logits.shape == (16,) and torch.isfinite(logits).all()
    logits.sum().backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent, f"no gradient reaches {silent}"
    model.eval()
    assert model(random_ids(FIELD_DIMS, 1)).shape == (1,)     # one sample in eval mode (BatchNorm)


@pytest.mark.parametrize("name", NEW)
def test_the_same_seed_builds_and_runs_the_same_model(name):
    x = random_ids(FIELD_DIMS, 32)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = create_model(name, FIELD_DIMS, **SMALL[name]).train()
        runs.append((model.state_dict(), model(x)))            # dropout draws from the same seed
    (first, logits_a), (second, logits_b) = runs
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert torch.equal(logits_a, logits_b)
    torch.manual_seed(4)
    assert not torch.equal(create_model(name, FIELD_DIMS, **SMALL[name]).embedding.embedding.weight,
                           first["embedding.embedding.weight"])


@pytest.mark.parametrize("name", NEW)
def test_one_short_epoch_lowers_the_loss(name):
    torch.manual_seed(0)
    x = random_ids(FIELD_DIMS, 2048, seed=1)
    y = ((x[:, 2] + x[:, 8]) % 2).float()                      # a pure pair effect between fields 2 and 8
    model = create_model(name, FIELD_DIMS, embed_dim=8, **SMALL[name])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)      # AutoInt's small attention needs it
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def full_loss():
        model.eval()
        with torch.no_grad():
            return loss_fn(model(x), y).item()

    before = full_loss()
    model.train()
    for batch in torch.randperm(len(x), generator=torch.Generator().manual_seed(2)).split(64):   # 32 steps
        optimizer.zero_grad()
        loss_fn(model(x[batch]), y[batch]).backward()
        optimizer.step()
    after = full_loss()
    assert after < 0.9 * before, (before, after)


# Each block against its formula --------------------------------------------------------------------------

def test_ipnn_reads_the_embeddings_and_their_inner_products():
    model = create_model("ipnn", FIELD_DIMS, embed_dim=4)
    assert model.mlp.layers[0].in_features == 10 * 4 + 45
    assert model.mlp.layers[1].__class__ is torch.nn.ReLU            # BARS's best: no batch norm
    assert create_model("ipnn", FIELD_DIMS, batch_norm=True).mlp.layers[1].__class__ is torch.nn.BatchNorm1d


def test_fibinet_senet_reweights_fields_and_holds_one_w_per_type():
    torch.manual_seed(0)
    model = create_model("fibinet", FIELD_DIMS, embed_dim=4, **SMALL["fibinet"]).double()
    emb = torch.randn(5, 10, 4, dtype=torch.float64)
    weights = model.senet.excitation(emb.mean(dim=2))                  # (B, F), >= 0 after the ReLU
    assert weights.shape == (5, 10) and (weights >= 0).all()
    torch.testing.assert_close(model.senet(emb), emb * weights.unsqueeze(2))
    assert model.senet.excitation[0].out_features == 5                 # F / reduction_ratio
    counts = {t: create_model("fibinet", FIELD_DIMS, embed_dim=4, bilinear_type=t).bilinear.weight.shape
              for t in ("field_all", "field_each", "field_interaction")}
    assert counts == {"field_all": (1, 4, 4), "field_each": (9, 4, 4), "field_interaction": (45, 4, 4)}
    with pytest.raises(ValueError, match="bilinear_type must be one of"):
        create_model("fibinet", FIELD_DIMS, bilinear_type="field_pair")


@pytest.mark.parametrize("interaction", list_interactions(model="xdeepfm"))
def test_xdeepfm_with_an_upper_triangle_cin_map_and_no_dnn_is_fm(interaction):
    """One CIN map with W_{h,i} = 1 for h < i, sum-pooled over E, is Σ_{h<i} <v_h, v_i>: FM's pair term."""
    torch.manual_seed(0)
    model = create_model("xdeepfm", FIELD_DIMS, interaction=interaction, embed_dim=8, cin_layers=(1,)).double()
    fm = create_model("fm", FIELD_DIMS, embed_dim=8).double()
    torch.nn.init.normal_(model.linear.weight.weight)
    with torch.no_grad():
        model.cin[0].weight.copy_(torch.ones(10, 10).triu(1).unsqueeze(0))
        model.cin[0].bias.zero_()
        model.cin_output.weight.fill_(1.0)
        model.cin_output.bias.zero_()
        model.mlp.layers[-1].weight.zero_()
        model.mlp.layers[-1].bias.zero_()
    fm.load_state_dict({**fm.state_dict(), **{k: v for k, v in model.state_dict().items() if k in fm.state_dict()}})
    x = random_ids(FIELD_DIMS, 32)
    torch.testing.assert_close(model.eval()(x), fm(x))
    with pytest.raises(ValueError, match="cin_layers"):
        create_model("xdeepfm", FIELD_DIMS, cin_layers=())


def test_dcnv2_cross_layers_are_their_formulas():
    torch.manual_seed(0)
    full = create_model("dcnv2", FIELD_DIMS, embed_dim=2, **SMALL["dcnv2"]).double()
    x0, xl = torch.randn(3, 20, dtype=torch.float64), torch.randn(3, 20, dtype=torch.float64)
    layer = full.cross[0]
    torch.testing.assert_close(layer(x0, xl), x0 * (xl @ layer.linear.weight.T + layer.linear.bias) + xl)

    mixed = create_model("dcnv2", FIELD_DIMS, embed_dim=2, low_rank=3, experts=2).double().cross[0]
    gates = torch.softmax(xl @ mixed.gate.weight.T, dim=1)
    expected = xl.clone()
    for e in range(2):
        low = torch.tanh(torch.tanh(xl @ mixed.V[e]) @ mixed.C[e])
        expected = expected + gates[:, e:e + 1] * x0 * (low @ mixed.U[e] + mixed.bias)
    torch.testing.assert_close(mixed(x0, xl), expected)

    widths = {s: create_model("dcnv2", FIELD_DIMS, embed_dim=2, structure=s, hidden=(7,)).output.in_features
              for s in ("parallel", "stacked", "crossnet_only")}
    assert widths == {"parallel": 27, "stacked": 7, "crossnet_only": 20}
    with pytest.raises(ValueError, match="structure must be one of"):
        create_model("dcnv2", FIELD_DIMS, structure="wide")


@pytest.mark.parametrize("scale", [False, True])
def test_autoint_layer_is_self_attention_over_fields_written_out(scale):
    """out_f = ReLU(Σ_h concat_h Σ_j softmax_j(<q_f, k_j>_h [/ sqrt(d_h)]) v_j,h + W_res e_f), one field at a time."""
    torch.manual_seed(0)
    model = create_model("autoint", FIELD_DIMS, embed_dim=3, attn_dim=4, num_layers=1, num_heads=2,
                         scale=scale).double()
    layer = model.self_attention[0]
    emb = torch.randn(2, 10, 3, dtype=torch.float64)
    q, k, v = (emb @ m.weight.T for m in (layer.query, layer.key, layer.value))      # (B, F, 4)
    rows = []
    for f in range(10):
        heads = []
        for h in (slice(0, 2), slice(2, 4)):
            scores = (q[:, f, h].unsqueeze(1) * k[:, :, h]).sum(2) / (2 ** 0.5 if scale else 1.0)   # (B, F)
            heads.append((torch.softmax(scores, dim=1).unsqueeze(2) * v[:, :, h]).sum(1))            # (B, 2)
        rows.append(torch.relu(torch.cat(heads, dim=1) + emb[:, f] @ layer.residual.weight.T))
    torch.testing.assert_close(layer(emb), torch.stack(rows, dim=1))
    with pytest.raises(ValueError, match="multiple of num_heads"):
        create_model("autoint", FIELD_DIMS, attn_dim=10, num_heads=4)


def test_finalmlp_fusion_gates_and_contexts():
    torch.manual_seed(0)
    model = create_model("finalmlp", FIELD_DIMS, embed_dim=2, hidden1=(6,), hidden2=(4,), fusion_heads=2,
                         fs1_context=[7], gate_hidden=(5,)).double()
    fusion = model.fusion
    o1, o2 = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    expected = (o1 @ fusion.linear1.weight.T + fusion.linear1.bias + o2 @ fusion.linear2.weight.T).squeeze(1)
    for h in range(2):
        expected = expected + ((o1[:, 3 * h:3 * h + 3] @ fusion.weight[h]) * o2[:, 2 * h:2 * h + 2]).sum(1)
    torch.testing.assert_close(fusion(o1, o2), expected)

    emb = model.embedding(random_ids(FIELD_DIMS, 4)).double()
    flat = emb.flatten(start_dim=1)
    gated, learned = (gate(emb) for gate in model.gates)
    ratio = gated / flat
    assert ((ratio > 0) & (ratio < 2)).all()                          # 2 σ(.) lies in (0, 2)
    torch.testing.assert_close(ratio, 2 * torch.sigmoid(model.gates[0].mlp(emb[:, 7])))   # context: field 7
    # without context the gate is one learned vector: the same for every sample
    torch.testing.assert_close(learned / flat, (learned / flat)[:1].expand(4, -1))
    with pytest.raises(ValueError, match="fs1_context"):
        create_model("finalmlp", FIELD_DIMS, fs1_context=[10])
    with pytest.raises(ValueError, match="multiples of fusion_heads"):
        create_model("finalmlp", FIELD_DIMS, hidden2=(7,))


# Search spaces -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NEW)
def test_bars_space_holds_the_untuned_point_and_only_known_names(name):
    space = search_space(name)                                       # raises on an unknown name
    point = untuned_point(name, space, TrainConfig())
    assert point is not None and point["embedding_regularizer"] == 0.0
    defaults = {k: default for k, (default, _) in model_entry(name).hparams.items()}
    assert all(point[k] == defaults[k] for k in point if k in defaults)
    assert all(isinstance(v, (bool, int, float, str)) for values in space.values() for v in values)


def test_bars_values_are_in_the_spaces():
    ipnn, fibinet, xdeepfm, dcnv2, autoint, finalmlp = (search_space(m) for m in NEW)
    assert {0.2, 0.3, 0.4, 0.5} <= set(ipnn["dropout"])
    assert {0.005, 0.01, 0.05, 0.1} <= set(ipnn["embedding_regularizer"])
    assert set(fibinet["bilinear_type"]) == {"field_all", "field_each", "field_interaction"}
    assert {0.05, 0.1} <= set(xdeepfm["embedding_regularizer"])
    assert {4, 5, 6} <= set(dcnv2["cross_layers"]) and {0.3, 0.4} <= set(dcnv2["dropout"])
    assert {6, 7} <= set(autoint["num_layers"]) and {1, 2, 4, 8} <= set(autoint["num_heads"])
    assert {2, 5} <= set(finalmlp["fusion_heads"]) and {True, False} <= set(finalmlp["feature_selection"])
