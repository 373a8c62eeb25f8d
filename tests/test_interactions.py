"""Every registered pairwise-product implementation equals the explicit nested loop, forward and backward."""
import pytest
import torch

from ctrbench.models import ATTENTION_POOLED, PAIRS, POOLED, interaction_entry, list_interactions
from ctrbench.models.interactions.reference import attention_pooling_reference, pair_products_reference
from ctrbench.models.layers import PairAttention

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


@pytest.mark.parametrize("name", list_interactions())
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
    if output != PAIRS:
        pytest.skip(f"{name} does not output per-pair products")
    num_fields = 5
    emb = torch.tensor([[2.0 ** i for i in range(num_fields)]], dtype=torch.float64).unsqueeze(-1)
    products = run(name, emb).squeeze(-1).squeeze(0)
    expected = [2.0 ** (i + j) for i in range(num_fields) for j in range(i + 1, num_fields)]
    assert products.tolist() == expected


@pytest.mark.parametrize("name", list_interactions())
def test_buffers_are_not_saved_in_state_dict(name):
    assert not interaction_entry(name).builder(6).state_dict()
