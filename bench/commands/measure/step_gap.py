"""`ctrbench measure step_gap`: the flags of ctrbench.measure.step_gap, the protocol's train throughput
against the bare train step."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ctrbench.commands.values import comma_list
from ctrbench.measure import step_gap
from ctrbench.probes.device import resolve_device


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ctrbench measure step_gap", description=step_gap.__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cpu, cuda, cuda:N or auto (default cuda)")
    parser.add_argument("--models", type=comma_list, default=["fm", "afm"], help="default fm,afm")
    parser.add_argument("--interactions", type=comma_list, default=None,
                        help="one implementation per model (default: each model's default)")
    parser.add_argument("--batches", type=comma_list, default=["65536"], help="comma-separated (default 65536)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the purchase log (80%% train)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile both (the optimizer stays eager)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here (default: print only)")
    args = parser.parse_args(argv)
    if args.interactions and len(args.interactions) != len(args.models):
        parser.error("--interactions needs one name per model")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        step_gap.measure(args.models, [int(b) for b in args.batches], resolve_device(args.device), args.rows,
                         args.epochs, args.compile, args.interactions, args.out)
    except ValueError as error:
        print(f"step_gap: error: {error}", file=sys.stderr)
        return 2
    if args.out:
        print(f"step_gap: {args.out}")
    return 0
