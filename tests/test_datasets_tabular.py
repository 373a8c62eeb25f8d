"""criteo / avazu / movielens / csv: streamed delimited files, encodings, cache, bad-input policy."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from ctrbench.datasets import BadInputError, DatasetNotFoundError, load
from ctrbench.datasets.tabular import NUMERIC_DIM, numeric_local_ids

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
HEADER = ["label"] + [f"I{k}" for k in range(1, 14)] + [f"C{k}" for k in range(1, 27)]


pytestmark = pytest.mark.usefixtures("private_cache")     # conftest: no test writes to ~/.cache


def criteo_rows(n: int, seed: int = 0) -> list[list[str]]:
    """Rows of the Criteo layout: label, 13 ints (some missing), 26 hex categories (some missing)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        ints = ["" if rng.random() < 0.2 else str(int(rng.integers(-2, 5000))) for _ in range(13)]
        cats = ["" if rng.random() < 0.1 else f"{int(rng.integers(0, 6)):08x}" for _ in range(26)]
        rows.append([str(int(rng.random() < 0.3))] + ints + cats)
    return rows


def write_criteo(folder: Path, rows: list[list[str]], layout: str = "kaggle", name: str | None = None,
                 tail: str = "\n") -> Path:
    """layout 'kaggle': train.txt, tabs, no header; 'sample': criteo_sample.txt, commas, header."""
    (folder / "criteo").mkdir(parents=True, exist_ok=True)
    sep = "\t" if layout == "kaggle" else ","
    lines = [sep.join(r) for r in rows]
    if layout == "sample":
        lines = [",".join(HEADER)] + lines
    path = folder / "criteo" / (name or ("train.txt" if layout == "kaggle" else "criteo_sample.txt"))
    path.write_text("\n".join(lines) + tail)
    return path


def check_shape(ds, fields):
    assert ds.X.dtype == np.int32 and ds.X.shape[1] == fields and ds.y.dtype == np.float32
    assert isinstance(ds.X, np.memmap) and isinstance(ds.y, np.memmap)      # the cache, memory-mapped
    assert not ds.X.flags.writeable                                          # read-only: never changes it
    assert len(ds.field_dims) == len(ds.field_names) == fields
    assert (ds.X >= 0).all() and (ds.X < ds.vocab_size).all()
    for f in range(fields):
        assert ds.X[:, f].min() >= ds.offsets[f] and ds.X[:, f].max() < ds.offsets[f] + ds.field_dims[f]


def test_numeric_buckets_follow_the_criteo_winners():
    ids = numeric_local_ids(np.array([np.nan, -50, -1, 0, 1, 2, 3, 100, 1e30]))
    assert ids[0] == 0                                   # missing has its own id
    assert ids[1] == 1 and ids[2] == 1 + 7               # -8 and below share one; -1 its own
    assert list(ids[3:6]) == [9, 10, 11]                 # 0, 1, 2 kept as they are
    assert ids[6] == 12 + int(np.log(3) ** 2)            # floor(ln(x)^2) for x > 2
    assert ids[7] == 12 + int(np.log(100) ** 2)
    assert ids[8] == NUMERIC_DIM - 1                     # huge values clip to the last bucket


@pytest.mark.parametrize("layout", ["kaggle", "sample"])
def test_criteo_both_layouts_detected(tmp_path, layout):
    rows = criteo_rows(50)
    write_criteo(tmp_path, rows, layout)
    ds = load("criteo", data_dir=tmp_path, min_count=1)
    check_shape(ds, 39)
    assert len(ds.y) == 50 and ds.y.sum() == sum(int(r[0]) for r in rows)
    assert ds.field_names == HEADER[1:]
    first_missing_cat = next(k for k in range(26) if rows[0][14 + k] == "")
    f = 13 + first_missing_cat
    assert ds.describe_feature(int(ds.X[0, f])) == (f"C{first_missing_cat + 1}", "<missing>")


def test_criteo_layouts_give_identical_arrays(tmp_path):
    rows = criteo_rows(40)
    a = load("criteo", data_dir=tmp_path, file=write_criteo(tmp_path, rows, "kaggle"), min_count=1)
    b = load("criteo", data_dir=tmp_path, file=write_criteo(tmp_path, rows, "sample"), min_count=1)
    assert np.array_equal(a.X, b.X) and np.array_equal(a.y, b.y)


def test_criteo_vocab_maps_rare_and_unseen_values_to_oov(tmp_path):
    rows = criteo_rows(100)
    ds = load("criteo", data_dir=tmp_path, file=write_criteo(tmp_path, rows), min_count=1, seed=0)
    train = set(ds.splits["train"].tolist())
    c1 = 13   # field C1: raw values of training rows get ids >= 2, others OOV (1), missing 0
    seen_in_train = {rows[i][14] for i in train if rows[i][14]}
    for i, row in enumerate(rows):
        local = ds.X[i, c1] - ds.offsets[c1]
        if row[14] == "":
            assert local == 0
        elif row[14] in seen_in_train:
            assert local >= 2 and ds.describe_feature(int(ds.X[i, c1])) == ("C1", row[14])
        else:
            assert local == 1
    strict = load("criteo", data_dir=tmp_path, min_count=1000)
    assert set((strict.X[:, 13:] - strict.offsets[13:]).ravel().tolist()) <= {0, 1}


def test_criteo_hash_mode(tmp_path):
    write_criteo(tmp_path, criteo_rows(60))
    ds = load("criteo", data_dir=tmp_path, categorical="hash", hash_buckets=1000)
    check_shape(ds, 39)
    assert ds.field_dims[13:] == [1001] * 26
    again = load("criteo", data_dir=tmp_path, categorical="hash", hash_buckets=1000, seed=5)
    assert np.array_equal(ds.X, again.X)    # hash ids do not depend on the split


@pytest.mark.parametrize("categorical", ["vocab", "hash"])
def test_criteo_arrays_do_not_depend_on_the_block_size(tmp_path, categorical):
    """block_size is left out of the cache key, so many small blocks must give the arrays one block gives
    (vocab: block-local codes, counts merged across blocks, names from the first block holding a value)."""
    rng = np.random.default_rng(3)
    rows = criteo_rows(3000)
    for row in rows:   # a wide column, so values recur across blocks with different block-local codes
        row[14 + 2] = "" if rng.random() < 0.05 else f"v{int(rng.zipf(1.5)) % 400}"
    write_criteo(tmp_path, rows)
    options = dict(data_dir=tmp_path, categorical=categorical, min_count=3, hash_buckets=97, use_cache=False)
    one = load("criteo", **options)
    many = load("criteo", block_size=1 << 12, **options)
    assert np.array_equal(one.X, many.X) and np.array_equal(one.y, many.y)
    assert one.field_dims == many.field_dims
    assert [c.labels for c in one.codebooks] == [c.labels for c in many.codebooks]
    if categorical == "vocab":
        f = 13 + 2
        assert one.field_dims[f] > 10
        for i in range(0, 3000, 97):
            local = one.X[i, f] - one.offsets[f]
            assert one.describe_feature(int(one.X[i, f]))[1] == {0: "<missing>", 1: "<oov>"}.get(local, rows[i][16])
    folder = Path(many.stats["cache_folder"])
    assert sorted(p.name for p in folder.iterdir()) == ["X.npy", "meta.json", "y.npy"]   # no pass-1 leftovers


def test_criteo_cache_hit_gives_identical_arrays_and_rebuilds_when_the_file_changes(tmp_path):
    path = write_criteo(tmp_path, criteo_rows(80))
    first = load("criteo", data_dir=tmp_path, min_count=2)
    second = load("criteo", data_dir=tmp_path, min_count=2)
    assert not first.stats["cache_hit"] and second.stats["cache_hit"]
    assert np.array_equal(first.X, second.X) and np.array_equal(first.y, second.y)
    assert first.field_dims == second.field_dims
    assert all(np.array_equal(first.splits[k], second.splits[k]) for k in first.splits)
    other_options = load("criteo", data_dir=tmp_path, min_count=3)
    assert not other_options.stats["cache_hit"]
    write_criteo(tmp_path, criteo_rows(81, seed=1))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    changed = load("criteo", data_dir=tmp_path, min_count=2)
    assert not changed.stats["cache_hit"] and len(changed.y) == 81
    leftovers = [p for p in (tmp_path / "cache").iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def test_criteo_reads_gzip(tmp_path):
    rows = criteo_rows(30)
    (tmp_path / "criteo").mkdir()
    with gzip.open(tmp_path / "criteo" / "train.txt.gz", "wt") as f:
        f.write("\n".join("\t".join(r) for r in rows) + "\n")
    ds = load("criteo", data_dir=tmp_path, min_count=1)
    assert len(ds.y) == 30


def _bad(rows, index, column, value):
    rows = [list(r) for r in rows]
    rows[index][column] = value
    return rows


BAD_CRITEO = {
    # case: (how to break 20 good rows, expected line, message fragment)
    "wrong column count": (lambda r: r[:5] + [r[5][:-1]] + r[6:], 6, "expected 40 columns, got 39"),
    "non-numeric label": (lambda r: _bad(r, 3, 0, "yes"), 4, "label 'yes' is not a number"),
    "label other than 0/1": (lambda r: _bad(r, 7, 0, "2"), 8, "label '2' is not 0/1"),
    "non-numeric integer field": (lambda r: _bad(r, 10, 3, "abc"), 11, "column 'I3': 'abc' is not a number"),
}


@pytest.mark.parametrize("case", sorted(BAD_CRITEO))
def test_criteo_bad_rows_name_file_and_line(tmp_path, case):
    breaker, line, fragment = BAD_CRITEO[case]
    path = write_criteo(tmp_path, breaker(criteo_rows(20)))
    with pytest.raises(BadInputError) as error:
        load("criteo", data_dir=tmp_path, min_count=1)
    assert error.value.line == line and error.value.path == str(path)
    assert fragment in str(error.value) and f"{path}, line {line}" in str(error.value)


@pytest.mark.parametrize("case", sorted(BAD_CRITEO))
def test_criteo_skip_policy_drops_and_counts(tmp_path, case):
    breaker, _, _ = BAD_CRITEO[case]
    write_criteo(tmp_path, breaker(criteo_rows(20)))
    ds = load("criteo", data_dir=tmp_path, min_count=1, on_bad_lines="skip")
    assert len(ds.y) == 19 and ds.stats["skipped_lines"] == 1


def test_criteo_truncated_last_line(tmp_path):
    rows = criteo_rows(10)
    path = write_criteo(tmp_path, rows[:-1] + [rows[-1][:20]], tail="")
    with pytest.raises(BadInputError, match="line 10: expected 40 columns, got 20 \\(truncated last line\\?\\)"):
        load("criteo", data_dir=tmp_path, min_count=1)
    assert path.is_file()
    ds = load("criteo", data_dir=tmp_path, min_count=1, on_bad_lines="skip")
    assert len(ds.y) == 9 and ds.stats["skipped_lines"] == 1


def test_criteo_empty_and_header_only_files(tmp_path):
    (tmp_path / "criteo").mkdir()
    (tmp_path / "criteo" / "train.txt").write_bytes(b"")
    with pytest.raises(BadInputError, match="empty file"):
        load("criteo", data_dir=tmp_path)
    (tmp_path / "criteo" / "train.txt").unlink()
    (tmp_path / "criteo" / "criteo_sample.txt").write_text(",".join(HEADER) + "\n")
    with pytest.raises(BadInputError, match="no data rows"):
        load("criteo", data_dir=tmp_path)


def test_criteo_non_utf8_bytes(tmp_path):
    rows = criteo_rows(12)
    path = write_criteo(tmp_path, rows)
    lines = path.read_bytes().split(b"\n")
    lines[4] = lines[4].replace(lines[4].split(b"\t")[20], b"\xff\xfe\xfd\xfc", 1)
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(BadInputError, match="line 5: bytes that are not UTF-8"):
        load("criteo", data_dir=tmp_path, min_count=1)
    ds = load("criteo", data_dir=tmp_path, min_count=1, on_bad_lines="skip")
    assert len(ds.y) == 11 and ds.stats["skipped_lines"] == 1


def test_criteo_missing_says_where(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="train.txt") as error:
        load("criteo", data_dir=tmp_path)
    assert isinstance(error.value, FileNotFoundError) and str(tmp_path / "criteo") in str(error.value)


# --- avazu, movielens, csv ----------------------------------------------------------------------

AVAZU_HEADER = ("id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,app_category,"
                "device_id,device_ip,device_model,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21")


def test_avazu_tiny(tmp_path):
    (tmp_path / "avazu").mkdir()
    rows = [f"{i},{i % 2},141021{i % 3:02d},1005,0,s{i % 4},d,c,a,ad,ac,dev,ip{i},m,1,2,15706,320,50,1722,0,35,-1,79"
            for i in range(30)]
    (tmp_path / "avazu" / "train.csv").write_text(AVAZU_HEADER + "\n" + "\n".join(rows) + "\n")
    ds = load("avazu", data_dir=tmp_path, min_count=1)
    check_shape(ds, 22)
    assert "id" not in ds.field_names and ds.field_names[0] == "hour"
    assert ds.y.sum() == 15
    assert {ds.describe_feature(int(v))[1] for v in ds.X[:, 0]} <= {"00", "01", "02", "<oov>"}


def test_movielens_tiny_with_quoted_title(tmp_path):
    (tmp_path / "movielens").mkdir()
    text = ("user_id,movie_id,rating,timestamp,title,genres,gender,age,occupation,zip\n"
            '1,10,5,97,"American President, The (1995)",Comedy|Drama|Romance,F,25,4,19119\n'
            "2,11,3,98,Heat (1995),Action|Crime,M,18,7,77005\n"
            "3,10,4,99,\"American President, The (1995)\",Comedy|Drama|Romance,M,35,1,02139\n") * 5
    lines = text.splitlines()
    body = [line for line in lines if not line.startswith("user_id")]
    (tmp_path / "movielens" / "movielens.csv").write_text(lines[0] + "\n" + "\n".join(body) + "\n")
    ds = load("movielens", data_dir=tmp_path)
    check_shape(ds, 7)
    assert list(ds.y[:3]) == [1.0, 0.0, 1.0]      # rating >= 4 -> 1
    genres = ds.field_names.index("genres")
    assert ds.describe_feature(int(ds.X[0, genres])) == ("genres", "Comedy")


def test_csv_generic_tsv_with_plus_minus_one_labels(tmp_path):
    path = tmp_path / "mine.tsv"
    path.write_text("y\tcolour\tsize\tprice\n" + "".join(
        f"{'+1' if i % 3 == 0 else '-1'}\t{['red', 'blue', 'green'][i % 3]}\t{i % 2}\t{i * 1.5}\n" for i in range(30)))
    ds = load("csv", path=str(path), label="y", categorical=["colour", "size"], numeric=["price"])
    check_shape(ds, 3)
    assert ds.field_names == ["price", "colour", "size"] and ds.y.sum() == 10
    assert ds.options["label"] == "y"
    with pytest.raises(ValueError, match="not in the header"):
        load("csv", path=str(path), label="y", categorical=["shape"])
    with pytest.raises(DatasetNotFoundError):
        load("csv", path=str(tmp_path / "absent.csv"), label="y", categorical=["colour"])


# --- real shared files -----------------------------------------------------------------------------

def _shared(name: str, filename: str) -> Path:
    path = SHARED / name / filename
    if not path.is_file():
        pytest.skip(f"shared file {path} not present")
    return path


def test_real_criteo_sample():
    _shared("criteo", "criteo_sample.txt")
    ds = load("criteo", data_dir=SHARED, file="criteo_sample.txt")
    check_shape(ds, 39)
    assert len(ds.y) == 200 and int(ds.y.sum()) == 49
    again = load("criteo", data_dir=SHARED, file="criteo_sample.txt")
    assert again.stats["cache_hit"] and np.array_equal(ds.X, again.X)


def test_real_avazu_sample():
    _shared("avazu", "avazu_sample.txt")
    ds = load("avazu", data_dir=SHARED, file="avazu_sample.txt")
    check_shape(ds, 22)
    assert len(ds.y) == 100 and int(ds.y.sum()) == 20


def test_real_movielens_sample():
    path = _shared("movielens", "movielens_sample.txt")
    ds = load("movielens", data_dir=SHARED, file="movielens_sample.txt")
    check_shape(ds, 7)
    ratings = np.array([int(line.split(",")[2]) for line in path.read_text().splitlines()[1:]])
    assert len(ds.y) == 200 and int(ds.y.sum()) == int((ratings >= 4).sum())
