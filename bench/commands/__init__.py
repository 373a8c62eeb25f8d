"""Command line: `ctrbench run | tune | leaderboard | results | list | attention | gate | gate-baseline | download
| measure | reproduce` (also `python -m ctrbench ...`). Every command lives in this package; the libraries below never
parse arguments."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from ctrbench import gate
from ctrbench.datasets import list_datasets
from ctrbench.models import check_hparams, hparams_for, list_interactions, list_models, model_entry
from ctrbench.models.registry import preset_hparams
from ctrbench.report.leaderboard import write_leaderboard
from ctrbench.training.context import RunContext
from ctrbench.training.distributed import Distributed, launched_by_torchrun, report_failure
from ctrbench.training.embedding_updates import list_embedding_updates
from ctrbench.training.protocol import Grid, run_grid
from ctrbench.training.train import TrainConfig

from .arguments import (
    add_data_arguments,
    add_machine_arguments,
    add_training_arguments,
    comma_list,
    key_value,
    seed_list,
    training_config,
)
from .attention import add_attention_parser
from .measure import add_measure_parser
from .reproduce import add_reproduce_parser
from .tune import add_tune_parser

DEFAULT_RESULTS = Path("results")


def add_run_parser(commands) -> None:
    parser = commands.add_parser(
        "run", help="train and test a grid of models x interactions x seeds; store records; update the leaderboard",
        description="Train every (model, interaction, seed) with early stopping on validation AUC, score the "
                    "test split, store one JSON record per finished run under RESULTS/runs/ and regenerate "
                    "RESULTS/leaderboard.md. Finished runs are skipped, so rerunning a killed command resumes it.")
    add_data_arguments(parser)
    parser.add_argument("--models", type=comma_list, default=["fm", "nfm", "afm"],
                        help=f"comma-separated, from {', '.join(list_models())} (default fm,nfm,afm)")
    parser.add_argument("--interactions", default="default",
                        help="comma-separated implementation names, 'all' (every valid one per model), "
                             "'default' (each model's default) or 'auto' (each model's fastest on this machine, "
                             "from a short calibration cached per machine; the record says what it picked)")
    parser.add_argument("--seeds", type=seed_list, default=list(range(3)),
                        help="a count (5 = seeds 0..4) or a list (default 3)")
    parser.add_argument("--embed-dim", type=int, help="embedding size for every model (default 16)")
    parser.add_argument("--set", type=key_value, action="append", default=[], metavar="NAME=VALUE", dest="hparams",
                        help="model hyper-parameter, e.g. attn_dim=32 or hidden=[64,32] (repeatable)")
    add_training_arguments(parser, "quick")
    defaults = TrainConfig()
    parser.add_argument("--embedding-optimizer", default=defaults.embedding_optimizer,
                        choices=list_embedding_updates(), metavar="NAME",
                        help=f"how the embedding tables are updated: {', '.join(list_embedding_updates())} "
                             f"(default {defaults.embedding_optimizer}: one dense Adam over every parameter; the "
                             "others give the tables sparse gradients and the dense layers their own Adam)")
    parser.add_argument("--embedding-lr", type=float, default=None,
                        help="the embedding tables' learning rate (default: --lr)")
    add_machine_arguments(parser)
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile each model for training and evaluation (its own cell in the records; "
                             "compilation is warm-up, outside the recorded throughput)")
    parser.add_argument("--dist-timeout", type=float, default=None, metavar="SECONDS",
                        help="under torchrun: limit on the rendezvous and on every collective, so a hung rank "
                             "ends the job (default $CTRBENCH_DIST_TIMEOUT or 600)")
    parser.set_defaults(handler=command_run)


def command_run(args) -> int:
    hparams = dict(args.hparams)
    if args.embed_dim is not None:
        hparams["embed_dim"] = args.embed_dim
    named = args.interactions in ("all", "default", "auto")
    interactions = args.interactions if named else comma_list(args.interactions)
    config = training_config(args, embedding_optimizer=args.embedding_optimizer, embedding_lr=args.embedding_lr)
    # Under `torchrun --nproc_per_node=N` (WORLD_SIZE > 1) every rank trains each run with DDP and
    # only rank 0 prints, writes records and the leaderboard; see ctrbench.training.distributed.
    cluster = Distributed.start(args.device, args.dist_timeout) if launched_by_torchrun() else None
    context = (cluster.context(progress=not args.quiet, threads=args.threads) if cluster else
               RunContext(progress=not args.quiet, threads=args.threads))
    writer = context.is_writer
    check_hparams(args.models, hparams)
    # A preset may give each model its own architecture (`--preset bars`); flags and --set override it.
    architectures = {model: preset_hparams(model, args.preset) for model in args.models}
    groups = ([(list(args.models), hparams)] if not any(architectures.values()) else
              [([model], {**architectures[model], **hparams_for(model, hparams)}) for model in args.models])
    try:
        for models, model_hparams in groups:
            grid = Grid(args.dataset, models, interactions, args.seeds, model_hparams, dict(args.data_option), config,
                        args.device, args.data_dir, args.compile)
            run_grid(grid, args.results_dir, context, log=print if writer else (lambda message: None))
    except BaseException as error:
        if cluster:
            report_failure(cluster, error)
        raise
    if writer:
        path = write_leaderboard(args.results_dir)
        print(f"leaderboard: {path}")
    if cluster:
        cluster.close()
    return 0


def add_leaderboard_parser(commands) -> None:
    parser = commands.add_parser("leaderboard", help="regenerate RESULTS/leaderboard.md from the stored records",
                                 description="Rebuild the Markdown leaderboard from the JSON records; corrupt "
                                             "or partial records are reported and skipped.")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS,
                        help=f"where the records are and the leaderboard goes (default {DEFAULT_RESULTS}/)")
    parser.add_argument("--readme", type=Path, metavar="README",
                        help="also rewrite the summary block of this README from the same records")
    parser.set_defaults(handler=command_leaderboard)


def command_leaderboard(args) -> int:
    print(f"leaderboard: {write_leaderboard(args.results_dir)}")
    if args.readme:
        from ctrbench.report.leaderboard import write_readme_summary
        print(f"readme summary: {write_readme_summary(args.readme, args.results_dir)}")
    return 0


def add_results_parser(commands) -> None:
    parser = commands.add_parser(
        "results", help="list what the results folder holds; --archive moves what the front page no longer cites",
        description="Every stored result by kind, dataset or device, commit and date, and whether it is current. "
                    "With --archive, results of code that no longer exists (a model or implementation gone from "
                    "the registry, a device sweep that predates an implementation) and sessions superseded by a "
                    "newer one on the same device class are moved to RESULTS/archive/<date>/, listed in "
                    "RESULTS/archive/index.md, and the leaderboard is regenerated. Nothing is deleted.")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS,
                        help=f"the results folder (default {DEFAULT_RESULTS}/)")
    parser.add_argument("--archive", action="store_true", help="move the stale results to the archive folder")
    parser.set_defaults(handler=command_results)


def command_results(args) -> int:
    from ctrbench.report.inventory import archive, inventory, inventory_table
    if not Path(args.results_dir).is_dir():
        raise ValueError(f"no results folder at {args.results_dir} (--results-dir names another)")
    entries = inventory(args.results_dir)
    print(inventory_table(entries) if entries else f"{args.results_dir}: nothing stored yet")
    if args.archive:
        moved = archive(args.results_dir, entries)
        print(f"archived {len(moved)} file(s) under {Path(args.results_dir) / 'archive'}" if moved
              else "nothing to archive: every stored result is current")
        if moved:
            print(f"leaderboard: {write_leaderboard(args.results_dir)}")
    return 0


def add_list_parser(commands) -> None:
    parser = commands.add_parser("list", help="list models, interactions, valid pairs and datasets",
                                 description="What the registry holds.")
    parser.set_defaults(handler=command_list)


def command_list(args) -> int:
    for model in list_models():
        entry = model_entry(model)
        print(f"model {model}: {entry.description}")
        print(f"  interactions: {', '.join(list_interactions(model=model))} (default {entry.default_interaction})")
        for name, (default, meaning) in entry.hparams.items():
            print(f"  --set {name}={json.dumps(default)}: {meaning}")
    print(f"datasets: {', '.join(list_datasets())}")
    from ctrbench.models.peers import missing_peers_hint
    hint = missing_peers_hint()
    if hint:
        print(hint)
    return 0


def add_gate_baseline_parser(commands) -> None:
    parser = commands.add_parser(
        "gate-baseline", help="measure the regression gate's cells on unchanged code and write its baseline",
        description="Runs the gate's benchmark cells RUNS times (each in a fresh pytest process), takes the "
                    "median time ratio per cell, reports the run-to-run spread, and writes the baseline with "
                    "this machine's signature and the commit measured, which `ctrbench gate` checks against "
                    "(on another machine, by timing that commit beside the candidate). Needs the source checkout.")
    parser.add_argument("--runs", type=int, default=5, help="runs of unchanged code (default 5)")
    parser.add_argument("--tolerance", type=float, default=gate.DEFAULT_TOLERANCE,
                        help=f"allowed growth of a time ratio, as a fraction (default {gate.DEFAULT_TOLERANCE}); "
                             "must stay above the measured spread and below 1.0 so a 2x slowdown trips")
    parser.add_argument("--output", type=Path, default=gate.BASELINE)
    parser.set_defaults(handler=command_gate_baseline)


def command_gate_baseline(args) -> int:
    if args.runs < 1:
        raise ValueError("--runs must be >= 1")
    if not 0 < args.tolerance < 1:
        raise ValueError(f"--tolerance must be in (0, 1) so that a 2x slowdown trips the gate, got {args.tolerance}")
    source = gate.provenance()
    with tempfile.TemporaryDirectory() as workdir:
        runs = gate.measure_runs(args.runs, Path(workdir))
    baseline = {**gate.baseline_from_runs(runs, args.tolerance), **source}
    print(f"measured spread of time ratios over {args.runs} runs: {baseline['measured_spread']:.1%} "
          f"(tolerance {args.tolerance:.0%})")
    if baseline["measured_spread"] >= args.tolerance:
        print("warning: the spread reaches the tolerance; unchanged code could fail the gate", file=sys.stderr)
    print(f"machine: {gate.describe(source['machine'])}, signature {source['machine']['signature']}")
    if source["code_changed"] is not False:
        print(f"note: measured with uncommitted code changes (on {source['commit'] or 'no commit'}); on another "
              "machine the gate times the commit that holds this file, so commit it with the code it measured")
    print(f"baseline: {gate.save_baseline(baseline, args.output)}")
    return 0


def add_gate_parser(commands) -> None:
    parser = commands.add_parser(
        "gate", help="the performance-regression gate: fail if a cell regressed against the baseline",
        description="Runs the gate's benchmark cells in fresh pytest processes: deterministic costs must not "
                    "grow, time ratios to triu_index may grow by at most the baseline's tolerance. On the "
                    "baseline's machine (same signature) it compares with the baseline's ratios; elsewhere it "
                    "times the baseline's commit and the candidate here, interleaved (A/B); without that "
                    "commit's code (shallow clone) it checks the costs only, and says so. Cells that regress "
                    "are measured again, up to ATTEMPTS times, and only a cell that regresses every time fails "
                    "the gate. Needs the source checkout.")
    parser.add_argument("--attempts", type=int, default=3, help="measurements before a regression counts (default 3)")
    parser.add_argument("--baseline", type=Path, default=gate.BASELINE,
                        help=f"the baseline file (default {gate.BASELINE.relative_to(gate.REPO)} in the checkout)")
    parser.add_argument("--ab", action="store_true",
                        help="time the baseline's commit beside the candidate even on the baseline's own machine")
    parser.add_argument("-k", dest="keyword", metavar="EXPRESSION",
                        help="only the gate cells this pytest -k expression selects (a quick look, not the gate)")
    parser.set_defaults(handler=command_gate)


def command_gate(args) -> int:
    if args.attempts < 1:
        raise ValueError("--attempts must be >= 1")
    baseline = gate.load_baseline(args.baseline)
    with tempfile.TemporaryDirectory() as workdir:
        regressions, notes, comparison = gate.run_gate(
            baseline, Path(workdir), args.attempts, baseline_path=args.baseline, ab=args.ab,
            pytest_args=("-k", args.keyword) if args.keyword else ())
    for note in notes:
        print(f"gate: note: {note}")
    for regression in regressions:
        print(f"gate: REGRESSION: {regression}")
    print(f"gate: {len(regressions)} confirmed regression(s); compared with {comparison}")
    return 1 if regressions else 0


def add_download_parser(commands) -> None:
    parser = commands.add_parser("download", help="fetch a public dataset into the data folder",
                                 description="Fetch a public dataset from its official address into "
                                             "DATA_DIR/<name>/, checking sizes and checksums; files already "
                                             "there and matching are kept.")
    parser.add_argument("name", help="the dataset (frappe, criteo, movielens; avazu is behind a login and is "
                                     "fetched by hand)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where to put it (default: $CTRBENCH_DATA_DIR, else ../shared/datasets beside the "
                             "checkout if present, else ~/.cache/ctrbench/datasets)")
    parser.set_defaults(handler=command_download)


def command_download(args) -> int:
    from ctrbench.datasets import download
    print(f"download: {args.name} is in {download(args.name, args.data_dir)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctrbench", description="Benchmark CTR feature-interaction models "
                                     "and their pairwise-product implementations.")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the Python traceback instead of one line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_run_parser, add_tune_parser, add_leaderboard_parser, add_results_parser, add_list_parser,
                add_attention_parser, add_gate_parser, add_gate_baseline_parser, add_download_parser,
                add_measure_parser, add_reproduce_parser):
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"\nctrbench {args.command}: interrupted. Finished runs are stored; the same command resumes.",
              file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - a user sees one line; --debug shows where it came from
        if args.debug:
            raise
        text = error.for_cli() if hasattr(error, "for_cli") else str(error)
        known = isinstance(error, (ValueError, OSError, RuntimeError, ImportError))
        kind = "" if known else f"{type(error).__name__}: "
        print(f"ctrbench {args.command}: error: {kind}{text} (--debug shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
