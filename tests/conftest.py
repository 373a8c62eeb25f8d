import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np
import pytest

# --- afm_kernel: built once per session, in the background, into one folder every process shares ----------
#
# afm_kernel's C++ build takes 20-40 s on 2 cores (once per source and CPU; then cached on disk). The first
# test that needs it would wait for all of it; instead the session starts the build in a child process
# as soon as the tests are collected (only when a cached build is missing and the selection uses it:
# the native build, and the AVX2 one test_afm_kernel_isa.py loads; under pytest-xdist, worker gw0 alone
# starts it), and every module with a test that needs a build runs last. A test that needs the kernel
# sooner waits on torch's own build lock and then loads the child's build; nothing builds twice. The build
# folder is pinned in $CTRBENCH_BUILD_DIR for the session, so every subprocess (the gate's, the suite's,
# torchrun's ranks) and a test that moves $XDG_CACHE_HOME all load that one build.

# modules that need a build from their first test (besides every test whose id names afm_kernel)
KERNEL_LAST = ("test_afm_kernel_isa.py", "test_afm_kernel_threads.py", "test_auto_interaction.py")
ISA_BUILDS = {"test_afm_kernel_isa.py": ("avx2", "avx512")}     # builds for a chosen ISA these modules load
_prebuild: subprocess.Popen | None = None
PREBUILD = """
import sys
from ctrbench.models.interactions import afm_kernel
afm_kernel.kernel_status()                      # the native build, which most tests use
for isa in sys.argv[1:]:
    afm_kernel.build_status(isa)
"""


def afm_kernel_build_cached(isa: str = "native") -> bool:
    """Whether afm_kernel's build for this source (and ISA; for "native" this CPU) is already in its
    folder, under the name the kernel's own build gives it (if that ever changes, this only starts a
    needless background check)."""
    from ctrbench.models.interactions import afm_kernel
    isa_flags = getattr(afm_kernel, "ISA_FLAGS", {}).get(isa, ["-march=native"] if isa == "native" else None)
    if isa_flags is None:
        return True                                 # an ISA this kernel does not know: nothing to build
    flags = ["-O3", *isa_flags, *afm_kernel.openmp_flags()]
    digest = hashlib.sha256(afm_kernel.SOURCE.read_bytes() + " ".join(flags).encode()).hexdigest()[:10]
    name = f"ctrbench_afm_kernel_{afm_kernel.machine_key() if isa == 'native' else isa}_{digest}"
    return (afm_kernel.build_dir() / name / f"{name}.so").exists()


def _needs_kernel(item) -> bool:
    return item.path.name in KERNEL_LAST or "afm_kernel" in item.nodeid


def _isa_builds(items) -> list[str]:
    """The ISA builds (besides the native one) that the selected tests load and this CPU can run."""
    from ctrbench.models.interactions import afm_kernel
    if not hasattr(afm_kernel, "build_status") or not hasattr(afm_kernel, "cpu_lacks"):
        return []
    wanted = {isa for item in items for isa in ISA_BUILDS.get(item.path.name, ())}
    # where the native build is that ISA already, its tests skip the ISA's own build
    wanted.discard(torch_cpu_capability())
    return sorted(isa for isa in wanted if not afm_kernel.cpu_lacks(isa) and not afm_kernel_build_cached(isa))


def torch_cpu_capability() -> str:
    import torch
    return torch.backends.cpu.get_cpu_capability().lower()


XDIST_WORKER = None      # this process's pytest-xdist worker id ("gw0", ...); None without -n


def pytest_configure(config):
    global XDIST_WORKER
    XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
    # The pytest, gate and suite runs that tests start are runs of their own, not xdist workers (with the
    # worker's variables pytest-benchmark would switch itself off in them).
    for name in [name for name in os.environ if name.startswith("PYTEST_XDIST_")]:
        del os.environ[name]
    # Inductor's first compile on a machine dry-compiles a test program per vector ISA the CPU reports
    # (~20 s of g++ on 2 cores, paid by every process that compiles before one has cached the result); the
    # CPU's flags alone pick the same ISA wherever the compiler can build for it, as on the machines this
    # suite runs on. Set before anything imports torch._inductor's config, here and in every child process.
    os.environ.setdefault("TORCHINDUCTOR_VEC_ISA_OK", "1")
    if XDIST_WORKER:
        # Workers share the cores: one torch thread each (and in the processes they start), since two
        # OpenMP pools spinning over the same two cores slow each other 5-10x.
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import torch
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    global _prebuild
    from ctrbench.models.interactions import afm_kernel
    os.environ.setdefault(afm_kernel.BUILD_DIR_ENV, str(afm_kernel.build_dir()))
    # whole modules move (their module-scoped fixtures are made once), in their own order
    kernel_modules = {item.path for item in items if _needs_kernel(item)}
    items[:] = ([item for item in items if item.path not in kernel_modules]
                + [item for item in items if item.path in kernel_modules])
    if XDIST_WORKER not in (None, "gw0"):
        return                                      # under pytest-xdist one worker starts the build for all
    needing = [item for item in items if _needs_kernel(item)]
    if not needing or len(needing) == len(items) or _prebuild is not None:
        return
    isas = _isa_builds(items)
    if isas or not afm_kernel_build_cached():
        _prebuild = subprocess.Popen([sys.executable, "-c", PREBUILD, *isas], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pytest_sessionfinish(session, exitstatus):
    """Never kill a build half-way (it would leave torch's lock file behind): let it finish."""
    if _prebuild is not None and _prebuild.poll() is None:
        try:
            _prebuild.wait(timeout=600)
        except subprocess.TimeoutExpired:
            pass


# --- `python -m ...` entry points, all in one fresh interpreter ----------------------------------------

FRESH_HELP = """
import contextlib, io, json, runpy, sys
results = []
for module, argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [module, *argv]
    code = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as stop:
            code = stop.code
    results.append({"module": module, "argv": argv, "code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(results))
"""


def run_entry_points(calls: list[tuple[str, list[str]]]) -> list[dict]:
    """Each `python -m MODULE ARGV...` of `calls` run as `-m` runs it (runpy, as __main__), one after the
    other in ONE fresh Python: {"code" (SystemExit's), "stdout", "stderr"} for each. Importing torch and
    ctrbench costs seconds per process; `--help` of a dozen entry points need not pay it a dozen times."""
    done = subprocess.run([sys.executable, "-c", FRESH_HELP, json.dumps(calls)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


HELP_CALLS = [("ctrbench", [*command, "--help"]) for command in
              ([], ["run"], ["leaderboard"], ["list"], ["attention"], ["gate"], ["gate-baseline"], ["download"])]
HELP_CALLS.append(("ctrbench", ["measure", "device_sweep", "--help"]))


@pytest.fixture(scope="session")
def entry_point_helps() -> dict[tuple[str, ...], dict]:
    """`--help` of every `python -m` entry point the tests read, from one fresh process, keyed by
    (module, *argv)."""
    return {(module, *argv): result for (module, argv), result in
            zip(HELP_CALLS, run_entry_points(HELP_CALLS))}


@dataclass
class TinyDataset:
    """A dataset in the shape `ctrbench.datasets.load` returns, with one planted pair, for protocol tests."""
    X: np.ndarray
    y: np.ndarray
    field_dims: list
    field_names: list
    splits: dict
    name: str = "tiny"
    options: dict = field(default_factory=dict)
    truth: dict | None = None

    def split(self, name):
        index = self.splits[name]
        return self.X[index], self.y[index]


def make_tiny_dataset(rows=3000, field_dims=(4, 5, 3, 6), seed=0) -> TinyDataset:
    rng = np.random.default_rng(seed)
    local = np.stack([rng.integers(0, d, rows) for d in field_dims], axis=1)
    logit = 2.0 * ((local[:, 0] % 2) == (local[:, 1] % 2)) - 1.0 + 0.3 * rng.standard_normal(rows)
    y = (rng.random(rows) < 1 / (1 + np.exp(-2 * logit))).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(field_dims)[:-1]])
    order = rng.permutation(rows)
    cut1, cut2 = int(rows * 0.8), int(rows * 0.9)
    return TinyDataset(X=(local + offsets).astype(np.int64), y=y, field_dims=list(field_dims),
                       field_names=[f"f{i}" for i in range(len(field_dims))],
                       splits={"train": order[:cut1], "validation": order[cut1:cut2], "test": order[cut2:]},
                       options={"rows": rows, "seed": seed})


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """The test writes preprocessed arrays to its own folder, never to ~/.cache (a module opts in
    with `pytestmark = pytest.mark.usefixtures("private_cache")`)."""
    monkeypatch.setenv("CTRBENCH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def generated_criteo(tmp_path_factory):
    """3000 generated rows in Kaggle's Criteo layout (~740 kB), written once per session."""
    from ctrbench.datasets.synthetic import write_criteo_tsv
    return write_criteo_tsv(tmp_path_factory.mktemp("criteo") / "train.txt", 3000, seed=0)


@pytest.fixture
def tiny_dataset():
    return make_tiny_dataset()


def away_from_relu_kink(attention, emb) -> None:
    """Set AFM's hidden bias b so that no hidden unit z = W q + b of these embeddings' pair products
    q lies near ReLU's kink: b_a = ±1.5 max |W_a q| (signs alternate, so units are on and off), hence
    |z_a| >= 0.5 max |W_a q|. At GPU sizes (millions of z) a few z otherwise lie within float32 (or
    TF32) rounding of 0, and which side they fall on depends on the order of the sums: two correct
    implementations then differ in those samples' gradients by far more than rounding (seen on an
    H200: 14 of 2.6M embedding-gradient elements, 8.6e-4 of the largest, in one sample's two fields).
    Pinned away from the kink, any difference is arithmetic. W, and so the attention's variation over
    pairs, is left as it was."""
    import torch

    from ctrbench.models.interactions.reference import pair_products_reference
    with torch.no_grad():
        hidden = attention.hidden
        reach = (pair_products_reference(emb) @ hidden.weight.T).abs().amax(dim=(0, 1))     # (A,)
        signs = torch.ones_like(reach)
        signs[1::2] = -1
        hidden.bias.copy_(1.5 * signs * reach)


def gradient_floor(k: int, ref_grads, num_fields: int, pinned: bool) -> float:
    """The scale below which the k-th of AFM pooling's gradients (emb, W, b, h) is rounding noise.

    With F = 2 the single weight is 1 whatever the attention net does, so the net's gradients are 0
    up to rounding: held to the embeddings' gradient scale. Pinned away from ReLU's kink
    (`away_from_relu_kink`), each hidden unit is on for every pair or for none, and the softmax's
    gradients sum to 0 over the pairs, so b's gradient is 0 up to rounding: held to W's scale."""
    if num_fields == 2 and k > 0:
        return ref_grads[0].abs().max().item()
    if pinned and k == 2:
        return ref_grads[1].abs().max().item()
    return 0.0


def assert_whole_afm_matches_triu_index(interaction: str, field_dims: list[int], batch: int):
    """AFM with `interaction` against AFM with triu_index, same weights (seed 0, E = A = 8), on the same
    random ids and dropout seed: logits, every parameter's gradient of sum(logits²) and the attention
    weights agree (forward 1e-5, gradients 1e-4 of the largest exact value). Returns the fast model."""
    import torch

    from ctrbench.measure.cells import random_ids
    from ctrbench.models import create_model

    def close(actual, expected, rtol):
        torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * expected.abs().max().item() + 1e-12)

    torch.manual_seed(0)
    fast = create_model("afm", field_dims, interaction=interaction, embed_dim=8, attn_dim=8)
    slow = create_model("afm", field_dims, interaction="triu_index", embed_dim=8, attn_dim=8)
    slow.load_state_dict(fast.state_dict())
    x = random_ids(field_dims, batch)
    results = []
    for model in (fast, slow):
        torch.manual_seed(11)
        logits = model(x)
        logits.square().sum().backward()
        results.append((logits, [p.grad for p in model.parameters()], model.attention_weights(x)))
    close(results[0][0], results[1][0], 1e-5)
    for g, r in zip(results[0][1], results[1][1]):
        close(g, r, 1e-4)
    close(results[0][2], results[1][2], 1e-5)
    return fast


def assert_seeded_dropout(call) -> None:
    """`call()` (a module with dropout, in training) gives the same result under the same seed and
    another under another seed."""
    import torch
    torch.manual_seed(3)
    first = call()
    torch.manual_seed(3)
    again = call()
    torch.manual_seed(4)
    other = call()
    assert torch.equal(first, again) and not torch.allclose(first, other)
