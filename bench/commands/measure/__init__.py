"""`ctrbench measure NAME [ARGS...]` (or `python -m ctrbench measure NAME ARGS...`): the stand-alone
measurements of ctrbench.measure, by name. Each has a module here with its flags (`parse_args`) and its
`main(argv)`; `ctrbench measure NAME --help` shows them."""
from __future__ import annotations

import argparse
import importlib

# What each measurement measures, for `ctrbench measure --help`; its module here owns its flags.
MEASUREMENTS = {
    "afm_gpu_step": "AFM's whole train step on a GPU, every implementation, against torch.compile",
    "device_sweep": "AFM's pooling layer over fields × batches × modes on one device",
    "step_gap": "the protocol's train step against the bare step: what the loop around it costs",
    "embedding_scale": "embedding tables up to millions of rows: step time and memory per update strategy",
    "data_scale": "training from a file larger than memory: preprocessing and streaming throughput",
}


def add_measure_parser(commands) -> None:
    parser = commands.add_parser(
        "measure", help="run one of the stand-alone measurements (results/gpu, results/embedding_scale, ...)",
        description="Run a measurement by name; its own flags follow the name. "
                    + "; ".join(f"{name}: {what}" for name, what in MEASUREMENTS.items()) + ".")
    parser.add_argument("name", choices=sorted(MEASUREMENTS), help="which measurement")
    parser.add_argument("script_args", nargs=argparse.REMAINDER, metavar="ARGS",
                        help="the measurement's flags (`ctrbench measure NAME --help` lists them)")
    parser.set_defaults(handler=command_measure)


def command_measure(args) -> int:
    # Imported by name only now: `ctrbench --help` and the other commands never load the measurements.
    command = importlib.import_module(f"{__name__}.{args.name}")
    return command.main(args.script_args) or 0
