"""`results/attention_<dataset>.md` and its figures, from an `AttentionReport` (ctrbench.attention.analysis).

Only renders: every number (ranks included) is computed by the analysis, which imports this module and
never the other way round."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ctrbench.files import save_figure, subplots, write_text_atomic
from ctrbench.report.markdown import table as _table


def table(rows, headers) -> str:
    """A GitHub table whose cells may hold '|' (as in |⟨v_i, v_j⟩|): escaped, so columns stay put."""
    def escape(cell):
        return str(cell).replace("|", "\\|")
    return _table([[escape(c) for c in row] for row in rows], [escape(h) for h in headers])


MAX_TICKS = 90            # pairs labelled on an axis before thinning the labels
FULL_TABLE_PAIRS = 66     # up to 12 fields: every pair in the side-by-side table; beyond: the top 50


def report_stem(dataset: str, model: str) -> str:
    """attention_<dataset> for AFM, attention_<dataset>_<model> for any other model."""
    return f"attention_{dataset}" if model == "afm" else f"attention_{dataset}_{model}"


def _figure_name(stem: str, analysis, kind: str) -> str:
    return f"{stem}{'_' + analysis.slug if analysis.slug else ''}_{kind}.png"


def _pair_ticks(analysis, planted: set[int]) -> tuple[list[int], list[str]]:
    count = len(analysis.pair_names)
    step = max(1, math.ceil(count / MAX_TICKS))
    positions = list(range(0, count, step))
    labels = [f"{p} {analysis.pair_names[p]}{' *' if p in planted else ''}" for p in positions]
    return positions, labels


def _planted(analysis) -> set[int]:
    return set(analysis.recovery.planted) if analysis.recovery else set()


def plot_heatmap(analysis, path: Path, model_label: str) -> Path:
    """Samples × pairs heat map of the attention weights; x: pair number and fields, y: test row."""
    weights = analysis.sample_weights
    samples, pairs = weights.shape
    fig, ax = subplots(figsize=(max(10, 0.26 * min(pairs, MAX_TICKS) + 3), max(4, 0.22 * samples + 3.2)))
    image = ax.imshow(weights, aspect="auto", cmap="viridis", interpolation="nearest")
    positions, labels = _pair_ticks(analysis, _planted(analysis))
    ax.set_xticks(positions, labels, rotation=90, fontsize=7)
    step = max(1, math.ceil(samples / 60))
    ax.set_yticks(range(0, samples, step), [str(int(r)) for r in analysis.sample_rows[::step]], fontsize=7)
    ax.set_xlabel("pair number and fields" + (" (* planted)" if _planted(analysis) else ""))
    ax.set_ylabel("test row")
    title = f"{model_label} attention weights on {analysis.dataset}"
    ax.set_title(title + (f" ({analysis.condition})" if analysis.condition else "") +
                 f": {samples} test samples × {pairs} pairs")
    fig.colorbar(image, ax=ax, fraction=0.025, pad=0.01, label="attention weight")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_means(analyses, path: Path, model_label: str) -> Path:
    """Mean attention per pair (bars; planted pairs highlighted) with the comparisons' normalised shares."""
    fig, axes = subplots(len(analyses), 1, figsize=(max(10, 0.26 * min(len(analyses[0].pair_names), MAX_TICKS) + 3),
                                                       4.8 * len(analyses)), squeeze=False)
    for ax, analysis in zip(axes[:, 0], analyses):
        pairs = np.arange(len(analysis.mean_weights))
        planted = _planted(analysis)
        colors = ["tab:orange" if p in planted else "tab:blue" for p in pairs]
        ax.bar(pairs, analysis.mean_weights, color=colors, label=f"{model_label} mean attention")
        lower = np.minimum(analysis.std_weights, analysis.mean_weights)     # weights are never negative
        ax.errorbar(pairs, analysis.mean_weights, yerr=[lower, analysis.std_weights], fmt="none", ecolor="black",
                    elinewidth=0.6, capsize=1.5, alpha=0.6, label="± across-sample std (clipped at 0)")
        markers = {"fm": ("o", "tab:red"), "fwfm": ("s", "tab:green"), "fwfm_effective": ("^", "tab:purple")}
        for comparison in analysis.comparisons:
            marker, color = markers.get(comparison.key, ("x", "gray"))
            ax.scatter(pairs, comparison.share, marker=marker, s=14, color=color, zorder=3,
                       label=f"{comparison.label} (share)")
        ax.axhline(1 / len(pairs), color="gray", linestyle="--", linewidth=0.8, label="uniform 1/P")
        positions, labels = _pair_ticks(analysis, planted)
        ax.set_xticks(positions, labels, rotation=90, fontsize=7)
        ax.set_xlim(-0.7, len(pairs) - 0.3)
        ax.set_ylabel("weight / share")
        ax.set_title(f"{model_label} mean attention per pair over the test split ({analysis.test_rows:,} rows), "
                     f"{analysis.dataset}" + (f", {analysis.condition}" if analysis.condition else "")
                     + (" — orange: planted pairs" if planted else ""))
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------- Markdown

def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _title(analysis) -> str:
    return analysis.condition[:1].upper() + analysis.condition[1:] if analysis.condition else "Results"


def _summary(report, model_label: str) -> list[str]:
    k = report.top_k
    has_truth = any(a.recovery for a in report.analyses)
    headers = ["condition", "test AUC", f"top-{k} pairs (by mean attention)"]
    watched = next((a for a in report.analyses if a.recovery and a.recovery.watched_pair is not None), None)
    if has_truth:
        headers += [f"precision@{k} (max)", "R-precision"] + ([_watched_header(watched)] if watched else [])
    headers += ["relative std", "mean TV", "mean TV / TV(mean, uniform)", "mean KL (nats)"]
    rows = []
    for a in report.analyses:
        row = [a.condition or a.dataset, _fmt(a.training.get("test_auc")), ", ".join(str(t.pair) for t in a.top)]
        if has_truth:
            r = a.recovery
            row += [f"{r.precision_at_k:.2f} ({r.best_possible:.2f})" if r else "–",
                    f"{r.r_precision:.2f}" if r else "–"]
            if watched:
                row.append(str(r.watched_rank) if r and r.watched_rank else "–")
        s = a.spread
        row += [_fmt(s.relative_std, 3), _fmt(s.mean_tv), _fmt(s.tv_ratio, 3), f"{s.mean_kl:.3g}"]
        rows.append(row)
    return [f"## Summary ({model_label})", "", table(rows, headers), ""]


def _spread_text(model_label: str) -> list[str]:
    return [
        "## How to read the spread measures", "",
        f"Every test row n has a distribution a_n over the P pairs; ā is their mean. If {model_label}'s attention "
        "were a global importance per pair (the same for every sample), every a_n would equal ā and all of the "
        "measures below would be 0.", "",
        "- **relative std**: the across-sample std of each pair's weight, averaged over pairs and divided by the "
        "mean weight 1/P. 0.10 means a pair's weight typically moves by 10% of an average pair's weight from "
        "sample to sample.",
        "- **mean TV**: the mean total-variation distance ½Σ_p|a_np − ā_p| of a row from the mean row: the share "
        "of attention mass a sample puts elsewhere than the average sample (0 = identical rows, 1 = disjoint).",
        "- **TV(mean, uniform)**: ½Σ_p|ā_p − 1/P|, how far the mean row itself is from equal weights. "
        "**mean TV / TV(mean, uniform)** puts the two side by side: well below 1 means the samples differ from "
        "each other much less than the attention differs from uniform, i.e. the rows are nearly identical and "
        "the attention is mostly a fixed pair ranking.",
        "- **mean KL**: mean over samples of KL(a_n ‖ ā) in nats; **H(ā)**, **mean H(a_n)**, **ln P**: the "
        "entropy of the mean row, the mean entropy of the rows, and the entropy of uniform weights. "
        "H(ā) − mean H(a_n) equals the mean KL, the information the sample adds to the weights.", ""]


def _watched_header(analysis) -> str:
    """"rank of brand × origin (44)": the pair the dataset's truth asks to watch, by name and number."""
    pair = analysis.recovery.watched_pair
    return f"rank of {analysis.pair_names[pair]} ({pair})"


def _top_table(analysis, k: int) -> str:
    truth = analysis.true_strength
    headers = ["rank", "pair", "fields", "mean weight", "std across samples"]
    if truth is not None:
        headers.append("true strength")
    rows = []
    for t in analysis.top[:k]:
        row = [str(t.rank), str(t.pair), t.fields, _fmt(t.weight), _fmt(float(analysis.std_weights[t.pair]))]
        if truth is not None:
            row.append(_fmt(float(truth[t.pair]), 2) if truth[t.pair] else "–")
        rows.append(row)
    return table(rows, headers)


def _recovery(analysis, k: int, model_label: str) -> list[str]:
    r = analysis.recovery
    if r is None:
        return []
    planted = ", ".join(f"{p} {analysis.pair_names[p]} ({s:.2f})" for p, s in zip(r.planted, r.strengths))
    n = len(r.planted)
    plural = "s" if n > 1 else ""
    note = f" {r.note}" if r.note else ""
    lines = ["### Recovery of the planted pairs", "",
             f"Planted pair{plural} (true strength, {r.strength_meaning}): {planted}. "
             f"precision@{k} = |top-{k} ∩ planted| / {k}, against the set of planted pairs"
             + (f"; with {n} planted pair{plural} it is at most {r.best_possible:.2f}" if r.best_possible < 1 else "")
             + f". R-precision = precision@{n} (1.0: the top {n} pair{plural} by the measure "
             f"{'are' if n > 1 else 'is'} exactly the planted one{plural}).{note}", ""]
    watched = r.watched_pair is not None
    headers = ["pair strength from", "test AUC", f"precision@{k}", "R-precision", "ranks of the planted pairs"]
    headers += [_watched_header(analysis)] if watched else []
    headers += ["Spearman ρ with mean attention"]
    rows = [[f"{model_label} mean attention", _fmt(analysis.training.get("test_auc")), f"{r.precision_at_k:.2f}",
             f"{r.r_precision:.2f}", ", ".join(f"{p}→{rank}" for p, rank in r.planted_ranks.items())]
            + ([str(r.watched_rank)] if watched else []) + ["–"]]
    for c in analysis.comparisons:
        rows.append([c.label, _fmt(c.test_auc), _fmt(c.precision_at_k, 2), _fmt(c.r_precision, 2),
                     ", ".join(f"{p}→{c.ranks[p]}" for p in r.planted)]
                    + ([str(c.watched_rank)] if watched else [])
                    + [f"{_fmt(c.spearman, 3)} (p={c.spearman_p:.2g})" if not math.isnan(c.spearman) else "n/a"])
    return lines + [table(rows, headers), ""]


def _spread_table(analysis) -> str:
    s = analysis.spread
    rows = [["relative std (mean across-sample std / mean weight)", _fmt(s.relative_std, 3)],
            ["mean TV of a row from the mean row", _fmt(s.mean_tv)],
            ["TV of the mean row from uniform", _fmt(s.mean_tv_from_uniform)],
            ["mean TV / TV(mean, uniform)", _fmt(s.tv_ratio, 3)],
            ["mean KL(a_n ‖ ā), nats", f"{s.mean_kl:.3g}"],
            ["H(ā), nats", _fmt(s.entropy_of_mean)],
            ["mean H(a_n), nats", _fmt(s.mean_entropy)],
            ["ln P (uniform), nats", _fmt(s.uniform_entropy)]]
    return table(rows, ["measure (over the whole test split)", "value"])


def _side_by_side(analysis, model_label: str) -> list[str]:
    count = len(analysis.pair_names)
    attention_rank = analysis.mean_ranks
    shown = [p for p in range(count) if count <= FULL_TABLE_PAIRS or attention_rank[p] <= 50]
    headers = ["pair", "fields", "mean attention", "rank"]
    for c in analysis.comparisons:
        headers += [f"{c.label} share", "rank"]
    if analysis.true_strength is not None:
        headers.append("true strength")
    rows = []
    for p in shown:
        row = [str(p), analysis.pair_names[p], _fmt(float(analysis.mean_weights[p])), str(attention_rank[p])]
        for c in analysis.comparisons:
            row += [_fmt(float(c.share[p])), str(c.ranks[p])]
        if analysis.true_strength is not None:
            row.append(_fmt(float(analysis.true_strength[p]), 2) if analysis.true_strength[p] else "")
        rows.append(row)
    lines = [f"### {model_label} mean attention beside strengths that need no attention", ""]
    if analysis.comparisons:
        notes = []
        for c in analysis.comparisons:
            notes.append(f"{c.label}: Spearman ρ = {_fmt(c.spearman, 3)} (p = {c.spearman_p:.2g})"
                         if not math.isnan(c.spearman) else f"{c.label}: ρ n/a (constant)")
        lines += ["Each strength is normalised to a share (sum 1 over the pairs) to sit beside the attention; FM's "
                  "is the mean over the test rows of |⟨v_i, v_j⟩| (its pair term with equal weights), FwFM's "
                  "|r_p| / Σ|r| is its learned field-pair weight alone and mean |r_p⟨v_i, v_j⟩| the pair term it "
                  "actually adds. Rank correlation with the mean attention over all pairs: "
                  + "; ".join(notes) + ".", ""]
    if len(shown) < count:
        lines += [f"The 50 pairs with the highest mean attention of {count}, by pair number.", ""]
    return lines + [table(rows, headers), ""]


def render_markdown(report, stem: str, figures: dict) -> str:
    model_label = report.model.upper() if report.model != "qafm" else "qAFM"
    config = report.config
    first = report.analyses[0]
    hparams = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(first.hparams.items()))
    options = {k: v for k, v in first.data_options.items() if k not in ("seed", "hot_spot")}
    lines = [f"<!-- Generated by `{report.command}` (ctrbench.attention.analysis); do not edit by hand. -->", "",
             f"# Attention analysis: {model_label} on {report.dataset}", "",
             f"{model_label} ({hparams}) trained with seed {report.seed} (data, split, initialisation, shuffling): "
             f"Adam lr {config.lr:g}, batch {config.batch_size}, early stopping on validation AUC (patience "
             f"{config.patience}, at most {config.max_epochs} epochs), best epoch restored. The comparison models "
             f"get the same seed, data and training. Attention weights are read in eval mode (no dropout) for "
             f"every test row; the heat map shows {report.samples} test rows drawn with the seed. "
             f"Pair p is (field_i, field_j), i < j in row-major order: 0 = (0, 1), 1 = (0, 2), ….", ""]
    if options:
        lines += [f"Dataset options: `{json.dumps(options, sort_keys=True)}`.", ""]
    lines += _summary(report, model_label) + _spread_text(model_label)
    for analysis in report.analyses:
        info = analysis.training
        lines += [f"## {_title(analysis)}", "",
                  f"{model_label}: test AUC {_fmt(info.get('test_auc'))}, logloss {_fmt(info.get('test_logloss'))}, "
                  f"best epoch {info.get('best_epoch', '?')} of {info.get('epochs_run', '?')}; "
                  f"{analysis.test_rows:,} test rows.", "",
                  f"### Top-{report.top_k} pairs by mean attention", "", _top_table(analysis, report.top_k), ""]
        lines += _recovery(analysis, report.top_k, model_label)
        lines += ["### How per-sample the attention is", "", _spread_table(analysis), ""]
        lines += _side_by_side(analysis, model_label)
        heatmap = figures.get(("heatmap", analysis.slug))
        if heatmap:
            lines += ["### Heat map", "", f"![{heatmap.stem}]({heatmap.name})", ""]
    if figures.get(("mean", "")):
        lines += ["## Mean attention per pair", "",
                  "Bars: mean attention over the test split with its across-sample std; markers: the comparisons' "
                  "normalised shares; dashed: uniform 1/P.", "",
                  f"![{figures[('mean', '')].stem}]({figures[('mean', '')].name})", ""]
    lines += [f"_{report.seconds:.0f} s in all._", ""]
    return "\n".join(lines)


def write_attention_report(report, results_dir: Path) -> list[Path]:
    """Write the PNGs and `results_dir/attention_<dataset>[_<model>].md`; set and return `report.paths`
    (Markdown first)."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = report_stem(report.dataset, report.model)
    model_label = report.model.upper() if report.model != "qafm" else "qAFM"
    figures = {}
    for analysis in report.analyses:
        figures[("heatmap", analysis.slug)] = plot_heatmap(
            analysis, results_dir / _figure_name(stem, analysis, "heatmap"), model_label)
    figures[("mean", "")] = plot_means(report.analyses, results_dir / f"{stem}_mean.png", model_label)
    markdown = write_text_atomic(results_dir / f"{stem}.md", render_markdown(report, stem, figures))
    report.paths = [markdown, *figures.values()]
    return report.paths
