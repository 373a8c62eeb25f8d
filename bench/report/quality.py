"""Quality from run records: which runs may be compared (`ComparisonKey`), one table per comparable group,
tuned against untuned, embedding updates against dense Adam, and each dataset's verdict (best model,
runner-up, their paired difference) for the front page."""
from __future__ import annotations

import hashlib
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ctrbench.models import model_entry
from ctrbench.models.peers import ours_of
from ctrbench.training.train import preset_config, preset_of
from ctrbench.tuning.fields import PRUNE_FROM_BEFORE, figure_paths

from .markdown import PairedTest, mean_std, paired_test, settings_table, table
from .provenance import LOADED_MARK, code_label, codes_label, load_text, loaded, reproduced_label

# How the embedding tables were updated (absent from older records and from the default's config): kept
# out of the training key so that "Embedding updates against dense Adam" can pair each strategy's runs
# with dense Adam's; a table's key adds it back, giving each strategy a table of its own.
EMBEDDING_SETTINGS = ("embedding_optimizer", "embedding_lr")
MiB = 2 ** 20


class ComparisonKey(NamedTuple):
    """Runs that may share one quality table: the same data, machine and mode, training settings (the whole
    config but the embedding update and a tuned run's tuned settings), search rule and embedding update.
    So a table never sets a GPU row against a CPU one, a compiled row against an eager one, two training
    budgets, a tuned row against an untuned one, or rows tuned by different searches."""
    dataset: str
    options: str            # the dataset options, as JSON
    machine: str            # machine_label: device (a GPU by name), processes, eager or compiled
    training: str           # the shared training config, as JSON
    tuning: str             # '' untuned, else tuning_label
    embedding: str          # embedding_label

    @property
    def fingerprint(self) -> str:
        """A short hash of the whole key: what tells two tables of one dataset apart in a heading."""
        return hashlib.sha256(json.dumps(list(self)).encode()).hexdigest()[:6]


class RowKey(NamedTuple):
    """One row of a table: a model, its implementation and its hyper-parameters (runs differ by seed only)."""
    comparison: ComparisonKey
    model: str
    interaction: str
    settings: str


def tuned_settings(record: dict) -> dict:
    """The training settings a tuned run's study chose (embedding_regularizer, ...): they belong to its row,
    like its hyper-parameters, not to the table's shared training settings. {} for an untuned run."""
    params = (record.get("tuning") or {}).get("params") or {}
    return {k: v for k, v in params.items() if k not in record["hparams"]} if record.get("tuned") else {}


def base_config(record: dict) -> dict:
    """The run's training config with the settings its study tuned put back to the budget's values (a
    tuned lr of 0.01 back to the budget's 0.001; a regularizer the budget left unset, removed): what every
    row of its table shares."""
    tuned = tuned_settings(record)
    budget = (record.get("tuning") or {}).get("budget") or {}
    return {**{k: v for k, v in record["config"].items() if k not in tuned}, **budget}


def settings_label(record: dict) -> str:
    """The model's hyper-parameters (and a tuned run's tuned training settings), compact, for telling rows
    of one table apart."""
    settings = {**record["hparams"], **{k: record["config"].get(k, v) for k, v in tuned_settings(record).items()}}
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(settings.items()))


def lr_words(config: dict, between: str = " ") -> str:
    """'lr 0.001' (`between` joins the name and value); 'lr per row' for a tuned run that chose its lr and
    predates `tuning.budget`."""
    return f"lr{between}{config['lr']:g}" if "lr" in config else f"lr{between}per row"


def training_words(config: dict) -> str:
    """The training settings in a few words: the preset's name where they are one, else batch and lr."""
    preset = preset_of(config)
    if preset:
        return f"{preset} preset"
    words = f"batch {config['batch_size']}, {lr_words(config)}, patience {config['patience']}"
    if config.get("plateau_lr_factor"):
        words += f", lr ×{config['plateau_lr_factor']:g} on plateau"
    return words


def training_label(record: dict) -> str:
    """The training settings every row of one quality table shares, in full."""
    config = base_config(record)
    training = f"batch={config['batch_size']}, {lr_words(config, '=')}, patience={config['patience']}"
    if config.get("weight_decay"):
        training += f", weight_decay={config['weight_decay']:g}"
    for name in ("embedding_regularizer", "net_regularizer"):
        if config.get(name):
            training += f", {name}={config[name]:g}"
    if config.get("plateau_lr_factor"):
        training += f", plateau_lr×{config['plateau_lr_factor']:g}"
    training += f", max_epochs={config.get('max_epochs', '?')}, eval_batch={config.get('eval_batch_size', '?')}"
    preset = preset_of(config)
    return training + (f" (the {preset} preset)" if preset else "")


def machine_label(record: dict) -> str:
    """Where and how a run trained: device type (a GPU by name), processes, eager or compiled."""
    device = str(record["device"]).split(":")[0]
    if device == "cuda":
        device += f" ({record.get('environment', {}).get('device_name', '?')})"
    world_size = record.get("world_size", 1)
    return f"{device}{f' ×{world_size}' if world_size > 1 else ''}, {'compiled' if record.get('compile') else 'eager'}"


def embedding_label(record: dict) -> str:
    """The embedding-update strategy of a run, with the tables' learning rate where it is their own."""
    config = record.get("config", {})
    name = config.get("embedding_optimizer") or record.get("embedding_optimizer") or "adam"
    return name + (f" (lr {config['embedding_lr']:g})" if config.get("embedding_lr") is not None else "")


def tuning_label(record: dict) -> str:
    """'' for an untuned run; else how its study searched (sampler, pruning): studies that searched
    differently are different settings, so their tuned rows get tables of their own."""
    if not record.get("tuned"):
        return ""
    tuning = record.get("tuning") or {}
    prune_from = tuning["prune_from_epoch"] if "prune_from_epoch" in tuning else PRUNE_FROM_BEFORE
    pruning = "no pruning" if prune_from is None else f"pruning from epoch {prune_from}"
    return f"tuned ({tuning.get('sampler', 'tpe')}, {pruning})"


def comparison_key(record: dict) -> ComparisonKey:
    config = {k: v for k, v in base_config(record).items() if k not in EMBEDDING_SETTINGS}
    options = {k: v for k, v in record["dataset_options"].items() if k != "seed"}
    return ComparisonKey(record["dataset"], json.dumps(options, sort_keys=True), machine_label(record),
                         json.dumps(config, sort_keys=True), tuning_label(record), embedding_label(record))


def current(records: list[dict]) -> list[dict]:
    """The records less the tuned runs of a study's earlier best (a study continued since found another):
    of each study, only the re-runs of its latest best, told by (trials, best trial's number)."""
    latest = defaultdict(lambda: (0, 0))
    for record in records:
        if record.get("tuned"):
            latest[record["tuned"]["study"]] = max(latest[record["tuned"]["study"]], tuning_stage(record))
    return [r for r in records if not r.get("tuned") or tuning_stage(r) == latest[r["tuned"]["study"]]]


def tuning_stage(record: dict) -> tuple[int, int]:
    tuning = record.get("tuning") or {}
    return int(tuning.get("trials") or 0), int(tuning.get("best_trial") or 0)


def group_runs(records: list[dict]) -> dict[RowKey, list[dict]]:
    """Runs that differ only by seed, together."""
    groups: dict[RowKey, list[dict]] = defaultdict(list)
    for record in current(records):
        if record.get("kind") != "run":
            continue
        row = RowKey(comparison_key(record), record["model"], record["interaction"], settings_label(record))
        groups[row].append(record)
    return dict(sorted(groups.items()))


def capped(record: dict) -> bool:
    """A run that ended at max_epochs without early stopping: still improving, its AUC a capped number."""
    config = record.get("config") or {}
    max_epochs, patience = config.get("max_epochs"), config.get("patience")
    if max_epochs is None or patience is None:
        return False
    return record["epochs_run"] >= max_epochs and record["epochs_run"] - record["best_epoch"] < patience


def by_seed(runs: list[dict]) -> dict[int, float]:
    return {r["seed"]: r["test"]["auc"] for r in runs}


def compare_runs(runs: list[dict], other: list[dict], too_few: str = "n/a (<2 shared seeds)") -> PairedTest:
    """`runs` - `other` in test AUC, paired over the seeds both ran (the seed fixes the split)."""
    mine, theirs = by_seed(runs), by_seed(other)
    seeds = sorted(set(mine) & set(theirs))
    return paired_test([mine[s] for s in seeds], [theirs[s] for s in seeds], too_few)


def mean_auc(runs: list[dict]) -> float:
    return statistics.fmean(r["test"]["auc"] for r in runs)


def peak_memory_mib(runs: list[dict], on_cuda: bool) -> str:
    """CUDA's peak allocation on a GPU, the resident set's peak on the CPU (largest over the seeds)."""
    peaks = [r["memory"].get("cuda_peak_bytes") if on_cuda else r["memory"]["rss_peak_bytes"] for r in runs]
    peaks = [p for p in peaks if p is not None]
    return f"{max(peaks) / MiB:,.0f}" if peaks else "–"


def interaction_label(runs: list[dict], interaction: str) -> str:
    """The implementation asked for, and what ran where that differs (afm_kernel off the CPU)."""
    ran = sorted({r.get("running_backend") or interaction for r in runs} - {interaction})
    return interaction + (f" (ran {', '.join(ran)})" if ran else "")


def threads_of(runs: list[dict]) -> list[int]:
    return sorted({int((r.get("environment") or {}).get("threads") or 0) for r in runs})


def throughput_text(runs: list[dict]) -> str:
    """Mean train samples/s of the row's runs, with their thread count: runs at different thread counts are
    never averaged silently (`mixed`), and a run measured on a busy machine marks the cell."""
    threads = threads_of(runs)
    text = f"{statistics.fmean(r['train_samples_per_s'] for r in runs):,.0f}"
    plural = "" if threads == [1] else "s"
    text += f" ({'/'.join(map(str, threads))} thread{plural}{', mixed' if len(threads) > 1 else ''})"
    if any(loaded(r.get("environment")) for r in runs):
        text += f" {LOADED_MARK}"
    return text


def epochs_text(runs: list[dict]) -> str:
    text = (f"{statistics.fmean(r['best_epoch'] for r in runs):.1f}/"
            f"{statistics.fmean(r['epochs_run'] for r in runs):.1f}")
    stopped_at_cap = sum(capped(r) for r in runs)
    return text + (f", **capped {stopped_at_cap}/{len(runs)}**" if stopped_at_cap else "")


@dataclass
class QualityTable:
    key: ComparisonKey
    rows: dict[RowKey, list[dict]]         # best mean test AUC first

    @property
    def best(self) -> RowKey:
        return next(iter(self.rows))

    @property
    def records(self) -> list[dict]:
        return [r for runs in self.rows.values() for r in runs]

    @property
    def anchor(self) -> str:
        return f"{self.key.dataset}-{self.key.fingerprint}"

    def heading(self) -> str:
        key, first = self.key, self.records[0]
        tuned = key.tuning or "untuned"
        words = [key.dataset, key.machine, tuned, training_words(base_config(first))]
        if key.embedding != "adam":
            words.append(f"tables by {key.embedding}")
        return " · ".join(words) + f" · `{key.fingerprint}`"


def quality_tables(records: list[dict]) -> list[QualityTable]:
    """Every comparable group as a table, rows by mean test AUC."""
    by_key: dict[ComparisonKey, dict[RowKey, list[dict]]] = defaultdict(dict)
    for row, runs in group_runs(records).items():
        by_key[row.comparison][row] = runs
    return [QualityTable(key, dict(sorted(rows.items(), key=lambda item: -mean_auc(item[1]))))
            for key, rows in sorted(by_key.items())]


def table_settings(quality: QualityTable) -> dict:
    """What the rows of a table share, for the short settings table under its heading."""
    first = quality.records[0]
    options = json.loads(quality.key.options)
    settings = {"data options": ", ".join(f"{k}={json.dumps(v)}" for k, v in options.items()) or "defaults",
                "rows (train/validation/test)":
                    "/".join(f"{first['rows'][s]:,}" for s in ("train", "validation", "test"))
                if first.get("rows") else "?",
                "machine": quality.key.machine, "training": training_label(first),
                "tables updated by": quality.key.embedding, "tuning": quality.key.tuning or "untuned",
                "code": codes_label([r.get("environment") or {} for r in quality.records])
                + reproduced_label(quality.records),
                "dates": date_range(quality.records)}
    return settings


def date_range(records: list[dict]) -> str:
    dates = sorted(str((r.get("environment") or {}).get("date") or "?")[:10] for r in records)
    return dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"


def tuned_lines(quality: QualityTable, results_dir: Path) -> list[str]:
    """Where a tuned table's rows come from: each model's study, its finished trials, the best trial's
    validation AUC, the hash of the search space, and the study's plots where `ctrbench tune` wrote them."""
    studies = []
    for runs in quality.rows.values():
        first = runs[0]
        tuning = first.get("tuning") or {}
        study = first["tuned"]["study"]
        plots = [f"[{kind}](../{path.relative_to(results_dir).as_posix()})"
                 for kind, path in figure_paths(results_dir, study).items() if path.is_file()]
        studies.append(f"- {first['model']}: study `{study}`, {tuning.get('trials', '?')} trials "
                       f"({tuning.get('sampler', '?')}), best trial {tuning.get('best_trial', '?')} at validation AUC "
                       f"{tuning.get('best_validation_auc', float('nan')):.4f}, search space "
                       f"`{first['tuned'].get('space_hash', '?')}`; plots: "
                       + (", ".join(plots) or "none in this results folder"))
    return ["Each model's best configuration of its Optuna study (`ctrbench tune`), re-run through the protocol "
            "on every seed; the tuned settings are in the hyper-parameters column.", ""] + sorted(studies) + [""]


def quality_table_lines(quality: QualityTable, groups: dict[RowKey, list[dict]], results_dir: Path) -> list[str]:
    on_cuda = quality.key.machine.startswith("cuda")
    best_runs = quality.rows[quality.best]
    rows = []
    for row, runs in quality.rows.items():
        auc, auc_std = mean_std([r["test"]["auc"] for r in runs])
        logloss, logloss_std = mean_std([r["test"]["logloss"] for r in runs])
        versus = "best" if row == quality.best else _versus_best(runs, best_runs)
        rows.append([row.model, interaction_label(runs, row.interaction), f"{auc:.4f} ± {auc_std:.4f} ({len(runs)})",
                     f"{logloss:.4f} ± {logloss_std:.4f}", versus, epochs_text(runs), throughput_text(runs),
                     peak_memory_mib(runs, on_cuda), row.settings])
    lines = [f"### {quality.heading()}", "", settings_table(table_settings(quality)), ""]
    lines += tuned_lines(quality, results_dir) if quality.key.tuning else []
    lines += [table(rows, ["model", "interaction", "test AUC mean ± std (n)", "test logloss",
                           "Δ AUC vs best (paired t)", "best/run epochs", "train samples/s",
                           "CUDA peak MiB" if on_cuda else "peak RSS MiB", "hyper-parameters"]), ""]
    if quality.key.tuning:
        lines += tuned_against_untuned(quality, groups)
    return lines


def _versus_best(runs: list[dict], best: list[dict]) -> str:
    test = compare_runs(runs, best)
    return f"{test.mean_difference:+.4f} ({test.text})" if test.seeds else test.text


def tuned_against_untuned(quality: QualityTable, groups: dict[RowKey, list[dict]]) -> list[str]:
    """Each tuned row against the same model's untuned runs (its default hyper-parameters, no tuned
    setting) under the same data, machine and training budget, over the seeds both ran."""
    rows = []
    for row, runs in quality.rows.items():
        try:
            defaults = default_settings(row.model)
        except ValueError:                      # a model no longer registered
            continue
        untuned = groups.get(RowKey(quality.key._replace(tuning=""), row.model, row.interaction, defaults))
        if not untuned:
            continue
        test = compare_runs(runs, untuned, too_few="n/a (<2 seeds)")
        if not test.seeds:
            continue
        mine, theirs = by_seed(runs), by_seed(untuned)
        seeds = sorted(set(mine) & set(theirs))
        rows.append([row.model, f"{statistics.fmean(mine[s] for s in seeds):.4f}",
                     f"{statistics.fmean(theirs[s] for s in seeds):.4f}", f"{test.mean_difference:+.4f}", test.text,
                     str(test.seeds)])
    if not rows:
        return []
    return ["Tuned against untuned: the same model with its default hyper-parameters and no regularizer, same "
            "data, machine and training budget (the untuned table), over the seeds both ran.", "",
            table(rows, ["model", "tuned test AUC", "untuned test AUC", "gain (mean per seed)", "paired t",
                         "seeds"]), ""]


def embedding_update_lines(records: list[dict], dataset: str) -> list[str]:
    """Each embedding-update strategy beside dense Adam's runs of the same table, model, implementation and
    hyper-parameters: AUC, the difference, a paired t-test and the throughput ratio."""
    groups = group_runs(records)
    rows = []
    for row, runs in groups.items():
        if row.comparison.dataset != dataset or row.comparison.embedding == "adam":
            continue
        baseline = groups.get(row._replace(comparison=row.comparison._replace(embedding="adam")))
        if not baseline:
            continue
        mine, theirs = {r["seed"]: r for r in runs}, {r["seed"]: r for r in baseline}
        seeds = sorted(set(mine) & set(theirs))
        if not seeds:
            continue
        auc = [mine[s]["test"]["auc"] for s in seeds]
        adam_auc = [theirs[s]["test"]["auc"] for s in seeds]
        test = paired_test(auc, adam_auc)
        speed = statistics.fmean(mine[s]["train_samples_per_s"] / theirs[s]["train_samples_per_s"] for s in seeds)
        threads = {tuple((run.get("environment") or {}).get("threads") for run in (mine[s], theirs[s])) for s in seeds}
        rows.append([row.comparison.machine + (", tuned" if row.comparison.tuning else ""), row.model,
                     row.comparison.embedding, f"{mean_std(auc)[0]:.4f} ± {mean_std(auc)[1]:.4f}",
                     f"{mean_std(adam_auc)[0]:.4f} ± {mean_std(adam_auc)[1]:.4f}", f"{test.mean_difference:+.4f}",
                     test.text, str(len(seeds)),
                     f"{speed:.2f}" + ("" if all(a == b for a, b in threads) else " (threads differ)"),
                     f"{statistics.fmean(mine[s]['best_epoch'] for s in seeds):.1f} / "
                     f"{statistics.fmean(theirs[s]['best_epoch'] for s in seeds):.1f}"])
    if not rows:
        return []
    return ["## Embedding updates against dense Adam", "",
            "Each strategy's runs (`ctrbench run --embedding-optimizer NAME`) beside dense Adam's under the same "
            "data, machine, training settings, model, implementation and hyper-parameters, over the seeds "
            "both ran: mean test AUC, the mean per-seed difference, the paired t-test (`*`: p < 0.05), the train "
            "throughput over dense Adam's, and the best epoch.", "",
            table(rows, ["machine", "model", "tables updated by", "test AUC", "dense Adam AUC", "Δ AUC",
                         "paired t", "seeds", "speed ×", "best epoch / Adam's"]), ""]


# ------------------------------------------------------------------------------------ front page

@dataclass
class Verdict:
    """A dataset's answer: the best model of its strongest comparable table, the runner-up, their difference."""
    quality: QualityTable
    best: RowKey
    runner_up: RowKey | None
    test: PairedTest | None          # best - runner-up, paired over seeds

    @property
    def capped(self) -> bool:
        rows = [self.best] + ([self.runner_up] if self.runner_up else [])
        return any(capped(r) for row in rows for r in self.quality.rows[row])


def strength(quality: QualityTable) -> tuple:
    """How strong a table's comparison is: tuned first, then CPU eager single-process (the comparable
    machine), more models run on ≥ 2 seeds, more runs, the newer."""
    multi = sum(len(runs) >= 2 for runs in quality.rows.values())
    newest = max(str((r.get("environment") or {}).get("date") or "") for r in quality.records)
    return (bool(quality.key.tuning), multi >= 2, quality.key.machine == "cpu, eager",
            quality.key.embedding == "adam", multi, len(quality.records), newest)


def verdicts(tables: list[QualityTable]) -> list[Verdict]:
    """One verdict per dataset, from its strongest table (see `strength`)."""
    found = []
    for dataset in sorted({t.key.dataset for t in tables}):
        quality = max((t for t in tables if t.key.dataset == dataset), key=strength)
        rows = list(quality.rows)
        runner_up = rows[1] if len(rows) > 1 else None
        test = compare_runs(quality.rows[rows[0]], quality.rows[runner_up]) if runner_up else None
        found.append(Verdict(quality, rows[0], runner_up, test))
    return found


def verdict_row(verdict: Verdict, link: str) -> list[str]:
    quality = verdict.quality
    best_runs = quality.rows[verdict.best]
    auc, std = mean_std([r["test"]["auc"] for r in best_runs])
    if verdict.runner_up is None:
        runner, difference = "–", "only one model in this setting"
    else:
        runner = f"{verdict.runner_up.model} {mean_auc(quality.rows[verdict.runner_up]):.4f}"
        test = verdict.test
        if not test.seeds or test.p_value is None and test.text != "p=0 (constant gap)":
            difference = f"{test.mean_difference:+.4f} ({test.text})"
        elif test.significant:
            difference = f"{test.mean_difference:+.4f} (paired t over {test.seeds} seeds, {test.text.rstrip(' *')})"
        else:
            difference = f"no significant difference ({test.mean_difference:+.4f}, {test.text}, {test.seeds} seeds)"
    first = quality.records[0]
    setting = f"{quality.key.tuning or 'untuned'}, {training_words(base_config(first))}, {quality.key.machine}"
    if verdict.capped:
        setting += "; **capped**: runs stopped at max_epochs, still improving"
    return [quality.key.dataset, f"{verdict.best.model} ({verdict.best.interaction})",
            f"{auc:.4f} ± {std:.4f} ({len(best_runs)})", runner, difference, setting, link]


# The main job (README command 1): `ctrbench run` with its defaults on the embedded purchase log.
MAIN_JOB = {"dataset": "purchase", "models": ("fm", "nfm", "afm"), "preset": "quick", "seeds": (0, 1, 2)}


def main_job_table(tables: list[QualityTable]) -> QualityTable | None:
    """The table README command 1's runs land in: purchase with its default options, the quick preset,
    CPU eager, untuned, dense Adam; None before it ran."""
    quick = json.dumps({k: v for k, v in preset_config(MAIN_JOB["preset"]).as_dict().items()
                        if k not in EMBEDDING_SETTINGS}, sort_keys=True)
    candidates = [t for t in tables if t.key.dataset == MAIN_JOB["dataset"] and t.key.training == quick
                  and t.key.machine == "cpu, eager" and not t.key.tuning and t.key.embedding == "adam"]
    return max(candidates, key=strength) if candidates else None


def main_job_lines(tables: list[QualityTable], link: str) -> list[str]:
    lines = ["## Your run: the main job", ""]
    quality = main_job_table(tables)
    defaults = {m: model_entry(m).default_interaction for m in MAIN_JOB["models"]}
    rows = {row: runs for row, runs in (quality.rows.items() if quality else ())
            if defaults.get(row.model) == row.interaction and row.settings == default_settings(row.model)}
    if not rows:
        return lines + ["_Not run here yet: README command 1 (`ctrbench run`) trains FM, NFM and AFM on the embedded "
                        "purchase log (3 seeds, the quick preset) and puts its table here._", ""]
    best = next(iter(rows))
    body = []
    for row, runs in rows.items():
        auc, std = mean_std([r["test"]["auc"] for r in runs])
        body.append([row.model, row.interaction, f"{auc:.4f} ± {std:.4f} ({len(runs)})",
                     "best" if row == best else _versus_best(runs, rows[best]), epochs_text(runs),
                     throughput_text(runs)])
    records = [r for runs in rows.values() for r in runs]
    envs = [r.get("environment") or {} for r in records]
    return lines + [
        f"`ctrbench run` (README command 1): purchase, quick preset, {len(records)} runs on "
        f"{date_range(records)}, {codes_label(envs)}; load: {load_text(envs[-1].get('load_avg'))}. "
        f"[Its table with every model]({link}).", "",
        table(body, ["model", "interaction", "test AUC mean ± std (n)", "Δ AUC vs best (paired t)", "best/run epochs",
                     "train samples/s"]), ""]


def peer_rows(tables: list[QualityTable], dataset: str) -> list[list[str]]:
    """Per comparable table of `dataset`: each peer's runs against ctrbench's runs of the same model (its
    default implementation), paired over seeds: both AUCs, ours − theirs, the train-throughput ratio."""
    rows = []
    for quality in (t for t in tables if t.key.dataset == dataset):
        ours = {row.model: (row, runs) for row, runs in quality.rows.items() if ours_of(row.model) is None}
        for row, runs in quality.rows.items():
            base = ours_of(row.model)
            if base is None or base not in ours:
                continue
            mine_row, mine = ours[base]
            test = compare_runs(mine, runs)
            mine_seeds, theirs_seeds = {r["seed"]: r for r in mine}, {r["seed"]: r for r in runs}
            seeds = sorted(set(mine_seeds) & set(theirs_seeds))
            if not seeds:
                continue
            speed = statistics.fmean(mine_seeds[s]["train_samples_per_s"] / theirs_seeds[s]["train_samples_per_s"]
                                     for s in seeds)
            verdict = ("ctrbench better" if test.significant and test.mean_difference > 0 else
                       "the peer better" if test.significant else "no significant difference")
            rows.append([f"{quality.key.machine}, {quality.key.tuning or 'untuned'}", base,
                         f"{mine_row.interaction}", row.model, f"{mean_auc(mine):.4f}", f"{mean_auc(runs):.4f}",
                         f"{test.mean_difference:+.4f} ({test.text})", verdict, f"×{speed:.2f}", str(len(seeds))])
    return rows


def peer_lines(tables: list[QualityTable], dataset: str) -> list[str]:
    rows = peer_rows(tables, dataset)
    if not rows:
        return []
    return ["## ctrbench against the peers", "",
            "Each peer library's implementation of a model (`pip install -e \".[peers]\"`: torchfm, DeepCTR-Torch) "
            "against ctrbench's, trained by the same protocol on the same splits and seeds: test AUC, ours − theirs "
            "paired over the seeds both ran, and ctrbench's train throughput over the peer's (same runs).", "",
            table(rows, ["setting", "model", "ctrbench's implementation", "peer", "ctrbench AUC", "peer AUC",
                         "ctrbench − peer (paired t)", "verdict", "train speed ×", "seeds"]), ""]


def default_settings(model: str) -> str:
    """settings_label of a run with the model's default hyper-parameters."""
    return settings_label({"hparams": {name: default for name, (default, _) in model_entry(model).hparams.items()}})


def quality_page(dataset: str, tables: list[QualityTable], records: list[dict], results_dir: Path) -> list[str]:
    """A dataset's detail page: every comparable table (strongest first), then embedding updates."""
    groups = group_runs(records)
    mine = sorted((t for t in tables if t.key.dataset == dataset), key=strength, reverse=True)
    lines = [f"# Quality on {dataset}", "",
             "Test-split AUC and logloss after early stopping on validation AUC; mean ± sample std over seeds (n). "
             "Δ AUC vs best: the mean per-seed difference from the table's best row, paired t-test over the seeds "
             "both ran (`*`: p < 0.05). `capped`: runs that stopped at max_epochs without early stopping (still "
             f"improving). Train samples/s carry their thread count; {LOADED_MARK}: a run measured on a busy machine. "
             "One table per comparable setting (data, machine, training, tuning, embedding update); the first is "
             "the one the front page's verdict reads.", ""]
    lines += ["Tables:", ""] + [f"- [{t.heading()}](#{anchor_of(t.heading())})" for t in mine] + [""]
    for quality in mine:
        lines += quality_table_lines(quality, groups, results_dir)
    return lines + peer_lines(tables, dataset) + embedding_update_lines(records, dataset)


def quality_section(records: list[dict], results_dir: Path) -> list[str]:
    """Every comparable table of every dataset, strongest first per dataset (the detail pages' bodies)."""
    tables, groups = quality_tables(records), group_runs(records)
    lines = []
    for dataset in sorted({t.key.dataset for t in tables}):
        for quality in sorted((t for t in tables if t.key.dataset == dataset), key=strength, reverse=True):
            lines += quality_table_lines(quality, groups, results_dir)
    return lines


def anchor_of(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = "".join(c for c in heading.lower() if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def code_of(record: dict) -> str:
    return code_label(record.get("environment"))
