"""Every registered pairwise-product implementation equals the explicit nested loop, forward and backward."""
import pytest
import torch

from ctrbench.models import (
    ATTENTION_POOLED,
    BILINEAR,
    CIN,
    INNER,
    PAIRS,
    POOLED,
    interaction_entry,
    list_interactions,
)
from ctrbench.models.interactions.reference import (
    attention_pooling_reference,
    bilinear_pairs_reference,
    cin_layer_reference,
    pair_products_reference,
)
from ctrbench.models.layers import PairAttention
from ctrbench.pairs import num_pairs

FIELDS = [2, 3, 10, 39]
EMBED = [1, 8, 16]
BATCH = [1, 7, 64]
DTYPES = [torch.float32, torch.float64]


def reference_for(output, emb, attention=None):
    pairs = pair_products_reference(emb)
    if output == PAIRS:
        return pairs
    if output == POOLED:
        return pairs.sum(dim=1)
    if output == INNER:
        return pairs.sum(dim=2)
    return attention_pooling_reference(emb, attention)


def run(name, emb, attention=None):
    module = interaction_entry(name).builder(emb.shape[1])
    if module.output == ATTENTION_POOLED:
        return module(emb, attention)
    return module(emb)


def assert_close(actual, expected, rtol):
    scale = expected.abs().max().clamp_min(1e-12)
    assert actual.shape == expected.shape
    assert ((actual - expected).abs().max() / scale).item() <= rtol, (actual - expected).abs().max()


def of_kind(*outputs):
    return [name for name in list_interactions() if interaction_entry(name).output in outputs]


@pytest.mark.parametrize("name", of_kind(PAIRS, POOLED, ATTENTION_POOLED, INNER))
@pytest.mark.parametrize("num_fields", FIELDS)
@pytest.mark.parametrize("embed_dim", EMBED)
@pytest.mark.parametrize("batch", BATCH)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_equals_nested_loop_forward_and_gradient(name, num_fields, embed_dim, batch, dtype):
    torch.manual_seed(num_fields * 1000 + embed_dim * 10 + batch)
    output = interaction_entry(name).output
    emb = torch.randn(batch, num_fields, embed_dim, dtype=dtype, requires_grad=True)
    attention = None
    if output == ATTENTION_POOLED:
        attention = PairAttention(embed_dim, 16, dropout=0.0).to(dtype)

    expected = reference_for(output, emb, attention)
    upstream = torch.randn_like(expected)
    (expected_grad,) = torch.autograd.grad((expected * upstream).sum(), emb)

    actual = run(name, emb, attention)
    (actual_grad,) = torch.autograd.grad((actual * upstream).sum(), emb)

    assert actual.dtype == dtype
    assert_close(actual, expected, rtol=1e-5)
    assert_close(actual_grad, expected_grad, rtol=1e-4)


@pytest.mark.parametrize("name", list_interactions())
def test_pair_order_is_row_major_upper_triangle(name):
    """With v_i = 2^i the product of pair (i, j) is 2^(i+j), which identifies where each pair landed."""
    output = interaction_entry(name).output
    if output not in (PAIRS, INNER):       # with E = 1 a pair's inner product is its product
        pytest.skip(f"{name} does not output one value per pair")
    num_fields = 5
    emb = torch.tensor([[2.0 ** i for i in range(num_fields)]], dtype=torch.float64).unsqueeze(-1)
    products = run(name, emb).reshape(-1)
    expected = [2.0 ** (i + j) for i in range(num_fields) for j in range(i + 1, num_fields)]
    assert products.tolist() == expected


@pytest.mark.parametrize("name", list_interactions())
def test_buffers_are_not_saved_in_state_dict(name):
    assert not interaction_entry(name).builder(6).state_dict()


# Pairwise products with a model's weight: FiBiNET's bilinear interaction, xDeepFM's CIN layer ------------

def assert_forward_and_gradients_match(actual_fn, expected_fn, inputs, dtype):
    """The implementation's output, and its gradients with respect to every input, against the loop's."""
    expected = expected_fn(*inputs)
    upstream = torch.randn_like(expected)
    expected_grads = torch.autograd.grad((expected * upstream).sum(), inputs)
    actual = actual_fn(*inputs)
    actual_grads = torch.autograd.grad((actual * upstream).sum(), inputs)
    assert actual.dtype == dtype
    tight = dtype == torch.float64
    assert_close(actual, expected, rtol=1e-12 if tight else 1e-5)
    for got, want in zip(actual_grads, expected_grads):
        assert_close(got, want, rtol=1e-11 if tight else 1e-4)


# (fields, embedding size, dtype): every small case, and Criteo's 39 fields once (the loop is slow there).
WEIGHTED_CASES = [pytest.param(f, e, dtype, id=f"F{f}-E{e}-{str(dtype)[-2:]}")
                  for f in FIELDS[:-1] for e in (1, 8) for dtype in DTYPES] + \
                 [pytest.param(FIELDS[-1], 8, torch.float64, id=f"F{FIELDS[-1]}-E8-64")]


@pytest.mark.parametrize("name", of_kind(BILINEAR))
@pytest.mark.parametrize("bilinear_type", ["field_all", "field_each", "field_interaction"])
@pytest.mark.parametrize("num_fields,embed_dim,dtype", WEIGHTED_CASES)
def test_bilinear_equals_nested_loop_forward_and_gradient(name, bilinear_type, num_fields, embed_dim, dtype):
    torch.manual_seed(num_fields * 100 + embed_dim)
    count = {"field_all": 1, "field_each": num_fields - 1, "field_interaction": num_pairs(num_fields)}[bilinear_type]
    emb = torch.randn(7, num_fields, embed_dim, dtype=dtype, requires_grad=True)
    weight = torch.randn(count, embed_dim, embed_dim, dtype=dtype, requires_grad=True)
    module = interaction_entry(name).builder(num_fields)
    assert_forward_and_gradients_match(lambda e, w: module(e, w, bilinear_type),
                                       lambda e, w: bilinear_pairs_reference(e, w, bilinear_type), (emb, weight), dtype)


@pytest.mark.parametrize("name", of_kind(BILINEAR))
def test_bilinear_with_identity_weights_is_the_pair_product_in_pair_order(name):
    """W = I makes (v_i W) ⊙ v_j the plain pair product: with v_i = 2^i, pair (i, j) lands where 2^(i+j) says."""
    num_fields = 5
    emb = torch.tensor([[2.0 ** i for i in range(num_fields)]], dtype=torch.float64).unsqueeze(-1)
    module = interaction_entry(name).builder(num_fields)
    expected = [2.0 ** (i + j) for i in range(num_fields) for j in range(i + 1, num_fields)]
    for bilinear_type, count in [("field_all", 1), ("field_each", 4), ("field_interaction", 10)]:
        weight = torch.ones(count, 1, 1, dtype=torch.float64)
        assert module(emb, weight, bilinear_type).flatten().tolist() == expected


@pytest.mark.parametrize("name", of_kind(CIN))
@pytest.mark.parametrize("maps_in,maps_out", [(None, 4), (6, 1), (3, 8)])     # None: layer 1, x^{k-1} = x^0
@pytest.mark.parametrize("num_fields,embed_dim,dtype", WEIGHTED_CASES)
def test_cin_layer_equals_nested_loop_forward_and_gradient(name, num_fields, maps_in, maps_out, embed_dim, dtype):
    torch.manual_seed(num_fields * 100 + embed_dim)
    maps_in = maps_in or num_fields
    emb = torch.randn(7, num_fields, embed_dim, dtype=dtype, requires_grad=True)
    hidden = torch.randn(7, maps_in, embed_dim, dtype=dtype, requires_grad=True)
    weight = torch.randn(maps_out, maps_in, num_fields, dtype=dtype, requires_grad=True)
    module = interaction_entry(name).builder(num_fields)
    assert_forward_and_gradients_match(module, cin_layer_reference, (hidden, emb, weight), dtype)


@pytest.mark.parametrize("rows_per_block", [1, 5, 16])
def test_cin_blocked_equals_nested_loop_over_several_uneven_blocks(rows_per_block):
    """7 samples × E = 8 is 56 rows: blocks of 5 leave a last block of 1; the backward forms them again."""
    from ctrbench.models.interactions.cin_blocked import CINBlocked
    torch.manual_seed(rows_per_block)
    emb = torch.randn(7, 6, 8, dtype=torch.float64, requires_grad=True)
    hidden = torch.randn(7, 3, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, 6, dtype=torch.float64, requires_grad=True)
    layer = CINBlocked(6, rows_per_block)
    assert_forward_and_gradients_match(layer, cin_layer_reference, (hidden, emb, weight), torch.float64)
    # layer 1 passes the embeddings as both inputs: their two gradients add up
    first_weight = torch.randn(4, 6, 6, dtype=torch.float64, requires_grad=True)
    assert_forward_and_gradients_match(lambda e, w: layer(e, e, w), lambda e, w: cin_layer_reference(e, e, w),
                                       (emb, first_weight), torch.float64)
