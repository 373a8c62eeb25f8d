"""What AFM's attention learned, and whether it is right: `ctrbench attention` and its function API.

For a trained attention model (AFM, or the query-conditioned qAFM) on any dataset this measures
  - the attention weights a_n (P,) of every test row (eval mode, no dropout), each row a distribution;
  - the mean weight per pair over the test split, and the top-k pairs ("field_i × field_j");
  - how per-sample the attention is (`spread_measures`: relative std, total variation and KL of each
    row from the mean row, entropies), so "the rows look nearly identical" becomes a number;
  - where the data has a ground truth (purchase's planted pairs), precision@k of the top-k pairs,
    and where the pair the truth asks to watch ranks (purchase: brand × origin, the hot spot's pair),
    with the hot spot on and/or off;
  - side by side, pair strengths that need no attention: FM's mean |<v_i, v_j>| over the test rows,
    and on request FwFM's |r_p| / Σ|r| (and its effective mean |r_p <v_i, v_j>|), with Spearman's
    rank correlation against the mean attention.

    >>> from ctrbench.attention.analysis import analyse_attention
    >>> report = analyse_attention("purchase", seed=0, hot_spot="both", compare=("fm", "fwfm"))
    >>> report.analyses[0].top[:3], report.analyses[0].recovery.precision_at_k, report.paths

The Markdown and PNGs are written by `write_attention_report` (ctrbench.attention.report).
"""
from __future__ import annotations

import math
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ctrbench.datasets import list_datasets, load
from ctrbench.models import check_hparams, hparams_for, list_models, model_entry
from ctrbench.pairs import num_pairs, pair_fields
from ctrbench.training.context import RunContext
from ctrbench.training.protocol import RunSpec, as_tensors, train_and_test
from ctrbench.training.train import TrainConfig, preset_config

from .report import write_attention_report

# Training defaults of the analysis (shorter than the leaderboard's: the attention pattern, not the
# last 0.001 of AUC, is what is looked at).
PRESET = "attention"      # its training settings (ctrbench.training.train.PRESETS)
DEFAULT_EMBED_DIM = 16
COMPARISONS = ("fm", "fwfm")          # models whose pair strengths can stand beside the attention
HOT_SPOT_CHOICES = ("on", "off", "both")
SAMPLE_SALT = 0xA77E


# ----------------------------------------------------------------------------------------- basics

def attention_models() -> list[str]:
    """Registered models that expose per-sample attention weights (`attention_weights(x) -> (B, P)`)."""
    return [name for name in list_models() if callable(getattr(model_entry(name).builder, "attention_weights", None))]


def pair_names(field_names: Sequence[str]) -> list[str]:
    """"field_i × field_j" for every pair number (row-major i < j, `ctrbench.models.pair_fields`)."""
    return [f"{field_names[i]} × {field_names[j]}" for i, j in pair_fields(len(field_names))]


@torch.no_grad()
def attention_matrix(model: torch.nn.Module, X: torch.Tensor, batch_size: int = 8192) -> np.ndarray:
    """Attention weights (N, P) float64 of every row of X, in eval mode (no dropout); the model's
    train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        parts = [model.attention_weights(X[start:start + batch_size]).double().cpu()
                 for start in range(0, X.shape[0], batch_size)]
    finally:
        model.train(was_training)
    num_pairs = len(model.pair_fields())
    return torch.cat(parts).numpy() if parts else np.zeros((0, num_pairs))


@dataclass
class Spread:
    """How much the attention distribution changes from sample to sample (N rows, P pairs).

    relative_std: mean over pairs of the across-sample std of a_np, divided by the mean weight 1/P
        (a coefficient of variation of the whole matrix): 0 = every row identical; 0.1 = a pair's
        weight typically moves by 10% of an average pair's weight from sample to sample.
    mean_tv: mean over samples of the total-variation distance ½Σ_p|a_np − ā_p| of a row from the
        mean row ā: the share of the attention mass that a sample puts elsewhere than the average
        sample (0 = identical rows, 1 = disjoint).
    mean_kl: mean over samples of KL(a_n ‖ ā) in nats (0 = identical rows).
    mean_tv_from_uniform: ½Σ_p|ā_p − 1/P|: how far the mean row is from equal weights. Read mean_tv
        against it: per-sample variation much smaller than this means the attention is a global pair
        importance, nearly the same for every sample.
    entropy_of_mean, mean_entropy, uniform_entropy: H(ā), mean_n H(a_n), and ln P, in nats.
    """

    samples: int
    pairs: int
    relative_std: float
    mean_tv: float
    mean_kl: float
    mean_tv_from_uniform: float
    entropy_of_mean: float
    mean_entropy: float
    uniform_entropy: float

    @property
    def tv_ratio(self) -> float:
        """mean_tv / mean_tv_from_uniform: per-sample variation relative to the mean row's own shape."""
        return self.mean_tv / self.mean_tv_from_uniform if self.mean_tv_from_uniform > 0 else math.inf


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=-1)


def spread_measures(weights: np.ndarray) -> Spread:
    """The measures of `Spread` for attention weights (N, P), N >= 1, rows summing to one."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[0] < 1 or weights.shape[1] < 1:
        raise ValueError(f"weights must be (samples >= 1, pairs >= 1), got shape {weights.shape}")
    n, p = weights.shape
    mean = weights.mean(axis=0)
    safe_mean = np.clip(mean, 1e-300, None)
    kl = (weights * (np.log(np.clip(weights, 1e-300, None)) - np.log(safe_mean))).sum(axis=1)
    return Spread(
        samples=n, pairs=p,
        relative_std=float(weights.std(axis=0).mean() * p),
        mean_tv=float(0.5 * np.abs(weights - mean).sum(axis=1).mean()),
        mean_kl=float(np.clip(kl, 0.0, None).mean()),
        mean_tv_from_uniform=float(0.5 * np.abs(mean - 1.0 / p).sum()),
        entropy_of_mean=float(_entropy(mean)),
        mean_entropy=float(_entropy(weights).mean()),
        uniform_entropy=math.log(p),
    )


def rank_order(scores: np.ndarray) -> np.ndarray:
    """Pair numbers from highest to lowest score (ties: lower pair number first)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each pair by score (1 = highest)."""
    order = rank_order(scores)
    result = np.empty(len(order), dtype=np.int64)
    result[order] = np.arange(1, len(order) + 1)
    return result


@dataclass
class TopRow:
    rank: int
    pair: int
    fields: str          # "field_i × field_j"
    weight: float


def top_pairs(scores: np.ndarray, names: Sequence[str], k: int) -> list[TopRow]:
    """The k highest-scoring pairs, best first."""
    return [TopRow(r + 1, int(p), names[p], float(scores[p])) for r, p in enumerate(rank_order(scores)[:k])]


def precision_at_k(scores: np.ndarray, relevant: Sequence[int], k: int) -> float:
    """|top-k pairs by score ∩ relevant| / k."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    top = set(int(p) for p in rank_order(scores)[:k])
    return len(top & {int(p) for p in relevant}) / k


def r_precision(scores: np.ndarray, relevant: Sequence[int]) -> float:
    """precision@R with R = |relevant|: 1.0 when the top R pairs by score are exactly the relevant ones."""
    return precision_at_k(scores, relevant, len(relevant))


# ----------------------------------------------------------------------- strengths without attention

@torch.no_grad()
def pair_dots(model: torch.nn.Module, X: torch.Tensor, batch_size: int = 8192):
    """Yield <v_i, v_j> (B, P) per batch of X, from `model.embedding` (FM, FwFM)."""
    num_fields = model.fields.num_fields
    rows, cols = torch.tensor(pair_fields(num_fields), device=X.device).T     # (P,), (P,): pair p = (rows[p], cols[p])
    for start in range(0, X.shape[0], batch_size):
        xb = X[start:start + batch_size]
        model.fields.check(xb)
        emb = model.embedding(xb)                              # (B, F, E)
        yield (emb[:, rows] * emb[:, cols]).sum(dim=2)         # (B, P)


def fm_pair_strength(model: torch.nn.Module, X: torch.Tensor, batch_size: int = 8192) -> np.ndarray:
    """FM's learned pair strength (P,): the mean over the rows of X of |<v_i, v_j>|."""
    total = None
    for dots in pair_dots(model, X, batch_size):
        part = dots.abs().double().sum(dim=0)
        total = part if total is None else total + part
    return (total / max(X.shape[0], 1)).cpu().numpy()


def fwfm_pair_strengths(model: torch.nn.Module, X: torch.Tensor,
                        batch_size: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """FwFM's |r_p| (P,) and its effective pair strength, the mean over X of |r_p <v_i, v_j>| (P,)."""
    r = model.pair_weights().double()
    total = None
    for dots in pair_dots(model, X, batch_size):
        part = (dots.double() * r.to(dots.device)).abs().sum(dim=0)
        total = part if total is None else total + part
    return r.abs().cpu().numpy(), (total / max(X.shape[0], 1)).cpu().numpy()


def normalised(values: np.ndarray) -> np.ndarray:
    """values / Σ values (a share per pair), zeros if they sum to zero."""
    values = np.asarray(values, dtype=np.float64)
    total = values.sum()
    return values / total if total > 0 else np.zeros_like(values)


# ----------------------------------------------------------------------------------------- results

@dataclass
class PlantedRecovery:
    """The top-k attention pairs against the generator's planted pairs (the set of pairs given an
    interaction table, whatever their strength)."""

    planted: list[int]                 # planted pair numbers, strongest first
    strengths: list[float]             # their true strength (log-odds std)
    k: int
    hits: list[int]                    # planted pairs among the top k
    precision_at_k: float              # len(hits) / k
    best_possible: float               # min(k, #planted) / k
    r_precision: float                 # precision at k = #planted
    planted_ranks: dict[int, int]      # attention rank of each planted pair
    watched_pair: int | None = None    # the truth's "watched_pair" (purchase: brand × origin, the hot spot's)
    watched_rank: int | None = None
    note: str = ""                     # the truth's "note" on the condition (purchase: hot spot on/off)
    strength_meaning: str = "from the dataset's truth"   # the truth's "pair_strength_meaning"


@dataclass
class Comparison:
    """A per-pair strength that needs no attention, beside the mean attention."""

    key: str                 # "fm", "fwfm", "fwfm_effective"
    label: str               # what it measures, for tables
    model: str
    strength: np.ndarray     # (P,) raw
    share: np.ndarray        # (P,) normalised to sum to one
    ranks: np.ndarray        # (P,) 1-based rank of each pair by strength
    spearman: float          # rank correlation with the mean attention
    spearman_p: float
    test_auc: float
    precision_at_k: float | None = None
    r_precision: float | None = None
    watched_rank: int | None = None


@dataclass
class AttentionAnalysis:
    """One trained attention model on one dataset condition (e.g. purchase with the hot spot off)."""

    dataset: str
    condition: str                       # "", "hot spot on", "hot spot off"
    model: str
    seed: int
    data_options: dict
    field_names: list[str]
    pair_fields: list[tuple[int, int]]
    pair_names: list[str]
    hparams: dict
    training: dict                       # test_auc, test_logloss, best_epoch, epochs_run, seconds
    test_rows: int
    sample_rows: np.ndarray              # (S,) test-split positions of the heat map's samples
    sample_weights: np.ndarray           # (S, P)
    mean_weights: np.ndarray             # (P,) over the whole test split
    mean_ranks: np.ndarray               # (P,) 1-based rank of each pair by mean weight
    std_weights: np.ndarray              # (P,) across-sample std over the test split
    spread: Spread
    top: list[TopRow]
    recovery: PlantedRecovery | None = None
    true_strength: np.ndarray | None = None       # (P,) where the data has a truth
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def slug(self) -> str:
        """Short file-name part for this condition ("hot-spot-on"), "" for a single condition."""
        return self.condition.replace(" ", "-")


@dataclass
class AttentionReport:
    dataset: str
    model: str
    seed: int
    samples: int
    top_k: int
    command: str
    config: TrainConfig
    analyses: list[AttentionAnalysis]
    paths: list[Path] = field(default_factory=list)   # written files (Markdown first), if written
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------- training

def train_model(name: str, dataset, seed: int, config: TrainConfig, hparams: dict | None = None,
                device: str = "cpu", progress: bool = False) -> tuple[torch.nn.Module, dict]:
    """Train model `name` (its default interaction, the hyper-parameters it knows) as `ctrbench run`
    would, with the seed fixing initialisation, dropout and shuffling; the model and its scores."""
    spec = model_spec(name, dataset, seed, config, hparams, device)
    run = train_and_test(spec, dataset, RunContext(progress=progress))
    info = {"test_auc": run.test["auc"], "test_logloss": run.test["logloss"],
            "validation_auc": run.fit.best_validation["auc"], "best_epoch": run.fit.best_epoch,
            "epochs_run": run.fit.epochs_run, "seconds": run.wall_seconds}
    return run.model, info


def model_spec(name: str, dataset, seed: int, config: TrainConfig, hparams: dict | None = None,
               device: str = "cpu") -> RunSpec:
    return RunSpec(getattr(dataset, "name", "dataset"), name, model_entry(name).default_interaction, seed,
                   hparams_for(name, hparams),
                   config=config, device=device)


def _truth_strength(dataset, num_pairs: int) -> np.ndarray | None:
    truth = getattr(dataset, "truth", None) or {}
    strength = truth.get("pair_strength")
    if strength is None:
        return None
    strength = np.asarray(strength, dtype=np.float64)
    if strength.shape != (num_pairs,):
        raise ValueError(f"dataset truth pair_strength has shape {strength.shape}, expected ({num_pairs},)")
    return strength


def _watched_pair(dataset, num_pairs: int) -> int | None:
    truth = getattr(dataset, "truth", None) or {}
    watched = truth.get("watched_pair")
    if watched is None:
        return None
    if not 0 <= int(watched) < num_pairs:
        raise ValueError(f"dataset truth watched_pair is {watched}, not a pair number below {num_pairs}")
    return int(watched)


def planted_recovery(scores: np.ndarray, true_strength: np.ndarray, k: int, watched_pair: int | None = None,
                     note: str = "", strength_meaning: str | None = None) -> PlantedRecovery:
    """Precision@k of the top-k pairs by `scores` against the pairs with a planted (non-zero) strength."""
    planted = [int(p) for p in rank_order(np.abs(true_strength)) if true_strength[p] != 0]
    if not planted:
        raise ValueError("the dataset's truth plants no pair (all pair strengths are zero)")
    rank_of = ranks(scores)
    top = [int(p) for p in rank_order(scores)[:k]]
    return PlantedRecovery(
        planted=planted, strengths=[float(true_strength[p]) for p in planted], k=k,
        hits=[p for p in top if p in planted], precision_at_k=precision_at_k(scores, planted, k),
        best_possible=min(k, len(planted)) / k, r_precision=r_precision(scores, planted),
        planted_ranks={p: int(rank_of[p]) for p in planted}, watched_pair=watched_pair,
        watched_rank=None if watched_pair is None else int(rank_of[watched_pair]), note=note,
        strength_meaning=strength_meaning or PlantedRecovery.strength_meaning)


def _comparison(key: str, label: str, model: str, strength: np.ndarray, mean_weights: np.ndarray, auc: float,
                true_strength: np.ndarray | None, k: int, watched: int | None) -> Comparison:
    if np.ptp(strength) == 0 or np.ptp(mean_weights) == 0:
        rho, p_value = float("nan"), float("nan")
    else:
        from scipy import stats as scipy_stats  # ~1 s to import, which `ctrbench --help` should not pay
        result = scipy_stats.spearmanr(mean_weights, strength)
        rho, p_value = float(result.statistic), float(result.pvalue)
    comparison = Comparison(key, label, model, strength, normalised(strength), ranks(strength), rho, p_value, auc)
    if true_strength is not None and np.any(true_strength != 0):
        recovery = planted_recovery(strength, true_strength, k)
        comparison.precision_at_k, comparison.r_precision = recovery.precision_at_k, recovery.r_precision
    if watched is not None:
        comparison.watched_rank = int(comparison.ranks[watched])
    return comparison


def analyse_trained(model: torch.nn.Module, dataset, samples: int = 30, top_k: int = 5, seed: int = 0,
                    comparisons: dict | None = None, condition: str = "", model_name: str | None = None,
                    training: dict | None = None, hparams: dict | None = None,
                    batch_size: int = 8192) -> AttentionAnalysis:
    """Analyse an already trained attention model on `dataset`'s test split.

    comparisons: {"fm": (trained FM, training info), "fwfm": (trained FwFM, info)}, any subset.
    The heat map's `samples` rows are drawn from the test split with a generator seeded by `seed`.
    """
    if not callable(getattr(model, "attention_weights", None)):
        raise ValueError(f"{type(model).__name__} has no attention_weights(x); models with attention: "
                         f"{', '.join(attention_models())}")
    _check_counts(samples, top_k, len(dataset.field_names))
    device = next(model.parameters()).device
    X_test, _ = as_tensors(dataset, "test", device)
    if X_test.shape[0] < 1:
        raise ValueError("the test split is empty: nothing to read attention from")
    weights = attention_matrix(model, X_test, batch_size)                      # (N, P)
    names = pair_names(dataset.field_names)
    mean = weights.mean(axis=0)
    rng = np.random.default_rng([seed, SAMPLE_SALT])
    chosen = np.sort(rng.choice(len(weights), size=min(samples, len(weights)), replace=False))
    true_strength = _truth_strength(dataset, len(names))
    watched = _watched_pair(dataset, len(names))
    truth = getattr(dataset, "truth", None) or {}
    recovery = None
    if true_strength is not None and np.any(true_strength != 0):
        recovery = planted_recovery(mean, true_strength, top_k, watched, truth.get("note", ""),
                                    truth.get("pair_strength_meaning"))
    analysis = AttentionAnalysis(
        dataset=getattr(dataset, "name", "dataset"), condition=condition,
        model=model_name or getattr(type(model), "registry_name", type(model).__name__.lower()),
        seed=seed, data_options=dict(getattr(dataset, "options", {}) or {}), field_names=list(dataset.field_names),
        pair_fields=[tuple(p) for p in model.pair_fields()], pair_names=names, hparams=dict(hparams or {}),
        training=dict(training or {}), test_rows=len(weights), sample_rows=chosen, sample_weights=weights[chosen],
        mean_weights=mean, mean_ranks=ranks(mean), std_weights=weights.std(axis=0), spread=spread_measures(weights),
        top=top_pairs(mean, names, top_k), recovery=recovery, true_strength=true_strength)
    for key, (other, info) in (comparisons or {}).items():
        auc = (info or {}).get("test_auc", float("nan"))
        X_other = X_test.to(next(other.parameters()).device)
        if key == "fm":
            analysis.comparisons.append(_comparison(
                "fm", "FM mean |⟨v_i, v_j⟩|", "fm", fm_pair_strength(other, X_other, batch_size), mean, auc,
                true_strength, top_k, watched))
        elif key == "fwfm":
            r_abs, effective = fwfm_pair_strengths(other, X_other, batch_size)
            analysis.comparisons.append(_comparison("fwfm", "FwFM |r_p| / Σ|r|", "fwfm", r_abs, mean, auc,
                                                    true_strength, top_k, watched))
            analysis.comparisons.append(_comparison("fwfm_effective", "FwFM mean |r_p ⟨v_i, v_j⟩|", "fwfm",
                                                    effective, mean, auc, true_strength, top_k, watched))
        else:
            raise ValueError(f"unknown comparison {key!r}; choose from {', '.join(COMPARISONS)}")
    return analysis


# ------------------------------------------------------------------------------------ orchestration

def _check_counts(samples: int, top_k: int, num_fields: int | None = None) -> None:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    if num_fields is not None:
        if top_k > num_pairs(num_fields):
            raise ValueError(f"top_k={top_k} is more than the {num_pairs(num_fields)} field pairs of "
                             f"{num_fields} fields")


def check_options(dataset, model: str, samples: int, top_k: int, compare: Sequence[str],
                  hot_spot: str | None, data_options: dict) -> None:
    """ValueError naming the valid choices for anything the analysis cannot do."""
    if isinstance(dataset, str) and dataset not in list_datasets():
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(list_datasets())}")
    model_entry(model)                                       # unknown model: ValueError listing them
    if model not in attention_models():
        raise ValueError(f"model {model!r} has no per-sample attention weights to analyse; "
                         f"models with attention: {', '.join(attention_models())}")
    _check_counts(samples, top_k)
    unknown = [c for c in compare if c not in COMPARISONS]
    if unknown:
        raise ValueError(f"unknown comparison(s) {unknown}; choose from {', '.join(COMPARISONS)} (or none)")
    if hot_spot is not None:
        if hot_spot not in HOT_SPOT_CHOICES:
            raise ValueError(f"hot_spot must be one of {', '.join(HOT_SPOT_CHOICES)}, got {hot_spot!r}")
        if dataset != "purchase":
            name = dataset if isinstance(dataset, str) else getattr(dataset, "name", "the given dataset")
            raise ValueError(f"the hot-spot knob belongs to the purchase generator, not to {name!r}")
        if "hot_spot" in data_options:
            raise ValueError("give the hot spot either as hot_spot/--hot-spot or as a data option, not both")


def conditions_for(dataset, hot_spot: str | None) -> list[tuple[str, dict]]:
    """(label, extra dataset options) per condition; purchase defaults to the hot spot on and off."""
    if dataset != "purchase":
        return [("", {})]
    choice = hot_spot or "both"
    chosen = ["on", "off"] if choice == "both" else [choice]
    return [(f"hot spot {c}", {"hot_spot": c == "on"}) for c in chosen]


def command_line(dataset, seed: int, model: str, samples: int, top_k: int, compare: Sequence[str],
                 hot_spot: str | None, data_options: dict, config: TrainConfig, hparams: dict,
                 results_dir: Path) -> str:
    """The `ctrbench attention ...` command that reproduces the analysis."""
    if not isinstance(dataset, str):
        return f"ctrbench.attention.analysis.analyse_attention(<{getattr(dataset, 'name', 'dataset')} object>, ...)"
    parts = ["ctrbench", "attention", "--dataset", dataset, "--seed", str(seed), "--model", model,
             "--samples", str(samples), "--top-k", str(top_k), "--compare", ",".join(compare) or "none"]
    if dataset == "purchase":
        parts += ["--hot-spot", hot_spot or "both"]
    for name, value in sorted(data_options.items()):
        parts += ["--data-option", f"{name}={value}"]
    for name, value in sorted(hparams.items()):
        if name == "embed_dim":
            if value != DEFAULT_EMBED_DIM:
                parts += ["--embed-dim", str(value)]
        else:
            parts += ["--set", f"{name}={value}"]
    defaults = preset_config(PRESET)
    for name in ("max_epochs", "batch_size", "lr", "patience"):
        if getattr(config, name) != getattr(defaults, name):
            parts += [f"--{name.replace('_', '-')}", str(getattr(config, name))]
    if Path(results_dir) != Path("results"):
        parts += ["--results-dir", str(results_dir)]
    return shlex.join(parts)


def analyse_attention(dataset="purchase", seed: int = 0, model: str = "afm", samples: int = 30, top_k: int = 5,
                      compare: Sequence[str] = ("fm",), hot_spot: str | None = None,
                      data_options: dict | None = None, train_config: TrainConfig | None = None,
                      hparams: dict | None = None, data_dir=None, device: str = "cpu",
                      results_dir: Path | None = Path("results"), progress: bool = False,
                      log: Callable[[str], None] | None = None) -> AttentionReport:
    """Train `model` (and the `compare` models: "fm", "fwfm") per dataset condition, analyse the
    attention, and write `results_dir/attention_<dataset>[_<model>].md` with its PNGs (results_dir None:
    write nothing).

    dataset: a name for `ctrbench.datasets.load` (seed fixes generation and split), or an already loaded
        dataset object (X, y, field_names, field_dims, splits, split(); optional name, truth, options).
    hot_spot: purchase only: "on", "off" or "both" (default both: one report, both conditions).
    train_config: default the "attention" preset (max_epochs=30, batch_size=1024, lr=1e-3, patience=3).
    hparams: model hyper-parameters; each model gets those it knows (default embed_dim=16).
    """
    started = time.perf_counter()
    log = log or (lambda message: None)
    data_options = dict(data_options or {})
    compare = tuple(c for c in compare if c and c != "none")
    check_options(dataset, model, samples, top_k, compare, hot_spot, data_options)
    config = train_config or preset_config(PRESET)
    hparams = {"embed_dim": DEFAULT_EMBED_DIM, **(hparams or {})}
    check_hparams((model, *compare), hparams)
    analyses = []
    for condition, extra in conditions_for(dataset, hot_spot):
        if isinstance(dataset, str):
            log(f"{dataset}{' (' + condition + ')' if condition else ''}: loading")
            data = load(dataset, data_dir=data_dir, seed=seed, **data_options, **extra)
        else:
            data = dataset
        _check_counts(samples, top_k, len(data.field_names))
        trained = {}
        for name in (model, *compare):
            log(f"  training {name} (seed {seed})")
            trained[name] = train_model(name, data, seed, config, hparams, device, progress)
            info = trained[name][1]
            log(f"  {name}: test AUC {info['test_auc']:.4f}, best epoch {info['best_epoch']}/{info['epochs_run']}, "
                f"{info['seconds']:.0f}s")
        net, info = trained[model]
        analyses.append(analyse_trained(
            net, data, samples, top_k, seed, {c: trained[c] for c in compare}, condition, model, info,
            model_spec(model, data, seed, config, hparams).full_hparams()))
    report = AttentionReport(
        dataset=dataset if isinstance(dataset, str) else getattr(dataset, "name", "dataset"), model=model, seed=seed,
        samples=samples, top_k=top_k,
        command=command_line(dataset, seed, model, samples, top_k, compare, hot_spot, data_options, config,
                             {k: v for k, v in hparams.items()}, results_dir or Path("results")),
        config=config, analyses=analyses, seconds=time.perf_counter() - started)
    if results_dir is not None:
        write_attention_report(report, results_dir)
        log(f"attention report: {report.paths[0]}")
    return report
