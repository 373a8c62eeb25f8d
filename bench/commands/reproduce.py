"""`ctrbench reproduce`: the command line of ctrbench.training.reproduce."""
from __future__ import annotations

from pathlib import Path

from ctrbench.report.provenance import short_commit
from ctrbench.store.records import read_record, write_record
from ctrbench.training.context import RunContext
from ctrbench.training.reproduce import agreement, remake, spec_of, untraceable

from .arguments import comma_list


def add_reproduce_parser(commands) -> None:
    parser = commands.add_parser(
        "reproduce", help="train stored runs again from their own records and compare the scores",
        description="Re-make stored runs: each record's data, split, model, settings and seed, trained again by "
                    "this checkout on this machine, and its test AUC, logloss and best epoch set beside the "
                    "stored ones (on CPU a run is bitwise repeatable: 'identical' is what to expect of unchanged "
                    "code). Select records by path, or the ones the results pages cite with --untraceable, "
                    "--dataset and --models. Nothing is written unless --replace: then each re-made record "
                    "replaces the stored one the moment it ends (the stored one is copied to "
                    "RESULTS/archive/<date>/ first) and the leaderboard is regenerated at the end.")
    parser.add_argument("records", nargs="*", type=Path, metavar="RECORD",
                        help="run record files (RESULTS/runs/<dataset>/*.json)")
    parser.add_argument("--untraceable", action="store_true",
                        help="the cited records whose code cannot be named (a dirty commit recorded without its "
                             "code tree): --replace gives their numbers a commit")
    parser.add_argument("--dataset", help="only records of this dataset")
    parser.add_argument("--models", type=comma_list, help="only records of these models (comma-separated)")
    parser.add_argument("--limit", type=int, help="re-make at most this many (default: all selected)")
    parser.add_argument("--list", action="store_true",
                        help="only list the selected records and the training time they took when stored")
    parser.add_argument("--replace", action="store_true",
                        help="store each re-made record in place of the stored one (archived first)")
    parser.add_argument("--data-dir", type=Path, help="where the dataset files are (default: $CTRBENCH_DATA_DIR, "
                        "../shared/datasets beside the checkout, or the user cache)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice; the scores "
                                                    "do not depend on it on CPU, the throughput does)")
    parser.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="where the records are (default results/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=command_reproduce)


def selected(args) -> list[tuple[Path, dict]]:
    """(path, record) of every record the flags name, in path order."""
    from ctrbench.report.quality import current
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if args.records:
        chosen = [(path, read_record(path)) for path in args.records]
    elif args.untraceable or args.dataset or args.models:
        runs = Path(args.results_dir) / "runs"
        if not runs.is_dir():
            raise ValueError(f"no run records under {runs} (--results-dir names another folder)")
        stored = [(path, read_record(path)) for path in sorted(runs.rglob("*.json")) if not path.name.startswith(".")]
        cited = {id(record) for record in current([record for _, record in stored])}
        chosen = [(path, record) for path, record in stored if id(record) in cited]
    else:
        raise ValueError("name records, or select them with --untraceable, --dataset or --models")
    chosen = [(path, record) for path, record in chosen
              if (not args.untraceable or untraceable(record))
              and (not args.dataset or record["dataset"] == args.dataset)
              and (not args.models or record["model"] in args.models)]
    return chosen[:args.limit] if args.limit else chosen


def outcome_text(record: dict) -> str:
    before, change = record["reproduces"], agreement(record)
    verdict = "identical" if change["identical"] else (
        f"differs by {change['test_auc_change']:+.4f} AUC" if abs(change["test_auc_change"]) >= 5e-5 else
        "differs below 0.0001 AUC")
    return (f"test AUC {before['test']['auc']:.4f} -> {record['test']['auc']:.4f}, logloss "
            f"{before['test']['logloss']:.4f} -> {record['test']['logloss']:.4f}, best epoch "
            f"{before['best_epoch']} -> {record['best_epoch']}: {verdict}")


def command_reproduce(args) -> int:
    from ctrbench.report.inventory import archive_copy
    from ctrbench.report.leaderboard import write_leaderboard
    chosen = selected(args)
    if not chosen:
        print("no stored record matches: nothing to re-make")
        return 0
    if args.list:
        for path, record in chosen:
            print(f"{path}: {record['dataset']} {record['model']}/{record['interaction']} seed {record['seed']}, "
                  f"commit {short_commit((record.get('environment') or {}).get('git_commit'))}, "
                  f"{record['wall_seconds']:.0f} s")
        hours = sum(record["wall_seconds"] for _, record in chosen) / 3600
        print(f"{len(chosen)} record(s), {hours:.2f} h of training when they were made")
        return 0
    context = RunContext(progress=not args.quiet, threads=args.threads)
    results_dir = Path(args.results_dir)
    remade, failed = [], []
    for number, (path, record) in enumerate(chosen, 1):
        made = f"commit {short_commit((record.get('environment') or {}).get('git_commit'))}"
        what = f"[{number}/{len(chosen)}] {record['dataset']} {record['model']}/{record['interaction']} " \
               f"seed {record['seed']} ({made})"
        try:
            inside = spec_of(record).record_path(results_dir)
            if args.replace and Path(path).resolve() != inside.resolve():
                raise ValueError(f"--replace stores a run under {results_dir}/runs only, and {path} is not there")
            fresh = remake(record, args.data_dir, context)
        except ValueError as error:
            print(f"{what}: cannot re-make it here: {error} ({path})")
            failed.append(path)
            continue
        remade.append(fresh)
        print(f"{what}: {outcome_text(fresh)}" + ("" if agreement(fresh)["identical"] else f" ({path})"))
        if args.replace:
            archive_copy(results_dir, inside.relative_to(results_dir), "run", record["dataset"],
                         f"replaced by its re-made run ({made} -> {short_commit(fresh['environment']['git_commit'])})")
            write_record(inside, fresh)
    identical = sum(agreement(r)["identical"] for r in remade)
    if remade:
        largest = max(abs(agreement(r)["test_auc_change"]) for r in remade)
        print(f"re-made {len(remade)} run(s): {identical} identical to the stored record, the largest test-AUC "
              f"change {largest:.4f}" + (f"; {len(failed)} could not be re-made here" if failed else ""))
    if args.replace and remade:
        print(f"leaderboard: {write_leaderboard(results_dir)}")
    return 1 if failed else 0
