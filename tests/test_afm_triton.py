"""`afm_triton` / `afm_triton_tf32` (Triton kernels) against the plain definition in interactions/reference.py.

Without a GPU the kernels run under Triton's interpreter on CPU tensors. Triton fixes its mode when it
is first imported (TRITON_INTERPRET decides how its own library functions are wrapped), and in a full
test session something else (torch.compile) imports it first; so `test_interpreter_tests_pass_in_a_fresh_process`
runs the `..._under_the_interpreter` tests of this file in a fresh Python with TRITON_INTERPRET=1 set
from the start, and this process keeps triton compiled (for the CUDA tests at the end). The interpreter
runs each program's loops in Python: shapes there are small.
"""
import importlib.util
import io
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import assert_seeded_dropout, assert_whole_afm_matches_triu_index, away_from_relu_kink, gradient_floor

from ctrbench.measure.cells import random_ids
from ctrbench.models import create_model, running_backend
from ctrbench.models.interactions import afm_triton
from ctrbench.models.interactions.afm_fused import FusedAttentionPooling
from ctrbench.models.interactions.reference import attention_pooling_reference, pair_products_reference
from ctrbench.models.layers import PairAttention
from ctrbench.models.registry import interaction_entry

HAS_TRITON = importlib.util.find_spec("triton") is not None
UNDER_INTERPRETER = HAS_TRITON and afm_triton.interpreter_requested()
if HAS_TRITON:
    import triton  # noqa: F401  (fixes triton's mode for this process now: the one TRITON_INTERPRET says)
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install 'ctrbench[triton]')")
interpreted = pytest.mark.skipif(not UNDER_INTERPRETER, reason="runs in a fresh process with TRITON_INTERPRET=1 "
                                                              "(test_interpreter_tests_pass_in_a_fresh_process)")
needs_cuda = pytest.mark.skipif(not (HAS_TRITON and torch.cuda.is_available()) or UNDER_INTERPRETER,
                                reason="needs triton, compiled, and a CUDA device")
EXACT = (1e-5, 1e-4)
ROOT = Path(__file__).resolve().parents[1]


@needs_triton
@pytest.mark.skipif(UNDER_INTERPRETER, reason="this process is the interpreter run")
def test_interpreter_tests_pass_in_a_fresh_process():
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k",
                             "under_the_interpreter", str(Path(__file__).resolve())],
                            env={**os.environ, "TRITON_INTERPRET": "1"}, cwd=ROOT, capture_output=True,
                            text=True, timeout=900)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert re.search(r"\d+ passed", summary) and "skipped" not in summary, summary


@pytest.fixture
def interpreter(monkeypatch):
    """Proof that the Triton path ran: the afm_fused fallback raises."""
    def fallback(*args, **kwargs):
        raise AssertionError("afm_fused ran instead of the Triton kernels")

    monkeypatch.setattr(FusedAttentionPooling, "forward", fallback)
    monkeypatch.setattr(FusedAttentionPooling, "attention_weights", fallback)


@pytest.fixture
def fresh_warning(monkeypatch):
    monkeypatch.setattr(afm_triton.TritonAttentionPooling, "_warned", False)


def _setup(name, F, E, A, B, p, train=True, device="cpu", dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    attention = PairAttention(E, A, p).to(device, dtype).train(train)
    emb = torch.randn(B, F, E, device=device, dtype=dtype, requires_grad=True)
    return interaction_entry(name).builder(F).to(device), attention, emb


def _value_and_grads(fn, emb, attention, grad_out, seed):
    torch.manual_seed(seed)
    out = fn(emb, attention)
    after = torch.rand((), device=emb.device)          # the next random number: same RNG consumption
    grads = torch.autograd.grad(out, [emb, *attention.parameters()], grad_out)
    return out, grads, after


def _close(actual, expected, rtol, floor=0.0):
    scale = max(expected.abs().max().item() if expected.numel() else 0.0, floor)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale + 1e-12)


def _check_against_reference(module, attention, emb, tolerance=EXACT, seed=7, pinned=False):
    grad_out = torch.randn(emb.shape[0], emb.shape[2], device=emb.device)
    out, grads, after = _value_and_grads(module, emb, attention, grad_out, seed)
    ref, ref_grads, ref_after = _value_and_grads(attention_pooling_reference, emb, attention, grad_out, seed)
    _close(out, ref, tolerance[0])
    for k, (g, r) in enumerate(zip(grads, ref_grads)):
        _close(g, r, tolerance[1], floor=gradient_floor(k, ref_grads, emb.shape[1], pinned))
    assert torch.equal(after, ref_after)
    weights = module.attention_weights(emb, attention)
    _close(weights, attention.weights(pair_products_reference(emb)), tolerance[0])
    return out, grads


# F = 2, 3, 10; E, A below, at and past 16 and not powers of two (padded to 16 / 32); B below one block
# (16 under the interpreter), one exact block, and ragged past one or two; dropout on and off, eval mode.
CASES = [  # F, E, A, B, dropout, train
    (2, 8, 8, 5, 0.3, True),
    (3, 16, 16, 16, 0.0, True),
    (3, 1, 5, 9, 0.5, True),
    (10, 5, 12, 37, 0.3, True),
    (10, 16, 16, 33, 0.5, True),
    (6, 20, 3, 17, 0.2, True),
    (10, 16, 16, 20, 0.3, False),
]


@interpreted
@pytest.mark.parametrize("F,E,A,B,p,train", CASES)
def test_equals_reference_under_the_interpreter(interpreter, F, E, A, B, p, train):
    module, attention, emb = _setup("afm_triton", F, E, A, B, p, train)
    assert module.backend(emb.device, emb.dtype, E, A) == "afm_triton (Triton interpreter)"
    _check_against_reference(module, attention, emb)


@interpreted
def test_tf32_mode_within_its_declared_tolerance_under_the_interpreter(interpreter):
    # The interpreter computes tl.dot exactly, so this proves the mode's code path and bookkeeping; the
    # CUDA test below measures TF32 itself against the same declared bound.
    assert interaction_entry("afm_triton_tf32").tolerance == afm_triton.TF32_TOLERANCE
    assert interaction_entry("afm_triton").tolerance is None
    module, attention, emb = _setup("afm_triton_tf32", 10, 16, 16, 21, 0.3)
    assert module.precision == "tf32"
    assert module.backend(emb.device, emb.dtype, 16, 16) == "afm_triton_tf32 (Triton interpreter)"
    _check_against_reference(module, attention, emb, afm_triton.TF32_TOLERANCE)


@interpreted
def test_dropout_same_seed_same_result_under_the_interpreter(interpreter):
    module, attention, emb = _setup("afm_triton", 6, 8, 8, 18, 0.5)
    assert_seeded_dropout(lambda: module(emb, attention))


@interpreted
def test_gradients_deterministic_under_the_interpreter(interpreter):
    module, attention, emb = _setup("afm_triton", 7, 8, 16, 40, 0.2)
    grad_out = torch.randn(40, 8)
    first = _value_and_grads(module, emb, attention, grad_out, 1)
    again = _value_and_grads(module, emb, attention, grad_out, 1)
    assert all(torch.equal(a, b) for a, b in zip(first[1], again[1]))


@interpreted
def test_whole_model_matches_triu_index_under_the_interpreter(interpreter):
    fast = assert_whole_afm_matches_triu_index("afm_triton", [5, 7, 3, 4, 6, 2], 23)
    assert running_backend(fast) == "afm_triton (Triton interpreter)"


@interpreted
def test_saves_no_pair_sized_activations_under_the_interpreter(interpreter):
    module, attention, emb = _setup("afm_triton", 10, 16, 16, 32, 0.2)
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = tuple(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(emb, attention)
    B, F, E, A, P = 32, 10, 16, 16, 45
    # V, the attention net's W, b, h, the dropout mask, the output and the logsumexp: nothing (B, P, ·).
    assert sorted(saved.values()) == sorted([(B, F, E), (A, E), (A,), (A,), (B, P), (B, E), (B,)])



@interpreted
def test_a_model_unpickled_where_no_layer_was_built_runs_triton_under_the_interpreter(interpreter, monkeypatch):
    model = create_model("afm", [4, 5, 3, 6], interaction="afm_triton", embed_dim=8, attn_dim=8).eval()
    ids = random_ids([4, 5, 3, 6], 21)
    expected = model(ids)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    monkeypatch.setattr(afm_triton, "_pool_outside_graphs", None)      # as in a fresh process
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(loaded(ids), expected)

# The fallback: afm_fused runs, says so once, and backend() names it.

def test_cpu_without_the_interpreter_runs_afm_fused_and_warns_once(monkeypatch, fresh_warning):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    module, attention, emb = _setup("afm_triton", 6, 8, 8, 12, 0.3)
    assert module.backend(emb.device, emb.dtype, 8, 8).startswith("afm_fused (afm_triton runs on CUDA")
    with pytest.warns(UserWarning, match="running afm_fused instead: afm_triton runs on CUDA"):
        _check_against_reference(module, attention, emb)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module(emb, attention)            # once per process, not per call


def test_without_triton_it_runs_afm_fused_and_says_why(monkeypatch, fresh_warning):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(afm_triton, "triton_status", lambda: (False, "ModuleNotFoundError: No module named 'triton'"))
    model = create_model("afm", [4, 5, 3, 6], interaction="afm_triton_tf32", embed_dim=8, attn_dim=8)
    assert running_backend(model).startswith("afm_fused (triton is not importable (ModuleNotFoundError")
    module, attention, emb = _setup("afm_triton", 4, 8, 8, 10, 0.3)
    with pytest.warns(UserWarning, match="triton is not importable"):
        _check_against_reference(module, attention, emb)


@pytest.mark.parametrize("dtype,E,why", [(torch.float64, 8, "takes float32"), (torch.float32, 65, "E, A <= 64")])
def test_other_dtypes_and_sizes_run_afm_fused(monkeypatch, fresh_warning, dtype, E, why):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    module, attention, emb = _setup("afm_triton", 5, E, 8, 9, 0.3, dtype=dtype)
    backend = module.backend(emb.device, dtype, E, 8)
    assert backend.startswith("afm_fused (afm_triton ") and why in backend
    with pytest.warns(UserWarning, match=why):
        _check_against_reference(module, attention, emb)


@needs_triton
@pytest.mark.skipif(UNDER_INTERPRETER, reason="triton was imported under the interpreter here")
def test_interpreter_asked_for_after_triton_was_imported_runs_afm_fused_and_says_why(monkeypatch, fresh_warning):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    module, attention, emb = _setup("afm_triton", 4, 8, 8, 10, 0.3)
    assert "needs TRITON_INTERPRET=1 before triton is first imported" in module.backend(emb.device, emb.dtype, 8, 8)
    with pytest.warns(UserWarning, match="before triton is first imported"):
        _check_against_reference(module, attention, emb)


def test_a_whole_afm_triton_model_pickles_and_predicts_the_same():
    model = create_model("afm", [4, 5, 3, 6], interaction="afm_triton", embed_dim=8, attn_dim=8).eval()
    ids = random_ids([4, 5, 3, 6], 32)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # "running afm_fused instead" where Triton cannot run
        assert torch.equal(loaded(ids), model(ids))


def test_the_package_imports_and_trains_without_triton():
    # triton is an optional extra: hide it and the whole package must still import and run afm_triton.
    code = (
        "import sys, importlib.abc\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'triton' or name.startswith('triton.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, Hide())\n"
        "import warnings, torch\n"
        "from ctrbench.models import create_model, running_backend\n"
        "model = create_model('afm', [3, 4, 5], interaction='afm_triton', embed_dim=4, attn_dim=4)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    model(torch.tensor([[0, 3, 7], [2, 6, 11]])).sum().backward()\n"
        "assert 'triton' not in sys.modules, 'triton was imported'\n"
        "print(running_backend(model)); print(caught[0].message)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TRITON_INTERPRET": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    backend, warning = result.stdout.strip().splitlines()
    assert backend.startswith("afm_fused (triton is not importable (ModuleNotFoundError")
    assert "running afm_fused instead: triton is not importable" in warning


# On a GPU: the compiled kernels at real shapes (the reference in exact float32: no TF32 in torch).

@needs_cuda
@pytest.mark.parametrize("name", ["afm_triton", "afm_triton_tf32"])
@pytest.mark.parametrize("F,B", [(39, 4096 + 37), (100, 4096 + 5), (39, 16384 + 3)])
@pytest.mark.parametrize("p", [0.0, 0.2])
def test_equals_reference_on_cuda(name, F, B, p, monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    module, attention, emb = _setup(name, F, 16, 16, B, p, device="cuda")
    assert module.backend(emb.device, emb.dtype, 16, 16) == name
    away_from_relu_kink(attention, emb)
    _check_against_reference(module, attention, emb, interaction_entry(name).tolerance or EXACT, pinned=True)


@needs_cuda
@pytest.mark.parametrize("F,E,A,B", [(3, 8, 24, 77), (10, 1, 5, 300), (13, 64, 64, 1000), (2, 16, 16, 1)])
def test_padded_sizes_on_cuda(F, E, A, B, monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    module, attention, emb = _setup("afm_triton", F, E, A, B, 0.3, device="cuda")
    _check_against_reference(module, attention, emb)


@needs_cuda
def test_deterministic_and_model_backend_on_cuda():
    torch.manual_seed(0)
    field_dims = [50] * 39
    model = create_model("afm", field_dims, interaction="afm_triton").cuda()
    assert running_backend(model) == "afm_triton"
    x = random_ids(field_dims, 8192 + 11).cuda()
    grads = []
    for _ in range(2):
        model.zero_grad()
        torch.manual_seed(1)
        model(x).square().sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))
