"""afm_kernel's builds for a chosen vector ISA ($CTRBENCH_AFM_KERNEL_ISA, build_for): an AVX2 build runs,
and equals the reference, on an AVX-512 machine too. The native build is test_fast_afm.py's and
test_afm_kernel_threads.py's; each ISA here is built once per session (build_status caches it)."""
import shutil

import pytest
import torch

from ctrbench.models.interactions import afm_kernel
from ctrbench.models.interactions.reference import attention_pooling_reference, pair_products_reference
from ctrbench.models.layers import PairAttention
from ctrbench.models.registry import interaction_entry

NO_COMPILER = shutil.which("c++") is None and shutil.which("g++") is None


def _native_isa():
    built = afm_kernel.build_for("native")
    return built.isa() if built is not None else None


@pytest.fixture(scope="module", params=["avx2", "avx512"])
def kernel(request):
    isa = request.param
    if NO_COMPILER:
        pytest.skip("no C++ compiler here")
    lacks = afm_kernel.cpu_lacks(isa)
    if lacks:
        pytest.skip(f"this CPU lacks {', '.join(sorted(lacks))}: it cannot run the {isa} build")
    if isa == "avx512" and _native_isa() == "avx512":
        pytest.skip("the native build is the AVX-512 one here (test_fast_afm.py tests it)")
    module, why = afm_kernel.build_status(isa)
    assert module is not None, why
    return module


@pytest.fixture
def use(kernel, monkeypatch):
    """afm_kernel's layers run this build."""
    monkeypatch.setattr(afm_kernel, "_build", lambda: (kernel, None))
    return kernel


def test_build_says_its_isa(kernel):
    assert kernel.isa() == kernel.isa_request
    assert kernel.label() == kernel.isa_request


def test_environment_variable_picks_the_build(kernel, monkeypatch):
    monkeypatch.setenv(afm_kernel.ISA_ENV, kernel.isa_request.upper())
    assert afm_kernel.requested_isa() == kernel.isa_request
    assert afm_kernel._build()[0] is kernel
    assert afm_kernel.kernel_isa() == kernel.isa_request
    module = interaction_entry("afm_kernel").builder(10)
    assert module.backend(torch.device("cpu"), torch.float32, 16, 16) == "afm_kernel"


def _step(module, attention, emb, grad_out, seed=3):
    torch.manual_seed(seed)
    out = module(emb, attention)
    return [out, *torch.autograd.grad(out, [emb, *attention.parameters()], grad_out)]


def _close(actual, expected, rtol):
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale + 1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("F,E,A", [(2, 16, 16), (10, 16, 16), (39, 16, 16), (7, 8, 5), (5, 13, 20), (4, 64, 64)])
def test_equals_reference(use, F, E, A, dtype):
    torch.manual_seed(0)
    attention = PairAttention(E, A, 0.3).to(dtype).train()
    emb = torch.randn(37, F, E, dtype=dtype, requires_grad=True)   # 37: not a multiple of any block
    grad_out = torch.randn(37, E, dtype=dtype)
    module = interaction_entry("afm_kernel").builder(F)
    got = _step(module, attention, emb, grad_out)
    expected = _step(attention_pooling_reference, attention, emb, grad_out)
    _close(got[0], expected[0], 1e-5)
    for g, r in zip(got[1:], expected[1:]):
        _close(g, r, 1e-4)
    _close(module.attention_weights(emb, attention), attention.weights(pair_products_reference(emb)), 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("E,A", [(16, 16), (8, 5)])
def test_backward_from_kept_relu_bits_equals_recomputing_them(kernel, E, A, dtype):
    torch.manual_seed(0)
    V = torch.randn(100, 9, E, dtype=dtype)
    W, b, h = torch.randn(A, E, dtype=dtype) * 0.3, torch.randn(A, dtype=dtype) * 0.1, torch.randn(A, dtype=dtype)
    mask = (torch.rand(100, 36) > 0.3).to(dtype) / 0.7
    g = torch.randn(100, E, dtype=dtype)
    out, weights, relu = kernel.forward(V, W, b, h, mask, False, True)
    out2, weights2, none = kernel.forward(V, W, b, h, mask, False, False)
    assert torch.equal(out, out2) and torch.equal(weights, weights2) and none.numel() == 0 and relu.numel() > 0
    kept = kernel.backward(V, W, b, h, weights, mask, g, relu)
    recomputed = kernel.backward(V, W, b, h, weights, mask, g, none)
    for x, y in zip(kept, recomputed):
        assert torch.equal(x, y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_operators_pass_torch_opcheck(kernel, dtype):
    # This build's fake tensors size the ReLU bits by its own lanes (8 float32 with AVX2, in uint8).
    torch.manual_seed(0)
    V, W, b, h = torch.randn(37, 9, 16, dtype=dtype), torch.randn(12, 16, dtype=dtype), \
        torch.randn(12, dtype=dtype), torch.randn(12, dtype=dtype)
    no_mask = V.new_empty(0)
    torch.library.opcheck(kernel.forward, (V, W, b, h, no_mask, False, True))
    _, weights, relu = kernel.forward(V, W, b, h, no_mask, False, True)
    torch.library.opcheck(kernel.backward, (V, W, b, h, weights, no_mask, torch.randn(37, 16, dtype=dtype), relu))


def test_same_bits_at_any_thread_count(use):
    torch.manual_seed(0)
    attention = PairAttention(16, 16, 0.2).train()
    emb = torch.randn(1000, 39, 16, requires_grad=True)
    grad_out = torch.randn(1000, 16)
    module = interaction_entry("afm_kernel").builder(39)
    previous = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 3):
            torch.set_num_threads(n)
            runs.append(_step(module, attention, emb, grad_out))
    finally:
        torch.set_num_threads(previous)
    for got, expected in zip(runs[1], runs[0]):
        assert torch.equal(got, expected)


def test_a_build_the_cpu_cannot_run_is_not_made(monkeypatch):
    monkeypatch.setattr(afm_kernel, "distinct_cores", lambda: ["Old CPU||fpu sse sse2"])
    assert afm_kernel.cpu_lacks("avx2") == {"avx2", "fma"}
    assert afm_kernel.cpu_lacks("native") == set()
    module, why = afm_kernel.build_status.__wrapped__("avx512")
    assert module is None and "lacks" in why and "avx512f" in why


def test_an_unknown_isa_is_refused_with_a_reason(monkeypatch):
    monkeypatch.setenv(afm_kernel.ISA_ENV, "sse9")
    module, why = afm_kernel.build_status(afm_kernel.requested_isa())
    assert module is None and "sse9" in why
    assert afm_kernel.build_for("sse9") is None
