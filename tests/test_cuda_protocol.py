"""The protocol on a GPU (skipped without one): the same order, numbers close to the CPU's, CUDA
peak memory and the GPU in the record, compiled and eager alike."""
import pytest
import torch
from conftest import make_tiny_dataset

from ctrbench.datasets.batching import batches
from ctrbench.training.protocol import RunSpec, run_one
from ctrbench.training.train import TrainConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CONFIG = TrainConfig(max_epochs=3, batch_size=256, patience=3)


def test_a_seed_gives_the_same_order_on_the_gpu_as_on_the_cpu():
    X = torch.arange(1003).unsqueeze(1)
    y = torch.zeros(1003)
    orders = [torch.cat([xb[:, 0].cpu() for xb, _ in batches(X.to(device), y.to(device), 100, shuffle=True,
                                                             generator=torch.Generator().manual_seed(7))])
              for device in ("cpu", "cuda")]
    assert torch.equal(*orders)


@pytest.mark.parametrize("model_name,interaction,compile", [
    ("fm", "sum_square", False), ("nfm", "sum_square", False), ("afm", "afm_kernel", False),
    ("afm", "triu_index", True)])
def test_a_gpu_run_records_cuda_memory_and_the_gpu_and_trains_like_the_cpu(model_name, interaction, compile):
    dataset = make_tiny_dataset()
    hparams = {"dropout": 0.0} if model_name == "afm" else {}
    on_gpu = run_one(RunSpec("tiny", model_name, interaction, 0, hparams, config=CONFIG, device="cuda",
                             compile=compile), dataset)
    assert on_gpu["memory"]["cuda_peak_bytes"] > 0 and on_gpu["memory"]["warmup_cuda_peak_bytes"] > 0
    assert all(h["cuda_peak_bytes"] > 0 for h in on_gpu["history"])
    gpu = on_gpu["environment"]["gpu"]
    assert gpu["name"] == torch.cuda.get_device_name() and gpu["cuda_runtime"] == torch.version.cuda
    # afm_kernel is CPU-only: on the GPU it runs afm_fused, and the record says so (and why).
    assert on_gpu["running_backend"].startswith("afm_fused" if interaction == "afm_kernel" else interaction)
    assert on_gpu["compile"] is compile and on_gpu["warmup_seconds"] > 0
    # NFM's dropout draws differ between devices; afm_kernel would build its C++ kernel on the CPU.
    if model_name != "nfm" and interaction != "afm_kernel":
        on_cpu = run_one(RunSpec("tiny", model_name, interaction, 0, hparams, config=CONFIG), dataset)
        assert on_gpu["history"][0]["loss"] == pytest.approx(on_cpu["history"][0]["loss"], rel=1e-4)
        assert on_gpu["test"]["auc"] == pytest.approx(on_cpu["test"]["auc"], abs=1e-3)
