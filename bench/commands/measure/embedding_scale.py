"""`ctrbench measure embedding_scale`: the flags of ctrbench.measure.embedding_scale, the train step against
the size of the embedding tables, per embedding-update strategy."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ctrbench.commands.values import comma_list
from ctrbench.measure import embedding_scale
from ctrbench.measure.cells import VOCAB_ROWS
from ctrbench.models import list_models
from ctrbench.probes.device import resolve_device
from ctrbench.training.embedding_updates import list_embedding_updates

PROG = "ctrbench measure embedding_scale"


def parse_args(argv: list[str]) -> argparse.Namespace:
    fast = embedding_scale.FAST_INTERACTIONS
    parser = argparse.ArgumentParser(prog=PROG, description=embedding_scale.__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=comma_list, default=["fm", "afm"],
                        help=f"from {', '.join(list_models())} (default fm,afm), each at its default implementation")
    parser.add_argument("--rows", type=lambda s: [int(float(v)) for v in comma_list(s)], default=list(VOCAB_ROWS),
                        help="embedding rows (default 40000,1000000,10000000)")
    parser.add_argument("--interactions", type=comma_list, default=list(fast),
                        help="MODEL:IMPLEMENTATION overrides of the default implementation (default "
                             f"{','.join(fast)}: AFM's default, triu_index, takes ~6 s a step at F=39, "
                             "B=4096 on 2 cores, all of it in the pooling; an empty string: the defaults)")
    parser.add_argument("--strategies", type=comma_list, default=list_embedding_updates(),
                        help=f"from {', '.join(list_embedding_updates())} (default all)")
    parser.add_argument("--batch", type=int, default=None, help="default 4096 on the CPU, 65536 on a GPU")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per cell (median; default 7)")
    parser.add_argument("--calls", type=int, default=3, help="steps per round (default 3)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per cell before timing (default 2)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"the JSON (default {embedding_scale.RESULTS}/embedding_scale_<device>.json)")
    args = parser.parse_args(argv)
    for strategy in args.strategies:
        if strategy not in list_embedding_updates():
            parser.error(f"unknown strategy {strategy!r}; known: {', '.join(list_embedding_updates())}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    out = args.out or embedding_scale.default_out(device)
    document = embedding_scale.run(
        args.models, args.rows, args.strategies, args.batch or embedding_scale.default_batch(device), device,
        args.rounds, args.calls, args.warmup, dict(item.split(":", 1) for item in args.interactions if item), out,
        command=" ".join([PROG, *argv]))
    for entry in document["summary"]:
        ratios = ", ".join(f"{k} {v:.2f}" for k, v in entry["step_ratio_largest_over_smallest"].items())
        print(f"{entry['model']}: step at {entry['largest_rows']:,} rows / at {entry['smallest_rows']:,}: {ratios}; "
              f"best at the largest: {entry['best_at_largest']} ({entry['best_ratio']:.2f})")
    print(f"embedding_scale: {out}")
    return 0
