"""`ctrbench tune`: the command line of ctrbench.tuning."""
from __future__ import annotations

import torch

from ctrbench.commands.arguments import (
    add_data_arguments,
    add_machine_arguments,
    add_training_arguments,
    comma_list,
    seed_list,
    training_config,
)
from ctrbench.models import list_models
from ctrbench.tuning.fields import GRACE_S, HEARTBEAT_S, PRUNE_FROM


def add_tune_parser(commands) -> None:
    parser = commands.add_parser(
        "tune", help="tune each model's declared search space with Optuna; re-run the best on several seeds",
        description="One Optuna study per (dataset, model) in a relational database (default: an SQLite file "
                    "RESULTS/studies/studies.db; --storage postgresql://... lets workers on many machines pull "
                    "trials from one study). Seeded TPE (or a grid), pruning on per-epoch validation AUC. Rerunning "
                    "continues the study up to --trials finished trials. Then the best configuration is re-run "
                    "through the ordinary protocol on --rerun-seeds seeds (records marked tuned), the study's "
                    "plots go to RESULTS/tuning/ and the leaderboard is regenerated.")
    add_data_arguments(parser)
    parser.add_argument("--models", type=comma_list, required=True,
                        help=f"comma-separated, from {', '.join(list_models())}")
    parser.add_argument("--trials", type=int, required=True,
                        help="finished (complete or pruned) trials of distinct points per study, the whole space "
                             "at most; the first is the untuned configuration, trained to the end")
    parser.add_argument("--storage", help="database URL (default sqlite:///RESULTS/studies/studies.db)")
    parser.add_argument("--study", help="study name (several models: NAME-<model>); default "
                                        "<dataset>-<model>-<hash of the settings>")
    parser.add_argument("--timeout", type=float, help="seconds per study after which no new trial starts")
    parser.add_argument("--seed", type=int, default=0, help="the trials' seed (split, initialisation) and the "
                                                            "sampler's (default 0)")
    parser.add_argument("--sampler", choices=("tpe", "grid"), default="tpe",
                        help="tpe (seeded) or grid (BARS-style: every point of the space, --trials at most)")
    pruning = parser.add_mutually_exclusive_group()
    pruning.add_argument("--prune-from", type=int, default=PRUNE_FROM, metavar="EPOCH",
                         help="the median pruner may stop a trial from this epoch on, when its validation AUC is "
                              f"below the median of earlier trials at that epoch (default {PRUNE_FROM})")
    pruning.add_argument("--no-pruning", action="store_true", help="train every trial until early stopping")
    parser.add_argument("--rerun-seeds", type=seed_list, default=list(range(5)), metavar="SEEDS",
                        help="re-run the best configuration on these seeds: a count or a list (default 5)")
    parser.add_argument("--no-rerun", action="store_true",
                        help="tune only (a worker that leaves the re-runs to another)")
    parser.add_argument("--interaction", help="the pairwise-product implementation (default: each model's)")
    add_training_arguments(parser, "bars-budget")
    parser.add_argument("--heartbeat", type=int, default=HEARTBEAT_S, metavar="SECONDS",
                        help=f"a running trial's heartbeat; one silent for 3 beats ({GRACE_S} s by default) is "
                             f"taken as dead, failed and retried (default {HEARTBEAT_S})")
    add_machine_arguments(parser)
    parser.set_defaults(handler=command_tune)


def command_tune(args) -> int:
    # imported here, not with the parser: Optuna and SQLAlchemy take ~1 s that `ctrbench --help` should not pay
    import optuna

    from ctrbench.report.leaderboard import write_leaderboard
    from ctrbench.tuning.plots import write_study_plots
    from ctrbench.tuning.tuner import (
        TuneSettings,
        default_storage,
        finished_points,
        open_storage,
        redact,
        rerun_best,
        tune,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.heartbeat < 1:
        raise ValueError(f"--heartbeat must be >= 1, got {args.heartbeat}")
    config = training_config(args)
    settings = [TuneSettings(args.dataset, model, args.interaction, config, dict(args.data_option), args.device,
                             args.seed, args.sampler, args.data_dir, None if args.no_pruning else args.prune_from)
                for model in args.models]                       # every model checked before anything runs
    url = args.storage or default_storage(args.results_dir)
    storage = open_storage(url, args.heartbeat, 3 * args.heartbeat)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for setting in settings:
        name = None if not args.study else args.study if len(settings) == 1 else f"{args.study}-{setting.model}"
        study = tune(setting, storage, args.trials, name, args.timeout, progress=not args.quiet)
        print(f"study {study.study_name} ({redact(url)}): {finished_points(study)} finished trials, best "
              f"validation AUC {study.best_value:.4f} with {study.best_params}")
        for path in write_study_plots(study, args.results_dir):
            print(f"plot: {path}")
        if not args.no_rerun:
            rerun_best(study, setting, args.rerun_seeds, args.results_dir, progress=not args.quiet)
    if not args.no_rerun:
        print(f"leaderboard: {write_leaderboard(args.results_dir)}")
    return 0
