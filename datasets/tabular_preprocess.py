"""One delimited file preprocessed into a folder of arrays (X.npy, y.npy, meta.json).

Hash mode is one streaming pass that writes the final ids. Vocab mode's first streaming pass writes per
block each categorical value's index into the block's distinct values (int32), the 64-bit hashes of those
distinct values and their strings; the vocabulary passes (tabular_vocab) then turn that into ids."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from .core import BadInputError, FieldCodebook, field_offsets, id_dtype, make_splits
from .npyio import NpyAppender, read_header
from .tabular_encoding import NUMERIC_DIM, encode_block, encode_block_codes, numeric_codebook
from .tabular_formats import Encoding, TableSpec
from .tabular_lines import clean_copy
from .tabular_reader import TableReader
from .tabular_vocab import BlockLog, count_training_values, map_blocks, vocabulary


def preprocess(path: Path, spec: TableSpec, encoding: Encoding, seed: int, folder: Path) -> dict:
    """Stream `path` into folder/X.npy (int64 (N, F) global ids), folder/y.npy, folder/meta.json.
    Blocks follow the reader's `encoding.block_size`."""
    started = time.perf_counter()
    reader = TableReader(path, spec, encoding)
    vocab = encoding.categorical == "vocab"
    numeric_fields = len(spec.numeric)
    work = {"codes": folder / "codes.npy", "hashes": folder / "hashes.npy", "strings": folder / "strings.arrow"}
    dropped_by_cleaning = 0
    try:
        log = _first_pass(reader, spec, encoding, folder / "X.npy", folder / "y.npy", work)
    except pa.ArrowInvalid:
        # Only reached with on_bad_lines="skip" when a value conversion (not a column count) failed:
        # copy the file without its bad lines once, then read the copy.
        cleaned = folder / "cleaned.csv"
        dropped_by_cleaning = clean_copy(path, spec, reader.has_header, reader.expected_columns, cleaned)
        reader = TableReader(cleaned, spec, encoding)
        log = _first_pass(reader, spec, encoding, folder / "X.npy", folder / "y.npy", work)
        cleaned.unlink()
    rows = read_header(folder / "y.npy")[1][0]
    if rows == 0:
        raise BadInputError(path, None, "no data rows")
    field_dims = [NUMERIC_DIM] * numeric_fields
    codebooks = [numeric_codebook() for _ in spec.numeric]
    if vocab:
        train_mask = np.zeros(rows, dtype=bool)
        train_mask[make_splits(rows, seed)["train"]] = True
        counted = count_training_values(work["codes"], work["hashes"], log, train_mask, numeric_fields)
        del train_mask
        vocabularies = [vocabulary(d, c, encoding.min_count) for d, c in counted]
        del counted
        field_dims += [2 + len(h) for h, _ in vocabularies]
        offsets = field_offsets(field_dims)
        names = map_blocks(work["codes"], work["hashes"], work["strings"], log, vocabularies, offsets,
                           numeric_fields, folder / "X.npy", id_dtype(sum(field_dims)))
        for file in work.values():
            file.unlink()
        codebooks += [FieldCodebook(field_names) for field_names in names]
    else:
        field_dims += [1 + encoding.hash_buckets] * len(spec.categorical)
        codebooks += [FieldCodebook(["<missing>"], "hash bucket ") for _ in spec.categorical]
    meta = {"rows": rows, "field_names": [*spec.numeric, *spec.categorical], "field_dims": field_dims,
            "codebooks": [c.to_json() for c in codebooks],
            "stats": {"skipped_lines": reader.skipped + dropped_by_cleaning,
                      "preprocess_seconds": round(time.perf_counter() - started, 3)}}
    (folder / "meta.json").write_text(json.dumps(meta))
    return meta


def _hash_field_dims(spec: TableSpec, encoding: Encoding) -> list[int]:
    return [NUMERIC_DIM] * len(spec.numeric) + [1 + encoding.hash_buckets] * len(spec.categorical)


def _field_offsets(spec: TableSpec, encoding: Encoding) -> np.ndarray:
    """Global id offsets in hash mode, where every field's size is known before reading."""
    return field_offsets(_hash_field_dims(spec, encoding))


def _first_pass(reader: TableReader, spec: TableSpec, encoding: Encoding, x_path: Path, y_path: Path,
                work: dict[str, Path]) -> BlockLog | None:
    """Stream the file once: labels to y_path, and final ids to x_path (hash) or, for vocab, block codes,
    distinct-value hashes and strings to the `work` files (returns the log of blocks written)."""
    F = len(spec.numeric) + len(spec.categorical)
    if encoding.categorical != "vocab":
        offsets = _field_offsets(spec, encoding)
        dtype = id_dtype(sum(_hash_field_dims(spec, encoding)))
        with NpyAppender(x_path, dtype, (F,)) as x_out, NpyAppender(y_path, np.float32) as y_out:
            for y, batch in reader.blocks():
                x_out.append(encode_block(batch, spec, encoding, offsets, dtype))
                y_out.append(y)
        return None
    log = BlockLog()
    schema = pa.schema([("value", pa.string())])
    with NpyAppender(work["codes"], np.int32, (F,)) as codes_out, NpyAppender(y_path, np.float32) as y_out, \
            NpyAppender(work["hashes"], np.uint64) as hashes_out, \
            pa.OSFile(str(work["strings"]), "wb") as sink, pa.ipc.new_stream(sink, schema) as strings_out:
        for y, batch in reader.blocks():
            codes, hashes, strings = encode_block_codes(batch, spec)
            codes_out.append(codes)
            y_out.append(y)
            hashes_out.append(np.concatenate(hashes) if hashes else np.zeros(0, np.uint64))
            strings_out.write_batch(pa.record_batch(
                [pa.concat_arrays(strings) if strings else pa.array([], pa.string())], schema=schema))
            log.rows.append(len(codes))
            log.distinct.append(np.array([len(h) for h in hashes], dtype=np.int64))
    return log
