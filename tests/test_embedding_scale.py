"""The vocabulary axis: the suite's cells at several table sizes and strategies, the stand-alone measurement,
and the leaderboard's sections (vocabulary tables, strategies against dense Adam)."""
import json

import pytest
import torch

from ctrbench.commands.measure import embedding_scale
from ctrbench.measure.cells import (
    VOCAB_ROWS,
    ModelCell,
    cell_id,
    model_cells,
    model_step,
    model_too_large,
    vocab_cells,
    vocab_field_dims,
)
from ctrbench.report.leaderboard import render
from ctrbench.store.records import write_record
from ctrbench.training.embedding_updates import list_embedding_updates
from ctrbench.training.protocol import RunSpec, run_one
from ctrbench.training.train import TrainConfig


def test_vocab_field_dims_keep_criteo_layout_and_sum_to_the_rows():
    for rows in (40_000, 1_000_001, 10_000_000):
        dims = vocab_field_dims(rows)
        assert len(dims) == 39 and dims[:13] == [64] * 13 and sum(dims) == rows
        assert max(dims[13:]) - min(dims[13:]) <= 1
    with pytest.raises(ValueError):
        vocab_field_dims(100)


def test_full_profile_crosses_sizes_models_and_strategies_and_quick_adds_one_cell():
    full = vocab_cells("full")
    assert {c.rows for c in full} == set(VOCAB_ROWS)
    assert {c.embedding_optimizer for c in full} == set(list_embedding_updates())
    assert len(full) == len(VOCAB_ROWS) * len({c.model for c in full}) * len(list_embedding_updates())
    quick = vocab_cells("quick")
    assert len(quick) == 1 and quick[0].rows is None
    # cells made before the axis keep their ids (the stored JSON and the gate match them by id)
    assert cell_id(ModelCell("fm", "sum_square", "criteo", 1024, "train")) == "fm-sum_square-criteo-1024-train"
    assert cell_id(quick[0]) == "fm-sum_square-criteo-1024-train-rowwise_adagrad"
    assert quick[0] in model_cells("quick") and all(c in model_cells("full") for c in full)


def test_model_too_large_skips_by_memory():
    small = ModelCell("fm", "sum_square", "criteo", 4096, "train", rows=40_000)
    assert model_too_large(small, torch.device("cpu")) is None
    huge = ModelCell("fm", "sum_square", "criteo", 4096, "train", rows=10**11)
    assert "would hold" in model_too_large(huge, torch.device("cpu"))


def test_a_vocab_cell_steps_with_its_strategy():
    step = model_step(ModelCell("fm", "sum_square", "criteo", 64, "train", rows=5_000,
                                embedding_optimizer="sparse_adam"))
    step()
    assert type(step.optimizer).__name__ == "SplitOptimizer"
    assert step.optimizer.optimizers[0].__class__ is torch.optim.SparseAdam


def test_embedding_scale_writes_a_json_the_leaderboard_renders(tmp_path):
    out = tmp_path / "embedding_scale" / "embedding_scale_cpu.json"
    assert embedding_scale.main(["--models", "fm", "--rows", "1000,3000", "--strategies", "adam,rowwise_adagrad",
                                 "--batch", "64", "--rounds", "1", "--calls", "1", "--warmup", "0",
                                 "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert {(c["rows"], c["embedding_optimizer"]) for c in document["cells"]} == {
        (r, s) for r in (1000, 3000) for s in ("adam", "rowwise_adagrad")}
    by = {(c["rows"], c["embedding_optimizer"]): c for c in document["cells"]}
    # deterministic: Adam's two moments of every float against row-wise Adagrad's float per row
    assert by[3000, "adam"]["optimizer_state_bytes"] > 2 * 3000 * 16 * 4
    assert by[3000, "rowwise_adagrad"]["optimizer_state_bytes"] < 3000 * 16 * 4
    assert document["summary"][0]["best_at_largest"] in ("adam", "rowwise_adagrad")
    markdown, problems = render(tmp_path)
    assert not problems
    assert "## Vocabulary size and embedding updates, measured alone" in markdown
    assert "| rowwise_adagrad" in markdown and "3,000 rows" in markdown


def test_each_strategy_has_its_own_quality_table_and_a_paired_t_test_against_adam(tmp_path, tiny_dataset):
    for strategy in ("adam", "sparse_adam"):
        for seed in (0, 1):
            spec = RunSpec("tiny", "fm", "sum_square", seed=seed,
                           config=TrainConfig(max_epochs=1, batch_size=512, patience=1, embedding_optimizer=strategy))
            write_record(spec.record_path(tmp_path), run_one(spec, tiny_dataset))
    markdown, problems = render(tmp_path)
    assert not problems
    headings = [line for line in markdown.splitlines() if line.startswith("### tiny")]
    assert len(headings) == 2                         # a strategy is a training setting: a table of its own
    assert sum(" · tables by sparse_adam · " in heading for heading in headings) == 1
    section = markdown[markdown.index("## Embedding updates against dense Adam"):]
    row = next(line for line in section.splitlines() if "| sparse_adam" in line)
    assert "p=" in row or "identical" in row or "constant gap" in row
