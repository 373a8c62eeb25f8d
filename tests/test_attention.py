"""The attention analysis (ctrbench.attention.analysis): weights, pair names, spread, recovery, the whole pipeline
on a tiny planted dataset, the report files and the CLI subcommand."""
import argparse
import math

import numpy as np
import pytest
import torch
from conftest import make_tiny_dataset

from ctrbench.attention.analysis import (
    COMPARISONS,
    analyse_attention,
    analyse_trained,
    attention_matrix,
    attention_models,
    fm_pair_strength,
    fwfm_pair_strengths,
    pair_names,
    planted_recovery,
    precision_at_k,
    ranks,
    spread_measures,
    top_pairs,
)
from ctrbench.commands.attention import add_attention_parser
from ctrbench.datasets import load, pair_number
from ctrbench.measure.cells import random_ids
from ctrbench.models import create_model, pair_fields
from ctrbench.training.train import TrainConfig

PURCHASE_FIELDS = ["age", "gender", "member_years", "region", "vip_level", "purchase_frequency",
                   "avg_order_value", "category_l2", "brand", "origin"]


@pytest.fixture(autouse=True)
def one_thread():
    """These models are small: one torch thread trains them faster than two on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cli(argv):
    parser = argparse.ArgumentParser(prog="ctrbench")
    add_attention_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


# ------------------------------------------------------------------------------------------ units

@pytest.mark.parametrize("name", ["afm", "qafm"])
def test_weights_sum_to_one_per_sample(name):
    torch.manual_seed(0)
    dims = [7, 2, 6, 8, 5, 5, 5, 12, 16, 6]
    model = create_model(name, dims, embed_dim=8).train()          # train mode: dropout must not leak in
    weights = attention_matrix(model, random_ids(dims, 300), batch_size=64)
    assert weights.shape == (300, 45)
    assert np.all(weights >= 0)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=0, atol=1e-6)
    assert model.training                                            # mode restored


def test_attention_models_are_the_ones_with_weights():
    assert {"afm", "qafm"} <= set(attention_models())
    assert not {"fm", "fwfm", "nfm"} & set(attention_models())


def test_pair_names_match_the_pair_numbering():
    names = pair_names(PURCHASE_FIELDS)
    assert len(names) == 45
    assert names[0] == "age × gender"
    assert names[6] == "age × category_l2"
    assert names[22] == "member_years × brand"
    assert names[33] == "vip_level × brand"
    assert names[44] == "brand × origin"
    for p, (i, j) in enumerate(pair_fields(10)):
        assert pair_number(i, j, 10) == p
        assert names[p] == f"{PURCHASE_FIELDS[i]} × {PURCHASE_FIELDS[j]}"
    assert load("purchase", rows=200).field_names == PURCHASE_FIELDS
    assert pair_names(["a", "b", "c"]) == ["a × b", "a × c", "b × c"]


def test_spread_of_identical_rows_is_zero_and_grows_with_difference():
    mean = np.array([0.5, 0.3, 0.2])
    same = spread_measures(np.tile(mean, (4, 1)))
    assert same.relative_std == pytest.approx(0, abs=1e-12)
    assert same.mean_tv == pytest.approx(0, abs=1e-12)
    assert same.mean_kl == pytest.approx(0, abs=1e-12)
    assert same.entropy_of_mean == pytest.approx(same.mean_entropy)
    assert same.uniform_entropy == pytest.approx(math.log(3))
    assert same.mean_tv_from_uniform == pytest.approx(0.5 * (abs(0.5 - 1 / 3) + abs(0.3 - 1 / 3) + abs(0.2 - 1 / 3)))
    rows = np.array([[1.0, 0.0], [0.0, 1.0]])                       # disjoint rows, mean (0.5, 0.5)
    apart = spread_measures(rows)
    assert apart.mean_tv == pytest.approx(0.5)
    assert apart.mean_kl == pytest.approx(math.log(2))
    assert apart.relative_std == pytest.approx(0.5 * 2)              # std 0.5 per pair / mean weight 0.5
    assert apart.entropy_of_mean - apart.mean_entropy == pytest.approx(apart.mean_kl)
    with pytest.raises(ValueError):
        spread_measures(np.zeros((0, 3)))


def test_ranks_top_pairs_and_precision():
    scores = np.array([0.1, 0.4, 0.2, 0.4, 0.0])
    assert list(ranks(scores)) == [4, 1, 3, 2, 5]                   # ties: lower pair number first
    top = top_pairs(scores, ["a", "b", "c", "d", "e"], 2)
    assert [(t.rank, t.pair, t.fields) for t in top] == [(1, 1, "b"), (2, 3, "d")]
    assert precision_at_k(scores, [1, 2], 2) == 0.5
    assert precision_at_k(scores, [1, 2], 3) == pytest.approx(2 / 3)
    truth = np.array([0.0, 0.0, 0.7, 0.0, 0.3])
    recovery = planted_recovery(scores, truth, k=3, watched_pair=3)
    assert recovery.planted == [2, 4]
    assert recovery.hits == [2]
    assert recovery.precision_at_k == pytest.approx(1 / 3)
    assert recovery.best_possible == pytest.approx(2 / 3)
    assert recovery.r_precision == 0.0
    assert recovery.planted_ranks == {2: 3, 4: 5}
    assert recovery.watched_rank == 2


def test_a_dataset_without_truth_gets_no_recovery_and_the_report_imports_one_way():
    """frappe and csv have no truth: no recovery, no watched pair. The report module renders only, so
    importing it must not import the analysis (no import circle)."""
    import subprocess
    import sys
    data = make_tiny_dataset(rows=400, field_dims=(3, 4, 2), seed=1)
    model = create_model("afm", data.field_dims, embed_dim=4)
    analysis = analyse_trained(model, data, samples=5, top_k=2)
    assert analysis.recovery is None and analysis.true_strength is None
    assert list(analysis.mean_ranks) == list(ranks(analysis.mean_weights))
    code = "import sys, ctrbench.attention.report; print('ctrbench.attention.analysis' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_fm_and_fwfm_strengths_match_a_plain_loop():
    torch.manual_seed(1)
    dims = [3, 4, 5, 2]
    X = random_ids(dims, 50)
    fm = create_model("fm", dims, embed_dim=4)
    emb = fm.embedding(X).detach()
    expected = [np.mean([abs(float(emb[n, i] @ emb[n, j])) for n in range(50)]) for i, j in pair_fields(4)]
    np.testing.assert_allclose(fm_pair_strength(fm, X, batch_size=7), expected, rtol=1e-5)
    fwfm = create_model("fwfm", dims, embed_dim=4)
    with torch.no_grad():
        fwfm.pair_weight.copy_(torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, -1.0]))
    r_abs, effective = fwfm_pair_strengths(fwfm, X, batch_size=16)
    np.testing.assert_allclose(r_abs, [1.0, 2.0, 0.5, 0.0, 3.0, 1.0])
    emb = fwfm.embedding(X).detach()
    r = fwfm.pair_weights()
    expected = [np.mean([abs(float(r[p] * (emb[n, i] @ emb[n, j]))) for n in range(50)])
                for p, (i, j) in enumerate(pair_fields(4))]
    np.testing.assert_allclose(effective, expected, rtol=1e-5)


# --------------------------------------------------------------------------------------- pipeline

def test_dominant_planted_pair_ranks_first_after_training(tmp_path):
    """conftest's tiny set: the label depends on fields 0 and 1 only (pair 0); AFM must put it on top."""
    data = make_tiny_dataset(rows=4000, field_dims=(4, 5, 3, 6), seed=0)
    # a truth in the shape purchase's takes: what to watch and how to read it comes from the data
    data.truth = {"pair_strength": np.array([1.0, 0, 0, 0, 0, 0]), "watched_pair": 5,
                  "note": "A tiny planted set.", "pair_strength_meaning": "a made-up scale"}
    report = analyse_attention(data, seed=0, model="afm", samples=12, top_k=1, compare=("fm",),
                               train_config=TrainConfig(max_epochs=12, batch_size=256, lr=1e-2, patience=3),
                               hparams={"embed_dim": 8}, results_dir=tmp_path)
    (analysis,) = report.analyses
    assert analysis.training["test_auc"] > 0.8
    assert analysis.top[0].pair == 0 and analysis.top[0].fields == "f0 × f1"
    second = sorted(analysis.mean_weights)[-2]
    assert analysis.mean_weights[0] > 2 * second                    # dominant, not a near tie
    assert analysis.recovery.precision_at_k == 1.0
    np.testing.assert_allclose(analysis.sample_weights.sum(axis=1), 1.0, atol=1e-6)
    assert analysis.sample_weights.shape == (12, 6)
    assert analysis.mean_weights.sum() == pytest.approx(1.0)
    (fm,) = analysis.comparisons
    assert fm.key == "fm" and fm.share.sum() == pytest.approx(1.0) and fm.share.shape == (6,)
    markdown, *pngs = report.paths
    assert markdown == tmp_path / "attention_tiny.md"
    text = markdown.read_text()
    assert text.startswith("<!-- Generated by `")
    assert "| 1      | 0      | f0 × f1" in text
    assert "precision@1" in text
    assert analysis.recovery.watched_pair == 5 and analysis.recovery.watched_rank == int(analysis.mean_ranks[5])
    assert "rank of f2 × f3 (5)" in text and "A tiny planted set." in text
    assert "(true strength, a made-up scale)" in text
    assert "brand" not in text and "hot spot" not in text.lower()
    for png in pngs:
        assert png.suffix == ".png" and png.read_bytes()[:4] == b"\x89PNG" and png.name in text


def test_cli_purchase_hot_spot_both_and_qafm(tmp_path, capsys):
    tiny = ["--data-option", "rows=3000", "--max-epochs", "1", "--samples", "6", "--quiet",
            "--results-dir", str(tmp_path), "--embed-dim", "4"]
    assert cli(["attention", "--dataset", "purchase", "--hot-spot", "both", "--compare", "fm,fwfm", *tiny]) == 0
    text = (tmp_path / "attention_purchase.md").read_text()
    assert text.splitlines()[0].startswith("<!-- Generated by `ctrbench attention --dataset purchase")
    assert "--hot-spot both" in text.splitlines()[0]
    for heading in ("## Hot spot on", "## Hot spot off", "### Top-5 pairs by mean attention", "precision@5",
                    "rank of brand × origin (44)", "FwFM \\|r_p\\| / Σ\\|r\\|", "mean TV"):
        assert heading in text
    for name in ("attention_purchase_hot-spot-on_heatmap.png", "attention_purchase_hot-spot-off_heatmap.png",
                 "attention_purchase_mean.png"):
        assert (tmp_path / name).is_file() and f"]({name})" in text
    out = capsys.readouterr().out
    assert "precision@5" in out and "hot spot off" in out
    # the query-conditioned AFM goes through unchanged, into its own file
    assert cli(["attention", "--dataset", "purchase", "--hot-spot", "off", "--model", "qafm",
                "--compare", "none", *tiny]) == 0
    text = (tmp_path / "attention_purchase_qafm.md").read_text()
    assert "# Attention analysis: qAFM on purchase" in text and "relative std" in text
    assert "## Hot spot on" not in text


@pytest.mark.parametrize("kwargs, message", [
    (dict(dataset="nope"), "unknown dataset"),
    (dict(model="fm"), "no per-sample attention"),
    (dict(model="fwfm"), "no per-sample attention"),
    (dict(model="nope"), "unknown model"),
    (dict(samples=0), "samples must be"),
    (dict(top_k=0), "top_k must be"),
    (dict(compare=("nfm",)), "unknown comparison"),
    (dict(hot_spot="sometimes"), "hot_spot must be"),
    (dict(dataset="frappe", hot_spot="on"), "purchase generator"),
    (dict(hot_spot="on", data_options={"hot_spot": False}), "not both"),
    (dict(hparams={"hidden": [8]}), "unknown hyper-parameter"),
])
def test_bad_options_are_clear_errors_before_training(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        analyse_attention(**{"results_dir": tmp_path, **kwargs})
    assert not list(tmp_path.iterdir())


def test_top_k_beyond_the_pairs_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="more than the 45 field pairs"):
        analyse_attention("purchase", top_k=46, data_options={"rows": 500}, hot_spot="off", results_dir=tmp_path)


def test_cli_rejects_bad_values(tmp_path):
    with pytest.raises(ValueError, match="samples must be"):
        cli(["attention", "--samples", "0", "--results-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        cli(["attention", "--hot-spot", "maybe"])
    assert set(COMPARISONS) == {"fm", "fwfm"}
