"""Data larger than RAM: narrow ids, the memory-mapped cache, block-shuffled batches from it, and the
faults around it (a killed preprocessing run, a changed source, a corrupt line far into a file)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ctrbench.datasets import BadInputError, load, tabular, tabular_lines, tabular_preprocess, tabular_reader
from ctrbench.datasets.batching import _Rows, batches, block_batches
from ctrbench.datasets.core import SplitView, id_dtype
from ctrbench.datasets.synthetic import write_criteo_tsv
from ctrbench.models import create_model
from ctrbench.training.data_source import StreamedData, TensorData

pytestmark = pytest.mark.usefixtures("private_cache")     # conftest: no test writes to ~/.cache


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def cache_folders(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "cache").iterdir())


# ---------------------------------------------------------------------------------------------
# Narrow ids, memory-mapped cache, index-based splits.

def test_id_dtype_is_the_smallest_that_embeddings_take():
    assert id_dtype(1) == np.int32 and id_dtype(2**31 - 1) == np.int32
    assert id_dtype(2**31) == np.int64


@pytest.mark.parametrize("categorical", ["vocab", "hash"])
def test_cache_is_int32_and_memory_mapped_read_only(generated_criteo, categorical):
    ds = load("criteo", file=str(generated_criteo), categorical=categorical, min_count=2)
    again = load("criteo", file=str(generated_criteo), categorical=categorical, min_count=2)
    assert again.stats["cache_hit"]
    for loaded in (ds, again):
        assert loaded.X.dtype == np.int32 and loaded.y.dtype == np.float32
        assert isinstance(loaded.X, np.memmap) and isinstance(loaded.y, np.memmap)
        assert not loaded.X.flags.writeable
        assert loaded.X.max() < loaded.vocab_size
    meta = json.loads((Path(ds.stats["cache_folder"]) / "meta.json").read_text())
    assert meta["id_dtype"] == "int32" and meta["format"] == tabular.CACHE_FORMAT


def test_split_view_is_an_index_not_a_copy(generated_criteo):
    ds = load("criteo", file=str(generated_criteo), min_count=2)
    view = ds.view("train")
    assert view.X is ds.X and view.y is ds.y and view.index is ds.splits["train"]
    assert len(view) == len(ds.splits["train"])
    X, y = ds.split("train")
    assert X.dtype == np.int32 and np.array_equal(X, ds.X[ds.splits["train"]])
    assert np.array_equal(y, ds.y[ds.splits["train"]])
    with pytest.raises(KeyError):
        ds.view("holdout")


def test_in_memory_sets_are_narrowed_too():
    ds = load("purchase", rows=2000)
    assert ds.X.dtype == np.int32


def test_models_take_int32_ids_as_they_are():
    """nn.Embedding takes int32 indices (torch >= 2.x): the same outputs and gradients as int64."""
    dims = [5, 7, 3, 11]
    x = torch.stack([torch.randint(0, d, (32,)) for d in dims], 1) + torch.tensor([0, 5, 12, 15])
    outputs = []
    for dtype in (torch.int64, torch.int32):
        torch.manual_seed(0)
        model = create_model("fm", dims, interaction="sum_square")
        out = model(x.to(dtype))
        out.sum().backward()
        outputs.append((out.detach(), model.embedding.embedding.weight.grad))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])


# ---------------------------------------------------------------------------------------------
# block_batches.

def mapped(tmp_path: Path, rows: int = 5003, fields: int = 3) -> tuple[np.memmap, np.memmap]:
    """X[i] = (i, i, ...) and y[i] = i % 2 as memory-mapped .npy files."""
    np.save(tmp_path / "X.npy", np.repeat(np.arange(rows, dtype=np.int32)[:, None], fields, axis=1))
    np.save(tmp_path / "y.npy", (np.arange(rows) % 2).astype(np.float32))
    return np.load(tmp_path / "X.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r")


def split_index(rows: int, share: float = 0.8, seed: int = 0) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(rows, int(rows * share), replace=False)).astype(np.int64)


def row_ids(batch_list) -> np.ndarray:
    return torch.cat([xb[:, 0] for xb, _ in batch_list]).numpy() if batch_list else np.zeros(0, np.int32)


@pytest.mark.parametrize("batch_size,block_rows,window_blocks", [(1, 7, 1), (64, 97, 3), (333, 500, 2),
                                                                 (1000, 50, 100), (10_000, 256, 4)])
def test_every_row_exactly_once_per_epoch(tmp_path, batch_size, block_rows, window_blocks):
    X, y = mapped(tmp_path)
    index = split_index(len(y))
    got = list(block_batches(SplitView(X, y, index), batch_size, shuffle=True,
                             generator=torch.Generator().manual_seed(3), block_rows=block_rows,
                             window_blocks=window_blocks))
    rows = row_ids(got)
    assert np.array_equal(np.sort(rows), index)                                   # each row once
    assert all(len(yb) == batch_size for _, yb in got[:-1]) and 0 < len(got[-1][1]) <= batch_size
    assert np.array_equal(torch.cat([yb for _, yb in got]).numpy(), rows % 2)    # y stays with its row
    assert got[0][0].dtype == torch.int32 and got[0][1].dtype == torch.float32


def test_same_seed_same_batches_and_another_seed_another_order(tmp_path):
    X, y = mapped(tmp_path)
    view = SplitView(X, y, split_index(len(y)))

    def epoch(seed):
        return list(block_batches(view, 128, shuffle=True, generator=torch.Generator().manual_seed(seed),
                                  block_rows=200, window_blocks=4))

    first, again, other = epoch(0), epoch(0), epoch(1)
    assert len(first) == len(again) and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                                            for a, b in zip(first, again))
    assert not np.array_equal(row_ids(first), row_ids(other))
    generator = torch.Generator().manual_seed(0)        # one generator, two epochs: two orders
    one = row_ids(list(block_batches(view, 128, shuffle=True, generator=generator, block_rows=200)))
    two = row_ids(list(block_batches(view, 128, shuffle=True, generator=generator, block_rows=200)))
    assert not np.array_equal(one, two) and np.array_equal(np.sort(one), np.sort(two))


def test_shuffle_mixes_blocks_and_rows(tmp_path):
    X, y = mapped(tmp_path)
    view = SplitView(X, y, split_index(len(y)))
    first = next(iter(block_batches(view, 256, shuffle=True, generator=torch.Generator().manual_seed(0),
                                    block_rows=100, window_blocks=8)))[0][:, 0].numpy()
    assert len(np.unique(first // 100)) > 4                   # rows of several blocks of the file
    assert not (np.diff(first) > 0).all()                      # not in file order within the batch


def test_unshuffled_follows_the_index_and_matches_batches(tmp_path):
    X, y = mapped(tmp_path)
    index = split_index(len(y))
    view = SplitView(X, y, index)
    plain = list(block_batches(view, 100, block_rows=64, window_blocks=3))
    assert np.array_equal(row_ids(plain), index)
    X_mem, y_mem = (torch.from_numpy(a) for a in view.materialize())
    reference = list(batches(X_mem, y_mem, 100))
    assert len(reference) == len(plain)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(plain, reference))


@pytest.mark.parametrize("shard", ["batches", "rows"])
def test_shards_cover_each_batch_once(tmp_path, shard):
    X, y = mapped(tmp_path)
    view = SplitView(X, y, split_index(len(y)))

    def run(rank, world):
        return list(block_batches(view, 100, shuffle=True, generator=torch.Generator().manual_seed(5),
                                  rank=rank, world_size=world, shard=shard, block_rows=300))

    single = run(0, 1)
    parts = [run(r, 3) for r in range(3)]
    if shard == "rows":
        assert all(len(p) == len(single) for p in parts)
        for k, (xb, _) in enumerate(single):
            assert torch.equal(torch.cat([p[k][0] for p in parts]), xb)
    else:
        assert [len(p) for p in parts] == [len(single[r::3]) for r in range(3)]
        for r in range(3):
            assert all(torch.equal(a[0], b[0]) for a, b in zip(parts[r], single[r::3]))


def test_memory_maps_are_read_with_file_reads_and_arrays_in_memory_agree(tmp_path):
    X, y = mapped(tmp_path)
    assert _Rows(X).file is not None and _Rows(X[10:]).file is None and _Rows(np.asarray(X)).file is None
    index = split_index(len(y))
    from_map = list(block_batches(SplitView(X, y, index), 77, shuffle=True,
                                  generator=torch.Generator().manual_seed(2), block_rows=128))
    from_ram = list(block_batches(SplitView(np.array(X), np.array(y), index), 77, shuffle=True,
                                  generator=torch.Generator().manual_seed(2), block_rows=128))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(from_map, from_ram))


def test_block_batches_rejects_bad_arguments(tmp_path):
    X, y = mapped(tmp_path, rows=50)
    with pytest.raises(ValueError, match="sorted"):
        next(block_batches(SplitView(X, y, np.array([3, 1, 2])), 2))
    with pytest.raises(ValueError, match="batch_size"):
        next(block_batches(SplitView(X, y, np.arange(5)), 0))
    with pytest.raises(ValueError, match="shard"):
        next(block_batches(SplitView(X, y, np.arange(5)), 2, shard="cells"))
    assert list(block_batches(SplitView(X, y, np.zeros(0, np.int64)), 4)) == []


def test_a_view_and_tensors_give_the_same_batches(tmp_path):
    X, y = mapped(tmp_path, rows=300)
    view = SplitView(X, y, np.arange(300))
    tensors = tuple(torch.from_numpy(a) for a in view.materialize())
    a = list(StreamedData(view).batches(64, torch.device("cpu")))
    b = list(TensorData(*tensors).batches(64, torch.device("cpu")))
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b)) and len(a) == len(b)


def test_one_fm_epoch_from_the_memory_mapped_cache(generated_criteo):
    ds = load("criteo", file=str(generated_criteo), min_count=2)
    torch.manual_seed(0)
    model = create_model("fm", ds.field_dims, interaction="sum_square")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    seen = 0
    for xb, yb in block_batches(ds.view("train"), 256, shuffle=True, generator=torch.Generator().manual_seed(0),
                                block_rows=500):
        optimizer.zero_grad()
        loss_fn(model(xb), yb).backward()
        optimizer.step()
        seen += len(yb)
    assert seen == len(ds.splits["train"])


# ---------------------------------------------------------------------------------------------
# Faults: killed preprocessing, changed source, corrupt lines far into a file.

def test_folder_left_by_a_killed_preprocessing_run_is_never_used(tmp_path, generated_criteo):
    """A child process preprocesses and is killed (os._exit) after writing every file but before the
    rename: its temporary folder is never read, and the next load builds afresh and removes it."""
    cache = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import os
        from ctrbench.datasets import load, tabular
        real = tabular.preprocess
        def killed(*args, **kwargs):
            real(*args, **kwargs)
            os._exit(9)
        tabular.preprocess = killed
        load("criteo", file={str(generated_criteo)!r}, min_count=2, cache_dir={str(cache)!r})
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    left = [p for p in cache.iterdir()]
    assert len(left) == 1 and ".tmp-" in left[0].name and (left[0] / "X.npy").is_file()
    ds = load("criteo", file=str(generated_criteo), min_count=2)
    assert not ds.stats["cache_hit"] and len(ds.y) == 3000
    assert [p.name for p in cache_folders(tmp_path)] == [Path(ds.stats["cache_folder"]).name]


@pytest.mark.parametrize("damage", ["no meta.json", "short X.npy", "older format", "bad json"])
def test_half_written_cache_folder_is_rebuilt(tmp_path, generated_criteo, damage):
    good = load("criteo", file=str(generated_criteo), min_count=2)
    X_good = np.array(good.X)
    folder = Path(good.stats["cache_folder"])
    del good
    if damage == "no meta.json":
        (folder / "meta.json").unlink()
    elif damage == "short X.npy":
        with open(folder / "X.npy", "r+b") as f:
            f.truncate((folder / "X.npy").stat().st_size - 100)
    elif damage == "older format":
        meta = json.loads((folder / "meta.json").read_text())
        (folder / "meta.json").write_text(json.dumps(dict(meta, format=1)))
    else:
        (folder / "meta.json").write_text('{"rows": ')
    assert not tabular.cache_complete(folder)
    rebuilt = load("criteo", file=str(generated_criteo), min_count=2)
    assert not rebuilt.stats["cache_hit"] and np.array_equal(rebuilt.X, X_good)
    assert tabular.cache_complete(folder)
    assert load("criteo", file=str(generated_criteo), min_count=2).stats["cache_hit"]


def test_cache_of_a_changed_source_is_rebuilt_and_the_old_one_removed(tmp_path):
    path = write_criteo_tsv(tmp_path / "train.txt", 1000, seed=0)
    old = load("criteo", file=str(path), min_count=2)
    old_rows = np.array(old.X[:5])
    lines = lines_of(path)
    lines[0] = lines[0].replace(b"\t", b"\t1", 1) if not lines[0].startswith(b"1") else lines[0]
    path.write_bytes(b"".join(lines[:-1]))             # a new version: one row fewer, first row changed
    new = load("criteo", file=str(path), min_count=2)
    assert not new.stats["cache_hit"] and len(new.y) == 999
    assert new.stats["cache_folder"] != old.stats["cache_folder"]
    assert [p.name for p in cache_folders(tmp_path)] == [Path(new.stats["cache_folder"]).name]
    assert np.array_equal(old.X[:5], old_rows)         # a reader of the old map keeps its data (Linux)
    # Same size, new content: the modification time changes the key.
    same_size = path.read_bytes().replace(b"\t0\t", b"\t1\t", 1)
    assert len(same_size) == path.stat().st_size
    stat = path.stat()
    path.write_bytes(same_size)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert not load("criteo", file=str(path), min_count=2).stats["cache_hit"]


def corrupt(path: Path, line: int, kind: str) -> Path:
    """Break 1-based `line` of `path`: a number that is not one, or a column too few."""
    lines = lines_of(path)
    cells = lines[line - 1].rstrip(b"\n").split(b"\t")
    if kind == "number":
        cells[3] = b"x9"
    else:
        cells = cells[:-1]
    lines[line - 1] = b"\t".join(cells) + b"\n"
    out = path.with_name(f"{kind}_{line}.txt")
    out.write_bytes(b"".join(lines))
    return out


@pytest.mark.parametrize("kind", ["number", "columns"])
@pytest.mark.parametrize("header", [False, True])
def test_corrupt_line_far_into_the_file_is_named(generated_criteo, kind, header, monkeypatch):
    bad = corrupt(generated_criteo, 2345, kind)
    if header:     # the sample's layout: a header line first, so the bad line is one further down
        bad.write_bytes("\t".join(tabular.CRITEO_COLUMNS).encode() + b"\n" + bad.read_bytes())
    scans = []
    real = tabular_lines.find_first_bad_line
    monkeypatch.setattr(tabular_reader, "find_first_bad_line",
                        lambda *args: scans.append(args[4] if len(args) > 4 else 1) or real(*args))
    with pytest.raises(BadInputError) as error:
        load("criteo", file=str(bad), min_count=2, block_size=16 << 10)     # many blocks before the bad one
    assert error.value.line == 2345 + header and error.value.path == str(bad)
    assert scans and 1000 < scans[0] <= 2345 + header       # the line scan began near the failing block


@pytest.mark.parametrize("kind", ["number", "columns"])
def test_skip_drops_and_counts_a_corrupt_line_without_a_second_pass(generated_criteo, kind, monkeypatch):
    """Skip mode converts numbers per block, so a bad value costs no cleaned copy of the file (the slow
    path), and gives exactly the arrays of the file without that line."""
    bad = corrupt(generated_criteo, 1500, kind)
    without = generated_criteo.with_name(f"without_{kind}.txt")
    without.write_bytes(b"".join(line for k, line in enumerate(lines_of(generated_criteo), start=1) if k != 1500))

    def no_copy(*args, **kwargs):
        raise AssertionError("the slow cleaned-copy path ran")

    monkeypatch.setattr(tabular_preprocess, "clean_copy", no_copy)
    skipped = load("criteo", file=str(bad), min_count=2, on_bad_lines="skip", block_size=16 << 10)
    reference = load("criteo", file=str(without), min_count=2)
    assert skipped.stats["skipped_lines"] == 1 and len(skipped.y) == 2999
    assert np.array_equal(skipped.X, reference.X) and np.array_equal(skipped.y, reference.y)


def test_line_scan_starts_where_it_is_told(tmp_path):
    path = tmp_path / "t.tsv"
    rows = ["1\t2"] * 50 + ["x\t2"] + ["1\t2"] * 10 + ["y\t2"]
    path.write_text("\n".join(rows) + "\n")
    spec = tabular.TableSpec("t", "a", ["b"], [], column_names=["a", "b"], delimiter="\t")
    assert tabular_lines.find_first_bad_line(path, spec, False, 2)[0] == 51
    assert tabular_lines.find_first_bad_line(path, spec, False, 2, start_line=51)[0] == 51
    assert tabular_lines.find_first_bad_line(path, spec, False, 2, start_line=52)[0] == 62
    assert tabular_lines.find_first_bad_line(path, spec, False, 2, start_line=63) is None


def test_split_view_head_and_labels(tmp_path):
    X, y = mapped(tmp_path, rows=100)
    view = SplitView(X, y, np.arange(0, 100, 3))
    assert np.array_equal(view.head(4).index, [0, 3, 6, 9]) and view.head(4).X is X
    assert np.array_equal(view.labels(), np.arange(0, 100, 3) % 2) and view.num_fields == 3
