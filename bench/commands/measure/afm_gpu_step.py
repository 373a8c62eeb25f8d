"""`ctrbench measure afm_gpu_step`: the flags of ctrbench.measure.afm_gpu_step, AFM's whole train step on a
GPU for every implementation."""
from __future__ import annotations

import argparse
from pathlib import Path

from ctrbench.measure import afm_gpu_step
from ctrbench.measure.device_sweep import pinned_device

from .device_sweep import check_timing_args


def shape(text: str) -> tuple[int, int]:
    """FIELDSxBATCH, the fields one of the shapes the measurement has a layout for."""
    try:
        fields, batch = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FIELDSxBATCH like 39x16384, got {text!r}") from None
    if fields not in afm_gpu_step.SHAPE_OF_FIELDS:
        raise argparse.ArgumentTypeError(f"fields must be one of {sorted(afm_gpu_step.SHAPE_OF_FIELDS)}, got {fields}")
    return fields, batch


def names(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ctrbench measure afm_gpu_step",
                                     description=afm_gpu_step.__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--shapes", type=lambda t: [shape(s) for s in t.split(",") if s.strip()],
                        default=list(afm_gpu_step.SHAPES_RUN),
                        help="FIELDSxBATCH,... (default 39x16384,39x65536,100x16384,39x4096)")
    parser.add_argument("--modes", type=names, default=list(afm_gpu_step.MODES), help="train, inference (default both)")
    parser.add_argument("--impls", type=names,
                        help=f"labels to run (default all: {', '.join(c[0] for c in afm_gpu_step.CONTENDERS)})")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--reps", type=int, default=7, help="timed steps per cell (default 7)")
    parser.add_argument("--budget-s", type=float, default=200.0, help="start no new cell after this (default 200)")
    parser.add_argument("--check-batch", type=int, default=4096 + 37, help="batch of the check (default 4133)")
    args = parser.parse_args(argv)
    labels = [c[0] for c in afm_gpu_step.CONTENDERS]
    if bad := [i for i in args.impls or [] if i not in labels]:
        parser.error(f"unknown contender(s) {bad}; known: {', '.join(labels)}")
    check_timing_args(parser, args, afm_gpu_step.MODES)
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    device = pinned_device(args.device)
    contenders = [c for c in afm_gpu_step.CONTENDERS if args.impls is None or c[0] in args.impls]
    afm_gpu_step.run(device, args.out, args.shapes, args.modes, contenders, args.warmup, args.reps, args.budget_s,
                     args.check_batch, list(argv), log=lambda *a: print(*a, flush=True))
    return 0
