"""The quality tables never mix settings: one table per complete set of settings (training, data,
machine, tuned or not), every model at most once per table, a t-test only inside a table."""
import re

from ctrbench.report.quality import quality_section

BASE = {"batch_size": 1024, "eval_batch_size": 8192, "lr": 0.001, "max_epochs": 100, "patience": 3,
        "plateau_lr_factor": None, "weight_decay": 0.0}


def record(model, seed, auc, config=None, tuned=None, tuning=None, hparams=None, **extra):
    return {"kind": "run", "schema": 1, "key": f"{model}{seed}{auc}", "dataset": "purchase",
            "dataset_options": {"rows": 100, "seed": seed}, "model": model, "interaction": "sum_square",
            "hparams": hparams or {"embed_dim": 16}, "seed": seed, "config": {**BASE, **(config or {})},
            "device": "cpu", "world_size": 1, "compile": False, "test": {"auc": auc, "logloss": 0.5},
            "best_epoch": 3, "epochs_run": 5, "train_samples_per_s": 1000.0,
            "memory": {"rss_peak_bytes": 2 ** 20, "cuda_peak_bytes": None},
            **({"tuned": tuned, "tuning": tuning} if tuned else {}), **extra}


def tables(lines: list[str]) -> list[tuple[str, list[str]]]:
    """[(heading, [model of each row])] from the quality section's Markdown, one per table."""
    found, quality_table = [], False
    for line in "\n".join(lines).splitlines():
        if line.startswith("### "):
            found.append((line[4:], []))
        elif line.startswith("| setting"):
            quality_table = False
        elif line.startswith("| model"):
            quality_table = "| interaction" in line         # not the tuned-against-untuned table below it
        elif found and quality_table and line.startswith("| "):
            found[-1][1].append(line.split("|")[1].strip())
    return found


def test_two_settings_of_the_same_models_make_two_tables_without_duplicates(tmp_path):
    records = [record(m, s, 0.7 + 0.01 * s + (0.02 if m == "fm" else 0)) for m in ("fm", "afm") for s in range(3)]
    records += [record(m, s, 0.6 + 0.01 * s, config={"patience": 10}) for m in ("fm", "afm") for s in range(3)]
    found = tables(quality_section(records, tmp_path))
    assert len(found) == 2
    for _, models in found:
        assert sorted(models) == ["afm", "fm"]                       # each once per table


def test_tuned_runs_get_their_own_table_with_their_tuned_settings_in_the_row(tmp_path):
    untuned = [record(m, s, 0.70 + 0.001 * s) for m in ("fm", "afm") for s in range(3)]
    tuned = [record("fm", s, 0.72 + 0.001 * s, config={"embedding_regularizer": 1e-5},
                    tuned={"study": "p-fm", "space_hash": "abc"},
                    tuning={"trials": 6, "params": {"embedding_regularizer": 1e-5}, "best_trial": 2,
                            "best_validation_auc": 0.71, "sampler": "tpe"}) for s in range(3)]
    tuned += [record("afm", s, 0.73 + 0.002 * s, config={"embedding_regularizer": 1e-4},
                     hparams={"embed_dim": 16, "attn_dim": 64}, tuned={"study": "p-afm", "space_hash": "def"},
                     tuning={"trials": 6, "params": {"embedding_regularizer": 1e-4, "attn_dim": 64}, "best_trial": 1,
                             "best_validation_auc": 0.72, "sampler": "tpe"}) for s in range(3)]
    (tmp_path / "tuning").mkdir()
    (tmp_path / "tuning" / "p-fm_history.png").write_bytes(b"png")       # p-afm's plots were never written
    lines = quality_section(untuned + tuned, tmp_path)
    found = tables(lines)
    assert len(found) == 2
    (tuned_models,) = [models for heading, models in found if " · tuned (tpe, pruning from epoch 2) · " in heading]
    assert sorted(tuned_models) == ["afm", "fm"]             # one table although their regularizers differ
    text = "\n".join(lines)
    assert "embedding_regularizer=1e-05" in text and "study `p-afm`, 6 trials" in text
    assert "[history](../tuning/p-fm_history.png)" in text and "p-fm_importance" not in text
    assert "p-afm_" not in text and "plots: none in this results folder" in text
    assert not re.search(r"\| training +\| [^\n]*embedding_regularizer", text)   # a row's setting, not the table's
    # fm's untuned runs have its default hyper-parameters: the tuned one is set against them, seed by seed
    gain = next(line for line in text.splitlines() if line.startswith("| fm ") and "+0.0200" in line)
    assert "0.7210" in gain and "0.7010" in gain and "p=0 (constant gap)" in gain


def test_a_continued_study_shows_only_its_latest_best(tmp_path):
    def tuned_run(seed, trials, attn_dim, auc):
        return record("afm", seed, auc, hparams={"embed_dim": 16, "attn_dim": attn_dim},
                      tuned={"study": "p-afm", "space_hash": "def"},
                      tuning={"trials": trials, "params": {"attn_dim": attn_dim}, "best_trial": 0,
                              "best_validation_auc": 0.7, "sampler": "tpe"})
    records = [tuned_run(s, 4, 16, 0.70) for s in range(2)] + [tuned_run(s, 8, 64, 0.71) for s in range(2)]
    ((_, models),) = tables(quality_section(records, tmp_path))
    assert models == ["afm"]
    assert "attn_dim=64" in "\n".join(quality_section(records, tmp_path))


def test_studies_that_searched_differently_get_tables_of_their_own(tmp_path):
    def tuned_run(seed, study, **tuning):
        return record("fm", seed, 0.7 + 0.001 * seed, config={"embedding_regularizer": 1e-5},
                      tuned={"study": study, "space_hash": "abc"},
                      tuning={"trials": 6, "params": {"embedding_regularizer": 1e-5}, "best_trial": 1,
                              "best_validation_auc": 0.7, "sampler": "tpe", **tuning})
    records = [tuned_run(s, "old") for s in range(2)]                            # made before it was recorded
    records += [tuned_run(s, "new", prune_from_epoch=10) for s in range(2)]
    records += [tuned_run(s, "free", prune_from_epoch=None) for s in range(2)]
    headings = sorted(heading.split(" · ")[2] for heading, _ in tables(quality_section(records, tmp_path)))
    assert headings == ["tuned (tpe, no pruning)", "tuned (tpe, pruning from epoch 10)",
                        "tuned (tpe, pruning from epoch 2)"]


def test_a_continued_study_whose_best_moved_at_the_same_count_shows_the_new_best(tmp_path):
    # Repeats stopped counting, so a continued study can reach its old count with a new best trial.
    def tuned_run(seed, best_trial, regularizer):
        return record("fm", seed, 0.7, config={"embedding_regularizer": regularizer},
                      tuned={"study": "p-fm", "space_hash": "abc"},
                      tuning={"trials": 6, "params": {"embedding_regularizer": regularizer}, "best_trial": best_trial,
                              "best_validation_auc": 0.69, "sampler": "tpe"})
    records = [tuned_run(s, 0, 1e-6) for s in range(2)] + [tuned_run(s, 6, 0.0) for s in range(2)]
    text = "\n".join(quality_section(records, tmp_path))
    ((_, models),) = tables(quality_section(records, tmp_path))
    assert models == ["fm"] and "embedding_regularizer=0.0" in text and "1e-06" not in text
