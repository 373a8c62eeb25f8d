"""Datasets: the one shape, purchase generator, frappe (libFM), batching, data dir resolution, downloads."""
from __future__ import annotations

import json
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from ctrbench.datasets import (
    BadInputError,
    Dataset,
    DatasetNotFoundError,
    DownloadError,
    batches,
    download,
    list_datasets,
    load,
    make_splits,
    pair_number,
    resolve_data_dir,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


pytestmark = pytest.mark.usefixtures("private_cache")     # conftest: no test writes to ~/.cache


def check_shape(ds: Dataset, fields: int) -> None:
    assert ds.X.dtype == np.int32 and ds.X.ndim == 2 and ds.X.shape[1] == fields   # the smallest id type torch takes
    assert ds.y.dtype == np.float32 and ds.y.shape == (ds.X.shape[0],)
    assert set(np.unique(ds.y)) <= {0.0, 1.0}
    assert len(ds.field_names) == len(ds.field_dims) == fields
    offsets = ds.offsets
    for f in range(fields):   # field f owns [offsets[f], offsets[f] + dims[f])
        assert ds.X[:, f].min() >= offsets[f] and ds.X[:, f].max() < offsets[f] + ds.field_dims[f]
    parts = [ds.splits[k] for k in ("train", "validation", "test")]
    assert all(p.dtype == np.int64 for p in parts)
    together = np.concatenate(parts)
    assert len(together) == len(ds.y) and len(np.unique(together)) == len(ds.y)
    json.dumps(ds.options)   # recorded with results


def test_list_datasets_names_everything():
    assert {"purchase", "frappe", "criteo", "avazu", "movielens", "csv"} <= set(list_datasets())
    with pytest.raises(ValueError, match="unknown dataset"):
        load("nope")


def test_package_does_not_take_the_name_datasets():
    import ctrbench.datasets as ours
    assert ours.__name__ == "ctrbench.datasets"
    assert sys.modules.get("datasets") is not ours


# --- splits -----------------------------------------------------------------------------------

def test_splits_are_8_1_1_deterministic_and_disjoint():
    a, b, c = make_splits(1000, seed=3), make_splits(1000, seed=3), make_splits(1000, seed=4)
    assert [len(a[k]) for k in ("train", "validation", "test")] == [800, 100, 100]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])
    assert len(np.unique(np.concatenate(list(a.values())))) == 1000


# --- purchase -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def purchase():
    return load("purchase", rows=20_000, seed=0)


def test_purchase_shape_and_fields(purchase):
    check_shape(purchase, 10)
    assert purchase.field_names == ["age", "gender", "member_years", "region", "vip_level", "purchase_frequency",
                                    "avg_order_value", "category_l2", "brand", "origin"]
    assert purchase.vocab_size == 72
    assert [len(purchase.splits[k]) for k in ("train", "validation", "test")] == [16_000, 2_000, 2_000]
    assert 0.28 < purchase.y.mean() < 0.38


def test_purchase_is_deterministic_by_seed(purchase):
    again = load("purchase", rows=20_000, seed=0)
    other = load("purchase", rows=20_000, seed=1)
    assert np.array_equal(purchase.X, again.X) and np.array_equal(purchase.y, again.y)
    assert all(np.array_equal(purchase.splits[k], again.splits[k]) for k in purchase.splits)
    assert not np.array_equal(purchase.X, other.X)


def test_purchase_truth_in_article_pair_numbering(purchase):
    truth = purchase.truth
    assert truth["pair_strength"].shape == (45,)
    assert [pair_number(i, j, 10) for i, j in [(2, 8), (4, 8), (8, 9), (0, 1), (9, 8)]] == [22, 33, 44, 0, 44]
    assert set(truth["planted_pairs"]) == {(2, 8), (4, 8), (0, 7)}
    strengths = truth["pair_strength"]
    assert set(np.flatnonzero(strengths)) == {22, 33, 6}
    assert strengths[22] > strengths[33] > strengths[6] > 0   # differing strengths
    assert truth["hot_pair_number"] == 44
    assert truth["watched_pair"] == 44 and "pair 44" in truth["note"]   # what the attention analysis watches


def test_purchase_describe_feature(purchase):
    assert purchase.describe_feature(0) == ("age", "<18")
    assert purchase.describe_feature(7) == ("gender", "F")
    assert purchase.describe_feature(71) == ("origin", "other")
    assert purchase.describe_feature(int(purchase.offsets[8]) + 3) == ("brand", "hash bucket 3")
    with pytest.raises(ValueError):
        purchase.describe_feature(72)


def _hot_combo_lift(ds: Dataset) -> float:
    """How much more often the hot brand x origin combinations appear among positives than negatives."""
    from ctrbench.datasets.purchase import HOT_COMBOS
    brand = ds.X[:, 8] - ds.offsets[8]
    origin = ds.X[:, 9] - ds.offsets[9]
    hot = np.zeros(len(ds.y), bool)
    for b, o in HOT_COMBOS:
        hot |= (brand == b) & (origin == o)
    return hot[ds.y == 1].mean() / max(hot[ds.y == 0].mean(), 1e-9)


def test_purchase_hot_spot_switches_on_and_off():
    on = load("purchase", rows=30_000, seed=0, hot_spot=True)
    off = load("purchase", rows=30_000, seed=0, hot_spot=False)
    assert _hot_combo_lift(on) > 2.5
    assert _hot_combo_lift(off) < 1.3
    assert off.truth["hot_pair_number"] is None and off.truth["hot_share"] == 0
    assert off.truth["watched_pair"] == 44 and off.truth["note"] == "Hot spot off."   # watched either way


def test_purchase_planted_pair_is_visible_in_data():
    """Positives follow the planted member_years x brand table: cells it favours are over-represented."""
    ds = load("purchase", rows=60_000, seed=0, hot_spot=False)
    table = ds.truth["pair_tables"][22]
    years, brand = ds.X[:, 2] - ds.offsets[2], ds.X[:, 8] - ds.offsets[8]
    effect = table[years, brand]
    assert effect[ds.y == 1].mean() > effect[ds.y == 0].mean() + 0.1


def test_purchase_rows_option_and_large_size_is_chunked():
    from ctrbench.datasets.purchase import generate
    X, y, _ = generate(rows=2_500, seed=0, chunk_rows=1_000)
    assert X.shape == (2_500, 10) and y.shape == (2_500,)
    assert X.max() < 72


# --- batches -------------------------------------------------------------------------------------

def test_batches_cover_each_row_once_and_split_by_rank(purchase):
    X = torch.from_numpy(purchase.X[:1000])
    y = torch.from_numpy(purchase.y[:1000])
    seen = torch.cat([xb[:, 0] * 0 + torch.arange(len(xb)) for xb, _ in batches(X, y, 128)])
    assert len(seen) == 1000
    order = torch.cat([yb for _, yb in batches(X, y, 128, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert torch.equal(order.sort().values, y.sort().values)
    ranks = [sum(len(yb) for _, yb in batches(X, y, 100, shuffle=True, generator=torch.Generator().manual_seed(0),
                                             rank=r, world_size=2)) for r in (0, 1)]
    assert ranks == [500, 500]


# --- frappe --------------------------------------------------------------------------------------

FRAPPE_LINES = [
    "1 0:1 957:1 5039:1 5046:1 5053:1 5055:1 5058:1 5060:1 5069:1 5149:1",
    "-1 956:1 5038:1 5045:1 5052:1 5054:1 5057:1 5059:1 5068:1 5148:1 5381:1",
    "-1 10:1 1000:1 5040:1 5047:1 5053:1 5056:1 5058:1 5061:1 5070:1 5150:1",
]


def write_frappe(folder: Path, parts=("validation", "test"), lines=FRAPPE_LINES, repeat=10) -> Path:
    (folder / "frappe").mkdir(parents=True, exist_ok=True)
    for part in parts:
        (folder / "frappe" / f"frappe.{part}.libfm").write_text("\r\n".join(lines * repeat) + "\r\n")
    return folder


def test_frappe_tiny_files_split_by_seed(tmp_path):
    ds = load("frappe", data_dir=write_frappe(tmp_path), seed=0)
    check_shape(ds, 10)
    assert len(ds.y) == 60 and ds.y.sum() == 20
    assert ds.field_dims == [957, 4082, 7, 7, 2, 3, 2, 9, 80, 233] and ds.vocab_size == 5382
    assert ds.options["split"] == "seed 8:1:1"
    assert ds.describe_feature(5381) == ("city", "city #232")
    assert [ds.field_names[f] for f in ds.item_fields] == ["item"]
    assert np.array_equal(ds.X, load("frappe", data_dir=tmp_path, seed=0).X)


def test_frappe_uses_the_files_split_when_all_three_are_there(tmp_path):
    ds = load("frappe", data_dir=write_frappe(tmp_path, parts=("train", "validation", "test")))
    assert ds.options["split"] == "files"
    assert [len(ds.splits[k]) for k in ("train", "validation", "test")] == [30, 30, 30]
    assert np.array_equal(ds.splits["validation"], np.arange(30, 60))


def test_frappe_missing_says_where_to_put_files(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="frappe.validation.libfm") as error:
        load("frappe", data_dir=tmp_path)
    assert isinstance(error.value, FileNotFoundError)
    assert str(tmp_path / "frappe") in str(error.value)


BAD_LIBFM = {
    "no colon": ("1 0:1 957 5039:1 5046:1 5053:1 5055:1 5058:1 5060:1 5069:1 5149:1", "no ':'"),
    "non-numeric label": ("yes 0:1 957:1 5039:1 5046:1 5053:1 5055:1 5058:1 5060:1 5069:1 5149:1", "label"),
    "label 2": ("2 0:1 957:1 5039:1 5046:1 5053:1 5055:1 5058:1 5060:1 5069:1 5149:1", "label '2'"),
    "too few": ("1 0:1 957:1 5039:1", "expected 10 features"),
    "id outside its field": ("1 957:1 957:1 5039:1 5046:1 5053:1 5055:1 5058:1 5060:1 5069:1 5149:1", "outside field"),
    "non-integer id": ("1 x:1 957:1 5039:1 5046:1 5053:1 5055:1 5058:1 5060:1 5069:1 5149:1", "not a non-negative"),
}


@pytest.mark.parametrize("case", sorted(BAD_LIBFM))
def test_frappe_bad_line_names_file_and_line(tmp_path, case):
    line, problem = BAD_LIBFM[case]
    write_frappe(tmp_path, lines=FRAPPE_LINES + [line], repeat=1)
    with pytest.raises(BadInputError, match=problem) as error:
        load("frappe", data_dir=tmp_path)
    assert error.value.line == 4 and error.value.path.endswith("frappe.validation.libfm")
    assert "frappe.validation.libfm, line 4" in str(error.value)


def test_frappe_skip_policy_counts_bad_lines(tmp_path):
    lines = FRAPPE_LINES + [BAD_LIBFM["no colon"][0], BAD_LIBFM["label 2"][0]]
    ds = load("frappe", data_dir=write_frappe(tmp_path, lines=lines, repeat=1), on_bad_lines="skip")
    assert len(ds.y) == 6 and ds.stats["skipped_lines"] == 4


def test_frappe_truncated_last_line_empty_file_and_non_utf8(tmp_path):
    folder = write_frappe(tmp_path, repeat=1)
    validation = folder / "frappe" / "frappe.validation.libfm"
    validation.write_text("\n".join(FRAPPE_LINES) + "\n1 0:1 957:1 50")    # cut mid-line, no newline
    with pytest.raises(BadInputError, match="line 4: expected 10 features"):
        load("frappe", data_dir=folder)
    validation.write_bytes(b"")
    with pytest.raises(BadInputError, match="empty file"):
        load("frappe", data_dir=folder)
    validation.write_bytes(("\n".join(FRAPPE_LINES) + "\n").encode() + b"1 0:1 \xff\xfe:1\n")
    with pytest.raises(BadInputError, match="line 4: bytes that are not UTF-8"):
        load("frappe", data_dir=folder)


def test_frappe_real_files():
    if not (SHARED / "frappe" / "frappe.test.libfm").is_file():
        pytest.skip(f"shared frappe files not in {SHARED / 'frappe'}")
    ds = load("frappe", data_dir=SHARED, seed=0)
    check_shape(ds, 10)
    assert len(ds.y) == 86_582 and int(ds.y.sum()) == 28_599
    assert ds.vocab_size == 5382
    assert [len(ds.splits[k]) for k in ("train", "validation", "test")] == [69_265, 8_658, 8_659]


def test_real_purchase_through_default_data_dir_needs_no_files(tmp_path, monkeypatch):
    monkeypatch.setenv("CTRBENCH_DATA_DIR", str(tmp_path / "empty"))
    assert len(load("purchase", rows=1_000).y) == 1_000


# --- where data lives --------------------------------------------------------------------------

def test_data_dir_resolution(tmp_path, monkeypatch):
    assert resolve_data_dir(tmp_path) == tmp_path
    monkeypatch.setenv("CTRBENCH_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("CTRBENCH_DATA_DIR")
    expected = SHARED if SHARED.is_dir() else Path.home() / ".cache" / "ctrbench" / "datasets"
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert resolve_data_dir() == expected


def test_download_offline_says_where_to_put_files(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(DownloadError, match="put criteo|put train.txt") as error:
        download("criteo", data_dir=tmp_path)
    assert str(tmp_path / "criteo") in str(error.value)
    with pytest.raises(DownloadError, match="kaggle"):
        download("avazu", data_dir=tmp_path)


def test_download_keeps_files_matching_their_checksum(tmp_path, monkeypatch):
    if not (SHARED / "frappe" / "frappe.test.libfm").is_file():
        pytest.skip(f"shared frappe files not in {SHARED / 'frappe'}")
    import shutil
    (tmp_path / "frappe").mkdir()
    for part in ("train", "validation", "test"):
        source = SHARED / "frappe" / f"frappe.{part}.libfm"
        if part == "train":
            (tmp_path / "frappe" / "frappe.train.libfm").write_text(FRAPPE_LINES[0] + "\n")
        else:
            shutil.copy(source, tmp_path / "frappe")
    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: pytest.fail("should not fetch"))
    assert download("frappe", data_dir=tmp_path) == tmp_path / "frappe"
