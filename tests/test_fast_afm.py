"""The fused AFM poolings (`afm_fused`, `afm_kernel`) against the plain definition in interactions/reference.py.

`afm_triton` has its own file (test_afm_triton.py): under Triton's interpreter the F = 39 cases here
would take minutes, and on a CPU without it afm_triton is afm_fused, tested here already."""
import shutil

import pytest
import torch
from conftest import assert_seeded_dropout, assert_whole_afm_matches_triu_index, away_from_relu_kink, gradient_floor

from ctrbench.measure.cells import implementations, random_ids
from ctrbench.models import create_model
from ctrbench.models.interactions import afm_kernel
from ctrbench.models.interactions.afm_kernel import kernel_status
from ctrbench.models.interactions.reference import attention_pooling_reference, pair_products_reference
from ctrbench.models.layers import PairAttention, attention_pooled_pairs
from ctrbench.models.registry import interaction_entry

FAST = ["afm_fused", "afm_kernel"]


def _setup(name, F, E, dtype, p, train, B=6, A=8, seed=0):
    torch.manual_seed(seed)
    attention = PairAttention(E, A, p).to(dtype).train(train)
    emb = torch.randn(B, F, E, dtype=dtype, requires_grad=True)
    return interaction_entry(name).builder(F), attention, emb


def _value_and_grads(fn, emb, attention, grad_out, seed):
    torch.manual_seed(seed)
    out = fn(emb, attention)
    after = torch.rand(())                      # the next random number: same RNG consumption
    grads = torch.autograd.grad(out, [emb, *attention.parameters()], grad_out)
    return out, grads, after


def _close(actual, expected, rtol, floor=0.0):
    scale = max(expected.abs().max().item() if expected.numel() else 0.0, floor)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale + 1e-12)


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("E", [1, 8, 16])
@pytest.mark.parametrize("F", [2, 3, 10, 39])
@pytest.mark.parametrize("train", [True, False])
def test_equals_reference(name, F, E, dtype, train):
    fused, attention, emb = _setup(name, F, E, dtype, p=0.3, train=train)
    grad_out = torch.randn(emb.shape[0], E, dtype=dtype)
    out, grads, after = _value_and_grads(fused, emb, attention, grad_out, seed=7)
    ref, ref_grads, ref_after = _value_and_grads(attention_pooling_reference, emb, attention, grad_out, seed=7)
    _close(out, ref, 1e-5)
    for g, r in zip(grads, ref_grads):
        _close(g, r, 1e-4)
    assert torch.equal(after, ref_after)
    weights = fused.attention_weights(emb, attention)
    _close(weights, attention.weights(pair_products_reference(emb)), 1e-5)


@pytest.mark.parametrize("name", FAST)
def test_dropout_same_seed_same_result_different_seed_different(name):
    fused, attention, emb = _setup(name, 10, 8, torch.float64, p=0.5, train=True, B=32)
    assert_seeded_dropout(lambda: fused(emb, attention))


@pytest.mark.parametrize("name", FAST)
def test_chunked_batch_matches_reference(name):
    # B larger than one chunk (and not a multiple of it), so the chunk loop and its tail run.
    fused, attention, emb = _setup(name, 39, 16, torch.float32, p=0.2, train=True, B=300, A=16)
    grad_out = torch.randn(300, 16)
    out, grads, _ = _value_and_grads(fused, emb, attention, grad_out, seed=1)
    ref, ref_grads, _ = _value_and_grads(attention_pooling_reference, emb, attention, grad_out, seed=1)
    _close(out, ref, 1e-5)
    for g, r in zip(grads, ref_grads):
        _close(g, r, 1e-4)


@pytest.mark.parametrize("name", FAST)
def test_whole_model_matches_triu_index(name):
    assert_whole_afm_matches_triu_index(name, [5, 7, 3, 4, 6, 2, 8, 5, 3, 4], 64)


def _saved_bytes(fn, emb, attention):
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[(storage.data_ptr(), t.device)] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(emb, attention)
    return sum(storages.values())


@pytest.mark.parametrize("name", FAST)
def test_saved_activations_at_most_an_eighth_of_triu_index(name):
    fused, attention, emb = _setup(name, 39, 16, torch.float32, p=0.2, train=True, B=256, A=16)
    triu = interaction_entry("triu_index").builder(39)
    fused_bytes = _saved_bytes(fused, emb, attention)
    triu_bytes = _saved_bytes(lambda e, a: a(triu(e)), emb, attention)
    assert fused_bytes * 8 <= triu_bytes, (fused_bytes, triu_bytes)


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="no C++ compiler here")
def test_kernel_is_built_where_a_compiler_is_present():
    # Otherwise every afm_kernel test above would pass on the afm_fused fallback and prove nothing.
    built, why = kernel_status()
    assert built, why


def test_kernel_falls_back_to_afm_fused_with_a_warning_when_it_cannot_be_built(monkeypatch):
    monkeypatch.setattr(afm_kernel, "_build", lambda: (None, "RuntimeError: no compiler"))
    monkeypatch.setattr(afm_kernel.KernelAttentionPooling, "_warned", False)
    module, attention, emb = _setup("afm_kernel", 10, 8, torch.float64, p=0.3, train=True)
    grad_out = torch.randn(emb.shape[0], 8, dtype=torch.float64)
    with pytest.warns(UserWarning, match="could not be built.*no compiler"):
        out, grads, _ = _value_and_grads(module, emb, attention, grad_out, 2)
    ref, ref_grads, _ = _value_and_grads(attention_pooling_reference, emb, attention, grad_out, 2)
    _close(out, ref, 1e-5)
    for g, r in zip(grads, ref_grads):
        _close(g, r, 1e-4)


def _assert_compiled_equals_eager(model, compiled, x, forward_rtol, grad_rtol):
    """The compiled model's logits and parameter gradients (of sum(logits²)) equal the eager model's; the
    same seed before each run, so that dropout draws the same mask where the compiler uses torch's RNG."""
    results = []
    for run in (model, compiled):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        logits = run(x)
        logits.square().sum().backward()
        results.append((logits.detach(), [p.grad.clone() for p in model.parameters()]))
    _close(results[1][0], results[0][0], forward_rtol)
    for compiled_grad, eager_grad in zip(results[1][1], results[0][1]):
        _close(compiled_grad, eager_grad, grad_rtol)


def _built_kernel():
    built, why = kernel_status()
    if not built:
        pytest.skip(f"afm_kernel is not built here: {why}")
    return afm_kernel._build()[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weights_only,keep_relu,dropout", [(False, True, True), (False, False, False),
                                                            (True, False, False)])
def test_kernel_operators_pass_torch_opcheck(dtype, weights_only, keep_relu, dropout):
    # Schema, fake tensors (the ReLU bits' size among them) and AOT dispatch with dynamic shapes against
    # the real kernel: what torch.compile relies on. B = 37 leaves a partial block of lanes.
    kernel = _built_kernel()
    torch.manual_seed(0)
    B, F, E, A = 37, 9, 16, 12
    V, W, b, h = torch.randn(B, F, E, dtype=dtype), torch.randn(A, E, dtype=dtype), torch.randn(A, dtype=dtype), \
        torch.randn(A, dtype=dtype)
    mask = (torch.rand(B, F * (F - 1) // 2) > 0.3).to(dtype) / 0.7 if dropout else V.new_empty(0)
    torch.library.opcheck(kernel.forward, (V, W, b, h, mask, weights_only, keep_relu))
    if not weights_only:
        _, weights, relu = kernel.forward(V, W, b, h, mask, False, keep_relu)
        torch.library.opcheck(kernel.backward, (V, W, b, h, weights, mask, torch.randn(B, E, dtype=dtype), relu))


def test_compiled_afm_kernel_model_is_one_graph_and_equals_eager():
    # The kernel is a torch operator with fake tensors, so torch.compile traces the whole model, the
    # kernel's forward and backward inside it, with no graph break (as a pybind function it broke the
    # graph). aot_eager: the tracing is what is tested; inductor's code for the rest is afm_fused's test.
    _built_kernel()
    torch._dynamo.reset()
    torch.manual_seed(0)
    field_dims = [5, 7, 3, 4, 6, 2, 3]
    model = create_model("afm", field_dims, interaction="afm_kernel", embed_dim=16, attn_dim=16, dropout=0.0)
    x = random_ids(field_dims, 40)
    explained = torch._dynamo.explain(model)(x)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    _assert_compiled_equals_eager(model, torch.compile(model, backend="aot_eager"), x, 1e-6, 1e-6)


@pytest.mark.parametrize("E,A", [(65, 8), (8, 70)])
def test_kernel_sizes_beyond_its_limit_run_afm_fused(E, A):
    module, attention, emb = _setup("afm_kernel", 6, E, torch.float32, p=0.0, train=True, A=A)
    assert not module._use_kernel(emb, attention)
    _close(module(emb, attention), attention_pooling_reference(emb, attention), 1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", implementations("afm"))
@pytest.mark.parametrize("F", [10, 39, 100])
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_equals_reference_on_cuda(name, F, p, monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)   # the reference in exact float32 too
    torch.manual_seed(0)
    attention = PairAttention(16, 16, p).cuda().train()
    emb = torch.randn(257, F, 16, device="cuda", requires_grad=True)
    away_from_relu_kink(attention, emb)
    grad_out = torch.randn(257, 16, device="cuda")
    module = interaction_entry(name).builder(F).cuda()
    out, grads, _ = _value_and_grads(lambda e, a: attention_pooled_pairs(module, e, a), emb, attention, grad_out, 5)
    ref, ref_grads, _ = _value_and_grads(attention_pooling_reference, emb, attention, grad_out, 5)
    forward_tol, grad_tol = interaction_entry(name).tolerance or (1e-5, 1e-4)   # afm_triton_tf32: looser
    _close(out, ref, forward_tol)
    for k, (g, r) in enumerate(zip(grads, ref_grads)):
        _close(g, r, grad_tol, floor=gradient_floor(k, ref_grads, F, pinned=True))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_compiled_afm_fused_model_equals_eager(device):
    # torch.compile of an afm_fused AFM once failed to trace the pair products (a view of a tensor the
    # trace laid out otherwise). Even F: the repeated slots' -inf bias is traced too. Inductor draws its
    # own random numbers unless told to fall back to torch's, so dropout gets the same mask in both (on
    # the CPU: CUDA's eager dropout is a fused kernel with its own random stream, so no dropout there).
    torch._dynamo.reset()
    torch.manual_seed(0)
    field_dims = [5, 7, 3, 4, 6, 2]
    model = create_model("afm", field_dims, interaction="afm_fused", embed_dim=8, attn_dim=8,
                         dropout=0.3 if device == "cpu" else 0.0).to(device)
    x = random_ids(field_dims, 40).to(device)
    with torch._inductor.config.patch(fallback_random=True):
        _assert_compiled_equals_eager(model, torch.compile(model), x, 1e-5, 1e-4)
