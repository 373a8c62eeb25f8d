"""`ctrbench measure data_scale`: the flags of ctrbench.measure.data_scale, preprocessing and one FM epoch
from a file larger than memory, each in its own process."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ctrbench.files import write_text_atomic
from ctrbench.measure import data_scale

PROG = "ctrbench measure data_scale"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Preprocess a generated Criteo-layout file and train one FM epoch from its memory-mapped "
                    "cache, in separate processes; record rows/s and peak RSS of each.")
    parser.add_argument("--rows", type=int, default=data_scale.DEFAULT_ROWS,
                        help=f"rows of the generated file (default {data_scale.DEFAULT_ROWS:,}: a quick check; the "
                             "issue's measurement is 20000000)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON record here (default: print only)")
    parser.add_argument("--file", type=Path, default=None,
                        help="an existing Criteo-layout file to use instead of generating one (--rows is then "
                             "ignored)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the generated file and the cache go (default: a temporary folder, removed "
                             "at the end; a 20M-row file is ~4.9 GB and its cache ~3.2 GB)")
    parser.add_argument("--keep", action="store_true", help="keep the generated file and cache in --work-dir")
    parser.add_argument("--categorical", choices=("vocab", "hash"), default="vocab",
                        help="categorical encoding (default vocab, min_count 10: criteo's default)")
    parser.add_argument("--on-bad-lines", choices=("error", "skip"), default="error")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--block-rows", type=int, default=None,
                        help="rows of the file read at once by block_batches (default its BLOCK_ROWS)")
    parser.add_argument("--window-blocks", type=int, default=None,
                        help="blocks shuffled together (default block_batches' WINDOW_BLOCKS)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads for training (0: torch's default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = data_scale.Settings(
        rows=args.rows, file=args.file, work_dir=args.work_dir, keep=args.keep, categorical=args.categorical,
        on_bad_lines=args.on_bad_lines, batch_size=args.batch_size, block_rows=args.block_rows,
        window_blocks=args.window_blocks, seed=args.seed, threads=args.threads, progress=not args.no_progress)
    record = data_scale.run(settings, command=" ".join([PROG, *argv]))
    text = json.dumps(record, indent=2)
    if args.out:
        write_text_atomic(args.out, text + "\n")
    print(text)
    preprocess, train = record["preprocess"], record["train"]
    print(f"preprocess {preprocess['rows_per_s']:,.0f} rows/s, "
          f"peak RSS {preprocess['peak_rss_bytes'] / 2**30:.2f} GiB; "
          f"FM epoch {train['rows_per_s']:,.0f} rows/s, peak RSS {train['peak_rss_bytes'] / 2**30:.2f} GiB, "
          f"validation AUC {train['validation_auc']:.4f}", file=sys.stderr)
    return 0
