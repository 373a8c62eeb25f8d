"""`ctrbench measure device_sweep`: the flags of ctrbench.measure.device_sweep, AFM's pooling layer over
fields × batches × modes on one device; and the checks of timing flags it shares with afm_gpu_step."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ctrbench.measure import device_sweep
from ctrbench.measure.cells import implementations


def int_list(text: str) -> list[int]:
    try:
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def names(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def check_timing_args(parser: argparse.ArgumentParser, args: argparse.Namespace, modes) -> None:
    """What this sweep and afm_gpu_step both refuse: no timed step, a negative warm-up, a mode not in
    `modes`, a CUDA device torch cannot see."""
    if args.reps < 1 or args.warmup < 0:
        parser.error("--reps must be >= 1 and --warmup >= 0")
    if bad := [m for m in args.modes if m not in modes]:
        parser.error(f"unknown mode(s) {bad}; known: {', '.join(modes)}")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device (torch.cuda.is_available() is False)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ctrbench measure device_sweep",
        description="Time AFM's pair products + attention pooling (E=16, A=16, float32) for every implementation "
                    "AFM accepts over fields x batches x modes on one device; record median/min seconds, "
                    "samples/s and CUDA peak extra memory per cell, OOM and errors included. The JSON is "
                    "rewritten after every cell; `ctrbench leaderboard` renders it.")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--fields", type=int_list, default=list(device_sweep.FIELDS), help="default 39,100")
    parser.add_argument("--batches", type=int_list, default=list(device_sweep.BATCHES),
                        help="default 1024,4096,16384,65536")
    parser.add_argument("--modes", type=names, default=list(device_sweep.MODES),
                        help="train (forward+backward), forward")
    parser.add_argument("--impls", type=names, help="implementations (default: every one AFM accepts, "
                                                    "but those whose own code does not run on the device)")
    parser.add_argument("--reps", type=int, default=5, help="timed steps per cell (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--budget-s", type=float, default=240.0,
                        help="start no new cell after this many seconds (default 240)")
    parser.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="the file goes to RESULTS/gpu/afm_<device-name>.json (default results)")
    parser.add_argument("--out", type=Path, help="write here instead")
    args = parser.parse_args(argv)
    if bad := [i for i in args.impls or [] if i not in implementations("afm")]:
        parser.error(f"not an AFM implementation: {bad}; known: {', '.join(implementations('afm'))}")
    check_timing_args(parser, args, device_sweep.MODES)
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    device = device_sweep.pinned_device(args.device)
    print_flushed = lambda *a: print(*a, flush=True)  # noqa: E731  (the log is read live on a remote machine)
    device_sweep.run(device, args.out or device_sweep.default_out(args.results_dir, device), args.fields,
                     args.batches, args.modes, args.impls, args.reps, args.warmup, args.budget_s, argv,
                     log=print_flushed)
    return 0
