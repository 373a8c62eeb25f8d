"""Models: same logits with every valid implementation, AFM's attention, errors on bad input."""
import copy
import subprocess
import sys

import pytest
import torch

from ctrbench.measure.cells import random_ids
from ctrbench.models import (
    available_pairs,
    create_model,
    interaction_entry,
    list_interactions,
    list_models,
    pair_fields,
    predict_proba,
)
from ctrbench.models.interactions.reference import reference_interaction

FIELD_DIMS = [4, 3, 6, 2, 5, 7, 3, 8, 6, 4]   # 10 fields like the article's purchase log


@pytest.mark.parametrize("model_name,interaction", available_pairs())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_same_logits_and_gradients_as_reference(model_name, interaction, dtype):
    torch.manual_seed(0)
    model = create_model(model_name, FIELD_DIMS, interaction=interaction).to(dtype)
    reference = copy.deepcopy(model)
    reference.interaction = reference_interaction(interaction_entry(interaction).output)
    x = random_ids(FIELD_DIMS, 32)
    for m in (model, reference):
        m.train()
    torch.manual_seed(1)                     # same dropout masks for both
    logits = model(x)
    torch.manual_seed(1)
    expected = reference(x)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(logits, expected, rtol=tolerance, atol=tolerance)
    logits.sum().backward()
    expected.sum().backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6 if dtype == torch.float32 else 1e-10,
                                   msg=f"gradient of {name}")


@pytest.mark.parametrize("interaction", list_interactions(model="afm"))
def test_afm_attention_weights_are_distributions(interaction):
    torch.manual_seed(0)
    model = create_model("afm", FIELD_DIMS, interaction=interaction)
    weights = model.attention_weights(random_ids(FIELD_DIMS, 50))
    assert weights.shape == (50, 45)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(50))


def test_afm_attention_weights_do_not_depend_on_training_mode():
    torch.manual_seed(0)
    model = create_model("afm", FIELD_DIMS, dropout=0.5).train()
    x = random_ids(FIELD_DIMS, 8)
    torch.testing.assert_close(model.attention_weights(x), model.eval().attention_weights(x))


def test_pair_numbers_match_the_article():
    pairs = create_model("afm", FIELD_DIMS).pair_fields()
    assert len(pairs) == 45
    assert pairs[0] == (0, 1)
    assert pairs[44] == (8, 9)
    assert pairs[22] == (2, 8)
    assert pairs[33] == (4, 8)
    assert pair_fields(39)[-1] == (37, 38) and len(pair_fields(39)) == 741


@pytest.mark.parametrize("num_fields", [2, 3, 10, 39])
def test_pair_number_inverts_pair_fields_and_counts_them(num_fields):
    from ctrbench.pairs import num_pairs, pair_number
    pairs = pair_fields(num_fields)
    assert len(pairs) == num_pairs(num_fields)
    assert [pair_number(i, j, num_fields) for i, j in pairs] == list(range(len(pairs)))
    assert [pair_number(j, i, num_fields) for i, j in pairs] == list(range(len(pairs)))     # either order
    for bad in [(0, 0), (0, num_fields), (-1, 1)]:
        with pytest.raises(ValueError, match="no pair"):
            pair_number(*bad, num_fields)


def test_predict_proba_is_sigmoid_of_logits_in_eval_mode():
    torch.manual_seed(0)
    model = create_model("nfm", FIELD_DIMS).train()
    x = random_ids(FIELD_DIMS, 16)
    probabilities = predict_proba(model, x)
    assert model.training
    torch.testing.assert_close(probabilities, torch.sigmoid(model.eval()(x)))
    assert ((probabilities > 0) & (probabilities < 1)).all()


def test_registry_lists_and_filters():
    assert {"fm", "nfm", "afm"} <= set(list_models())
    assert list_models("*afm*") == [m for m in list_models() if "afm" in m]
    assert {"loop_gather", "triu_index", "einsum", "sum_square"} <= set(list_interactions())
    assert "sum_square" not in list_interactions(model="afm")
    assert ("afm", "sum_square") not in available_pairs()
    assert ("fm", "sum_square") in available_pairs()


def test_invalid_pair_names_valid_choices():
    with pytest.raises(ValueError, match="afm.*sum_square") as error:
        create_model("afm", FIELD_DIMS, interaction="sum_square")
    for name in list_interactions(model="afm"):
        assert name in str(error.value)


@pytest.mark.parametrize("call,match", [
    (lambda: create_model("xfm", FIELD_DIMS), "unknown model 'xfm'; known models: " + ", ".join(list_models())),
    (lambda: create_model("fm", FIELD_DIMS, interaction="fast"), "unknown interaction 'fast'.*triu_index"),
    (lambda: create_model("fm", FIELD_DIMS, attn_dim=4), "unknown hyper-parameter.*attn_dim"),
    (lambda: create_model("fm", [5]), "at least 2 fields"),
    (lambda: create_model("fm", [5, 0]), "vocabulary size"),
])
def test_bad_construction_is_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("model_name", list_models())
def test_the_registry_entry_agrees_with_the_constructor(model_name):
    """Defaults and the default interaction are written once, in the constructor; the entry (what
    `ctrbench list`, records and `create_model` use) must be exactly what a plain call builds."""
    import inspect

    from ctrbench.models import model_entry
    entry = model_entry(model_name)
    parameters = inspect.signature(entry.builder).parameters
    assert list(parameters)[:2] == ["field_dims", "interaction"]
    assert entry.default_interaction == parameters["interaction"].default
    assert {name: default for name, (default, _) in entry.hparams.items()} == \
        {name: p.default for name, p in list(parameters.items())[2:]}
    assert all(isinstance(meaning, str) and meaning for _, meaning in entry.hparams.values())
    assert entry.builder.registry_name == model_name
    assert entry.default_interaction in list_interactions(model=model_name)
    built = create_model(model_name, FIELD_DIMS)
    assert type(built.interaction).registry_name == entry.default_interaction


def _unregistered(name):
    from ctrbench.models import registry
    assert name not in registry._MODELS
    return name


def _with_embed_dim(field_dims, interaction="sum_square", embed_dim=16):
    pass


def _embed_dim_without_default(field_dims, interaction="sum_square", *, embed_dim):
    pass


def _interaction_without_default(field_dims, interaction, embed_dim=16):
    pass


@pytest.mark.parametrize("meanings,builder,match", [
    ({"embed_dim": "E", "depth": "layers"}, _with_embed_dim, r"not in the constructor \['depth'\]"),
    ({}, _with_embed_dim, r"without a meaning \['embed_dim'\]"),
    ({"embed_dim": "E"}, _embed_dim_without_default, r"without a default \['embed_dim'\]"),
    ({"embed_dim": "E"}, _interaction_without_default, "must start"),
])
def test_a_model_whose_declaration_and_constructor_disagree_is_refused(meanings, builder, match):
    from ctrbench.models import PAIRS, register_model
    name = _unregistered("disagreeing_test_model")
    with pytest.raises(ValueError, match=match):
        register_model(name, accepts={PAIRS}, hparams=meanings)(builder)
    assert name not in list_models()


@pytest.mark.parametrize("model_name", list_models())
def test_bad_ids_are_a_clear_error(model_name):
    model = create_model(model_name, FIELD_DIMS)
    x = random_ids(FIELD_DIMS, 4)
    with pytest.raises(TypeError, match="integer"):
        model(x.float())
    with pytest.raises(ValueError, match=r"shape \(batch, 10\)"):
        model(x[:, :9])
    with pytest.raises(ValueError, match=r"shape \(batch, 10\)"):
        model(x[0])
    too_large = x.clone()
    too_large[2, 9] = sum(FIELD_DIMS)
    with pytest.raises(ValueError, match="feature id 48 at row 2, field 9"):
        model(too_large)
    negative = x.clone()
    negative[1, 0] = -1
    with pytest.raises(ValueError, match="feature id -1 at row 1, field 0"):
        model(negative)
    wrong_field = x.clone()
    wrong_field[0, 0] = 4          # a valid global id, but it belongs to field 1
    with pytest.raises(ValueError, match="field 0"):
        model(wrong_field)


def test_importing_ctrbench_does_not_shadow_huggingface_datasets(tmp_path):
    """`datasets` must resolve to whatever the user has (Hugging Face's package, or nothing), never ours."""
    code = ("import importlib.util, ctrbench, ctrbench.models, ctrbench.datasets\n"
            "spec = importlib.util.find_spec('datasets')\n"
            "ours = ctrbench.datasets.__file__.rsplit('__init__', 1)[0]\n"
            "print('OURS' if spec is not None and spec.origin and spec.origin.startswith(ours) else 'OK')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "OK", result.stdout + result.stderr
