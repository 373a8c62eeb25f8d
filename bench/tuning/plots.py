"""A study's figures: the optimisation history and the parameter importances (Optuna's matplotlib
backend), written as PNGs under RESULTS/tuning/ through the one atomic file writer."""
from __future__ import annotations

import warnings
from pathlib import Path

import optuna

from ctrbench.files import file_only_matplotlib, save_figure

from .fields import figure_paths


def write_study_plots(study: optuna.Study, results_dir: Path, log=print) -> list[Path]:
    """The history (every finished trial's validation AUC and the best so far) and, with at least two
    complete trials that differ, the fANOVA importances; returns the files written."""
    file_only_matplotlib()
    from optuna.visualization import matplotlib as optuna_plots  # imports pyplot: after the backend is set
    paths, written = figure_paths(results_dir, study.study_name), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # Optuna marks its matplotlib backend experimental
        drawers = {"history": optuna_plots.plot_optimization_history,
                   "importance": lambda s: optuna_plots.plot_param_importances(
                       s, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))}
        for kind, draw in drawers.items():
            try:
                axes = draw(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as error:
                log(f"{study.study_name}: no {kind} plot ({error})")
                continue
            where = next((loc for loc in ("left", "center") if axes.get_title(loc=loc)), "center")
            axes.set_title(f"{study.study_name}: {axes.get_title(loc=where)}", loc=where)
            figure = axes.get_figure()
            figure.set_size_inches(8, 4.5)
            figure.tight_layout()
            written.append(save_figure(figure, paths[kind]))
    return written
