"""Data-parallel training through torchrun (gloo on loopback): same numbers as one process with the
same global batch, one writer, and a failing or hung rank ends the whole job non-zero, never hangs."""
import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import make_tiny_dataset
from torch import nn

from ctrbench.datasets.batching import batches
from ctrbench.models import create_model
from ctrbench.training.distributed import backend_for, launched_by_torchrun
from ctrbench.training.protocol import RunSpec, run_one
from ctrbench.training.train import TrainConfig

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")

# FM with a global batch that does not split evenly (333 -> 166 + 167; last batch 203 -> 101 + 102),
# a large enough lr and patience 1 so that early stopping ends the run before max_epochs.
ROWS, SEED = 4000, 0
CONFIG = TrainConfig(max_epochs=6, batch_size=333, lr=0.02, patience=1)
# Ranks sum their shares in a different order than one process sums the whole batch; measured
# differences are ~1e-7 on losses and 0 to 1e-8 on AUC/logloss. FM has no dropout or BatchNorm.
TOLERANCE = 1e-5
JOB_TIMEOUT_S = 120          # hard limit on each torchrun subprocess: a hang fails the test, not CI


# -- the sharding arithmetic, in process ------------------------------------------------------------

def test_row_shards_of_each_step_make_up_the_single_process_batch():
    X = torch.arange(1003).unsqueeze(1)
    y = torch.arange(1003).float()
    single = [xb[:, 0] for xb, _ in batches(X, y, 100, shuffle=True, generator=torch.Generator().manual_seed(3))]
    for world_size in (2, 3):
        shards = [[xb[:, 0] for xb, _ in batches(X, y, 100, shuffle=True, generator=torch.Generator().manual_seed(3),
                                                 rank=r, world_size=world_size, shard="rows")]
                  for r in range(world_size)]
        assert all(len(s) == len(single) for s in shards)
        for step, whole in enumerate(single):
            parts = [shards[r][step] for r in range(world_size)]
            torch.testing.assert_close(torch.cat(parts), whole)
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_world_size_one_and_batch_sharding_are_unchanged():
    X, y = torch.arange(50).unsqueeze(1), torch.arange(50).float()
    plain = [xb for xb, _ in batches(X, y, 8, shuffle=True, generator=torch.Generator().manual_seed(1))]
    rows = [xb for xb, _ in batches(X, y, 8, shuffle=True, generator=torch.Generator().manual_seed(1), shard="rows")]
    assert all(torch.equal(a, b) for a, b in zip(plain, rows)) and len(plain) == len(rows) == 7
    rank1 = [xb for xb, _ in batches(X, y, 8, shuffle=True, generator=torch.Generator().manual_seed(1),
                                     rank=1, world_size=2)]
    assert all(torch.equal(a, b) for a, b in zip(rank1, plain[1::2]))
    with pytest.raises(ValueError, match="shard"):
        next(batches(X, y, 8, shard="cells"))


def test_scaled_share_losses_average_to_the_batch_mean_gradient():
    """What DDP computes (mean over ranks of each rank's gradient of sum-loss * N / B) is the
    single-process gradient of the mean loss over the whole batch, also for unequal shares."""
    torch.manual_seed(0)
    data = make_tiny_dataset(rows=200)
    model = create_model("fm", data.field_dims)
    X, y = (torch.as_tensor(a) for a in data.split("train"))
    X, y = X[:101], y[:101]
    model.zero_grad()
    nn.BCEWithLogitsLoss()(model(X), y).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    world_size, total = 3, [torch.zeros_like(p) for p in model.parameters()]
    for rank in range(world_size):
        (xb, yb), = batches(X, y, 101, rank=rank, world_size=world_size, shard="rows")
        model.zero_grad()
        (nn.BCEWithLogitsLoss(reduction="sum")(model(xb), yb) * world_size / 101).backward()
        total = [t + p.grad / world_size for t, p in zip(total, model.parameters())]
    for got, want in zip(total, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_a_distributed_run_is_its_own_cell_and_single_process_keys_are_unchanged():
    single = RunSpec("purchase", "fm", "sum_square", 0)
    assert "world_size" not in single.identity()
    assert RunSpec("purchase", "fm", "sum_square", 0, world_size=2).key() != single.key()
    assert backend_for("cpu") == "gloo" and backend_for("cuda:0") == "nccl"
    assert not launched_by_torchrun({}) and launched_by_torchrun({"WORLD_SIZE": "2"})
    assert launched_by_torchrun({"WORLD_SIZE": "1", "TORCHELASTIC_RUN_ID": "none"})    # --nproc_per_node=1


# -- two gloo processes on 127.0.0.1 ----------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Run by torchrun in place of `-m ctrbench` when a test needs a failing rank: it makes rank FAIL_RANK
# raise (or hang) at its first evaluation, then runs the ordinary CLI. The product has no such switch.
FAILING_RANK_SCRIPT = """
import sys, time
import torch.distributed as dist
from ctrbench import commands as cli
from ctrbench.training import distributed

mode = sys.argv.pop(1)
evaluate = distributed.Distributed.evaluate


def failing_evaluate(self, *args, **kwargs):
    if self.rank == 1:
        if mode == "hang":
            time.sleep(24 * 3600)
        raise RuntimeError("rank 1: failure injected at evaluation 1")
    return evaluate(self, *args, **kwargs)


distributed.Distributed.evaluate = failing_evaluate
sys.exit(cli.main())
"""


def torchrun(results_dir, *extra, failure=None, timeout_s=JOB_TIMEOUT_S, nproc=2):
    """`nproc` (two) gloo ranks on loopback running `ctrbench run` on tiny purchase; `failure` "raise"
    or "hang" makes rank 1 fail at its first evaluation."""
    results_dir.parent.mkdir(parents=True, exist_ok=True)
    if failure:
        script = results_dir.parent / "failing_rank.py"
        script.write_text(FAILING_RANK_SCRIPT)
        target = [str(script), failure]
    else:
        target = ["-m", "ctrbench"]
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}",
               *target, "run", "--dataset", "purchase", "--data-option", f"rows={ROWS}",
               "--models", "fm", "--seeds", f"{SEED},", "--max-epochs", str(CONFIG.max_epochs),
               "--batch-size", str(CONFIG.batch_size), "--lr", str(CONFIG.lr), "--patience", str(CONFIG.patience),
               "--results-dir", str(results_dir), "--quiet", *extra]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CTRBENCH_DIST")}
    environ["OMP_NUM_THREADS"] = "1"
    if sys.platform.startswith("linux"):
        environ["GLOO_SOCKET_IFNAME"] = "lo"          # loopback only
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=environ,
                          cwd=results_dir.parent)
    return done, time.monotonic() - start


def single_process_record(spec):
    """The record of `spec` run in this process, on one thread like each torchrun rank."""
    from ctrbench.datasets import load

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_one(spec, load("purchase", seed=SEED, rows=ROWS))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process_with_the_same_global_batch(tmp_path):
    done, _ = torchrun(tmp_path / "results", "--dist-timeout", "60")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("[1/1] fm/sum_square seed 0") == 1          # only rank 0 prints
    files = list((tmp_path / "results" / "runs" / "purchase").iterdir())
    assert len(files) == 1 and not files[0].name.startswith(".")      # only rank 0 writes
    assert (tmp_path / "results" / "leaderboard.md").exists()
    record = json.loads(files[0].read_text())
    assert record["world_size"] == 2 and record["backend"] == "gloo"
    spec = RunSpec("purchase", "fm", "sum_square", SEED, {}, {"rows": ROWS}, CONFIG, "cpu")
    assert record["key"] == dataclasses.replace(spec, world_size=2).key()

    single = single_process_record(spec)
    assert record["epochs_run"] == single["epochs_run"] < CONFIG.max_epochs      # early stopping fired
    assert record["best_epoch"] == single["best_epoch"]
    for ours, theirs in zip(record["history"], single["history"]):
        for name in ("loss", "val_auc", "val_logloss"):
            assert ours[name] == pytest.approx(theirs[name], abs=TOLERANCE), (ours, theirs)
    for split in ("validation", "test"):
        for name in ("auc", "logloss"):
            assert record[split][name] == pytest.approx(single[split][name], abs=TOLERANCE)
    assert record["train_samples_per_s"] > 0 and record["rows"]["train"] == single["rows"]["train"]


@pytest.mark.slow
def test_a_failing_rank_ends_the_job_non_zero_with_a_clear_message(tmp_path):
    done, seconds = torchrun(tmp_path / "results", "--dist-timeout", "60", failure="raise")
    assert done.returncode != 0
    assert "rank 1 of 2 (gloo) failed: RuntimeError: rank 1: failure injected at evaluation 1" in done.stderr
    assert "Root Cause" in done.stderr                                 # torchrun's own summary
    assert not (tmp_path / "results" / "runs").exists()
    assert seconds < 60                      # the peer's death is noticed at once, not at the timeout


@pytest.mark.slow
def test_a_hung_rank_ends_the_job_at_the_collective_timeout(tmp_path):
    done, seconds = torchrun(tmp_path / "results", "--dist-timeout", "3", failure="hang")
    assert done.returncode != 0
    # rank 0 waits for rank 1 in the all_gather (on a very slow machine: in an earlier collective)
    assert re.search(r"rank \d of 2 \(gloo\) failed: .*timed out", done.stderr, re.IGNORECASE), done.stderr[-3000:]
    assert seconds < 60


@pytest.mark.slow
def test_one_rank_under_torchrun_joins_a_process_group_and_equals_one_process(tmp_path):
    """`torchrun --nproc_per_node=1` (the way to try nccl on a single GPU) runs the distributed path:
    a process group, DDP and the gathered evaluation, on the rank's own device; with one rank it is
    the single-process run, so it has the single-process key and numbers."""
    done, _ = torchrun(tmp_path / "results", "--dist-timeout", "60", nproc=1)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(next((tmp_path / "results" / "runs" / "purchase").iterdir()).read_text())
    assert record["backend"] == "gloo" and record["world_size"] == 1
    spec = RunSpec("purchase", "fm", "sum_square", SEED, {}, {"rows": ROWS}, CONFIG, "cpu")
    assert record["key"] == spec.key()
    single = single_process_record(spec)
    single_losses = [h["loss"] for h in single["history"]]
    assert [h["loss"] for h in record["history"]] == pytest.approx(single_losses, abs=TOLERANCE)
    assert record["test"]["auc"] == pytest.approx(single["test"]["auc"], abs=TOLERANCE)
