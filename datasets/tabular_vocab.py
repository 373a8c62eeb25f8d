"""The vocabulary passes of vocab mode, over what the first pass wrote: count the training rows' values
(np.bincount per block, merged by hash), keep those seen min_count times, and map every block's distinct
values to global ids through a lookup table. Each pass holds one block of rows in memory at a time."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from .npyio import NpyAppender, iter_sized_blocks


@dataclass
class BlockLog:
    """What the vocab first pass wrote per block, so later passes can read the same blocks back."""
    rows: list[int] = field(default_factory=list)
    distinct: list[np.ndarray] = field(default_factory=list)    # per block: distinct values per column


class _HashCounter:
    """Sums (64-bit hash, count) pairs; merges when the pending pairs outgrow the merged ones, so memory
    stays proportional to the distinct values, not to the rows."""

    def __init__(self):
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []
        self.pending = self.merged = 0

    def add(self, hashes: np.ndarray, counts: np.ndarray) -> None:
        self.parts.append((hashes, counts))
        self.pending += len(hashes)
        if self.pending > max(1 << 20, 2 * self.merged):
            self._merge()

    def _merge(self) -> None:
        values = np.concatenate([p[0] for p in self.parts]) if self.parts else np.zeros(0, np.uint64)
        counts = np.concatenate([p[1] for p in self.parts]) if self.parts else np.zeros(0, np.int64)
        distinct, inverse = np.unique(values, return_inverse=True)
        summed = np.bincount(inverse, weights=counts, minlength=len(distinct)).astype(np.int64)
        self.parts = [(distinct, summed)]
        self.pending = self.merged = len(distinct)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct hashes sorted, counts)."""
        self._merge()
        return self.parts[0]


def count_training_values(codes: Path, hashes: Path, log: BlockLog, train_mask: np.ndarray,
                          numeric_fields: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per categorical column: (distinct 64-bit hashes, counts) over training rows, missing excluded."""
    columns = len(log.distinct[0]) if log.distinct else 0
    counters = [_HashCounter() for _ in range(columns)]
    start = 0
    for block, block_hashes, distinct in zip(iter_sized_blocks(codes, log.rows),
                                             iter_sized_blocks(hashes, [d.sum() for d in log.distinct]),
                                             log.distinct):
        rows = block[train_mask[start:start + len(block)], numeric_fields:].T   # (columns, training rows)
        start += len(block)
        bounds = np.concatenate([[0], np.cumsum(distinct)])
        for k in range(columns):
            counts = np.bincount(rows[k], minlength=int(distinct[k]) + 1)[1:]
            seen = np.flatnonzero(counts)
            counters[k].add(block_hashes[bounds[k]:bounds[k + 1]][seen], counts[seen])
    return [c.result() for c in counters]


def vocabulary(distinct: np.ndarray, counts: np.ndarray, min_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Kept hashes sorted (for searchsorted) and their local ids (2.. by descending count, ties by hash)."""
    kept = counts >= min_count
    hashes, kept_counts = distinct[kept], counts[kept]
    by_frequency = np.lexsort((hashes, -kept_counts))
    local = np.empty(len(hashes), dtype=np.int64)
    local[by_frequency] = 2 + np.arange(len(hashes))
    return hashes, local   # hashes already sorted: np.unique returned them sorted


def map_blocks(codes: Path, hashes: Path, strings: Path, log: BlockLog, vocabularies, offsets: np.ndarray,
               numeric_fields: int, x_path: Path, dtype=np.int64) -> list[list[str]]:
    """Write x_path (global ids in id_dtype of the vocabulary) from the pass-1 codes; return per categorical
    field the names of its local ids (0 missing, 1 OOV, then the kept values' raw strings, first occurrence in
    the file)."""
    named = [np.zeros(len(h), dtype=bool) for h, _ in vocabularies]
    found_names: list[list[tuple[np.ndarray, pa.Array]]] = [[] for _ in vocabularies]
    F = numeric_fields + len(vocabularies)
    with NpyAppender(x_path, dtype, (F,)) as x_out, pa.memory_map(str(strings)) as source:
        names_reader = pa.ipc.open_stream(source)
        for block, block_hashes, distinct in zip(iter_sized_blocks(codes, log.rows),
                                                 iter_sized_blocks(hashes, [d.sum() for d in log.distinct]),
                                                 log.distinct):
            block_strings = names_reader.read_next_batch().column(0)
            out = np.empty(block.shape, dtype=dtype)
            np.add(block[:, :numeric_fields], offsets[:numeric_fields], out=out[:, :numeric_fields])
            bounds = np.concatenate([[0], np.cumsum(distinct)])
            for k, (kept, local) in enumerate(vocabularies):
                f = numeric_fields + k
                values = block_hashes[bounds[k]:bounds[k + 1]]
                table = np.empty(len(values) + 1, dtype=np.int64)
                table[0] = offsets[f]                                  # missing
                if len(kept):
                    position = np.minimum(np.searchsorted(kept, values), len(kept) - 1)
                    found = kept[position] == values
                    table[1:] = np.where(found, local[position], 1) + offsets[f]
                    new = np.flatnonzero(found & ~named[k][position])
                    if len(new):
                        first = np.unique(position[new], return_index=True)[1]   # earliest of equal hashes
                        new = new[first]
                        named[k][position[new]] = True
                        found_names[k].append((local[position[new]],
                                               block_strings.slice(int(bounds[k]), int(distinct[k])).take(new)))
                else:
                    table[1:] = 1 + offsets[f]
                out[:, f] = table[block[:, f]]
            x_out.append(out)
    names = []
    for (kept, local), parts in zip(vocabularies, found_names):
        field_names = ["<missing>", "<oov>"] + [""] * len(kept)
        for i, h in zip(local.tolist(), kept.tolist()):
            field_names[i] = f"hash {h:016x}"          # only if the value's string was never seen
        for ids, values in parts:
            for i, name in zip(ids.tolist(), values.to_pylist()):
                field_names[i] = name
        names.append(field_names)
    return names
