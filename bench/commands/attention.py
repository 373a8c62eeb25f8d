"""`ctrbench attention`: the command line of ctrbench.attention.analysis."""
from __future__ import annotations

import torch

from ctrbench.attention.analysis import (
    COMPARISONS,
    DEFAULT_EMBED_DIM,
    HOT_SPOT_CHOICES,
    PRESET,
    analyse_attention,
    attention_models,
)

from .arguments import add_data_arguments, add_machine_arguments, add_training_arguments, key_value, training_config


def add_attention_parser(commands) -> None:
    """Add `ctrbench attention` to an argparse subparsers object (`parser.add_subparsers(...)`)."""
    parser = commands.add_parser(
        "attention", help="what a trained AFM's attention learned, per pair and per sample, against the truth",
        description="Train an attention model (AFM, or qAFM) and the comparison models with one seed, read the "
                    "attention weights of every test row, and write RESULTS/attention_<dataset>.md (tables) "
                    "with a samples × pairs heat map and a mean-attention bar chart. On purchase the top-k "
                    "pairs are scored against the planted pairs, with the hot spot on and off.")
    add_data_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of data generation, split, training (default 0)")
    parser.add_argument("--model", default="afm", help=f"the attention model: {', '.join(attention_models())} "
                                                       "(default afm)")
    parser.add_argument("--samples", type=int, default=30, help="test rows in the heat map (default 30)")
    parser.add_argument("--top-k", type=int, default=5, help="pairs in the top-k table and precision@k (default 5)")
    parser.add_argument("--compare", default="fm",
                        help=f"comma-separated models whose pair strengths stand beside the attention: "
                             f"{', '.join(COMPARISONS)}, or none (default fm)")
    parser.add_argument("--hot-spot", choices=HOT_SPOT_CHOICES, default=None,
                        help="purchase only: train with the hot spot on, off, or both into one report (default both)")
    parser.add_argument("--embed-dim", type=int, default=DEFAULT_EMBED_DIM, help="embedding size (default 16)")
    parser.add_argument("--set", type=key_value, action="append", default=[], metavar="NAME=VALUE", dest="hparams",
                        help="model hyper-parameter, e.g. attn_dim=32 (repeatable)")
    add_training_arguments(parser, PRESET)
    add_machine_arguments(parser)
    parser.set_defaults(handler=command_attention)


def command_attention(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    config = training_config(args)
    hparams = {**dict(args.hparams), "embed_dim": args.embed_dim}
    report = analyse_attention(
        dataset=args.dataset, seed=args.seed, model=args.model, samples=args.samples, top_k=args.top_k,
        compare=[name for name in args.compare.split(",") if name.strip()], hot_spot=args.hot_spot,
        data_options=dict(args.data_option),
        train_config=config, hparams=hparams, data_dir=args.data_dir, device=args.device,
        results_dir=args.results_dir, progress=not args.quiet, log=print)
    for analysis in report.analyses:
        head = f"{analysis.dataset}{' (' + analysis.condition + ')' if analysis.condition else ''}, {analysis.model}"
        top = ", ".join(f"{row.pair} {row.fields} {row.weight:.4f}" for row in analysis.top)
        print(f"{head}: top-{report.top_k}: {top}")
        if analysis.recovery:
            print(f"{head}: precision@{report.top_k} {analysis.recovery.precision_at_k:.2f} "
                  f"(best possible {analysis.recovery.best_possible:.2f})"
                  + (f", {analysis.pair_names[analysis.recovery.watched_pair]} rank {analysis.recovery.watched_rank}"
                     if analysis.recovery.watched_rank else ""))
        s = analysis.spread
        print(f"{head}: spread: relative std {s.relative_std:.3f}, mean TV {s.mean_tv:.4f} "
              f"(mean row vs uniform {s.mean_tv_from_uniform:.4f}), mean KL {s.mean_kl:.5f} nats")
    return 0
