"""The results pages: the front page's verdicts, comparable columns (threads, load, capped runs), the code
identity of every number, `ctrbench results`, and the shipped results read back by their writers' readers."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ctrbench.commands import main
from ctrbench.report import quality
from ctrbench.report.inventory import archive, inventory
from ctrbench.report.leaderboard import render_pages, write_leaderboard
from ctrbench.store import code_identity
from ctrbench.store.environment import LoadWindow, is_loaded
from ctrbench.store.records import read_record, write_record

REPO = Path(__file__).resolve().parent.parent
BASE = {"batch_size": 1024, "eval_batch_size": 8192, "lr": 0.001, "max_epochs": 100, "patience": 3,
        "plateau_lr_factor": None, "weight_decay": 0.0}


def record(model, seed, auc, dataset="d", threads=1, epochs=(3, 6), config=None, load=None, **extra):
    best, run = epochs
    return {"kind": "run", "schema": 1, "key": f"{model}{seed}{auc}{threads}{dataset}", "dataset": dataset,
            "dataset_options": {"rows": 100}, "model": model, "interaction": "sum_square",
            "hparams": {"embed_dim": 16}, "seed": seed, "config": {**BASE, **(config or {})}, "device": "cpu",
            "world_size": 1, "compile": False, "test": {"auc": auc, "logloss": 0.5}, "best_epoch": best,
            "epochs_run": run, "train_samples_per_s": 1000.0 * threads,
            "memory": {"rss_peak_bytes": 2 ** 20, "cuda_peak_bytes": None},
            "environment": {"threads": threads, "git_commit": "abc", "date": "2026-12-01T00:00:00+00:00",
                            "load_avg": load}, **extra}


def verdict_of(records, dataset="d"):
    (verdict,) = [v for v in quality.verdicts(quality.quality_tables(records)) if v.quality.key.dataset == dataset]
    return verdict


def test_the_verdict_names_the_best_the_runner_up_and_their_paired_difference():
    # b beats a by 0.01 on every seed but one (jitter): significant; c trails far behind
    records = [record("a", s, 0.70 + 0.02 * s) for s in range(5)]
    records += [record("b", s, 0.71 + 0.02 * s + (0.001 if s == 2 else 0)) for s in range(5)]
    records += [record("c", s, 0.60) for s in range(5)]
    verdict = verdict_of(records)
    assert (verdict.best.model, verdict.runner_up.model) == ("b", "a")
    assert verdict.test.significant and verdict.test.mean_difference == pytest.approx(0.0102)
    row = quality.verdict_row(verdict, "link")
    assert row[1] == "b (sum_square)" and row[3].startswith("a 0.7") and row[4].startswith("+0.0102 (paired t over 5")


def test_seeds_that_differ_more_than_models_give_no_significant_difference():
    records = [record("a", s, 0.70 + 0.05 * s + (0.003 if s % 2 else -0.003)) for s in range(5)]
    records += [record("b", s, 0.70 + 0.05 * s) for s in range(5)]
    row = quality.verdict_row(verdict_of(records), "link")
    assert row[4].startswith("no significant difference (")


def test_a_tuned_table_is_the_stronger_setting():
    untuned = [record(m, s, 0.8 + 0.01 * s + (0.05 if m == "a" else 0)) for m in "ab" for s in range(3)]
    tuned = [record("b", s, 0.7 + 0.01 * s, tuned={"study": "st", "space_hash": "h"},
                    tuning={"trials": 4, "params": {}, "best_trial": 1, "sampler": "tpe", "prune_from_epoch": 10})
             for s in range(3)]
    tuned += [record("a", s, 0.69 + 0.01 * s, tuned={"study": "sa", "space_hash": "h"},
                     tuning={"trials": 4, "params": {}, "best_trial": 1, "sampler": "tpe", "prune_from_epoch": 10})
              for s in range(3)]
    verdict = verdict_of(untuned + tuned)
    assert verdict.quality.key.tuning and verdict.best.model == "b"


def test_thread_counts_are_never_averaged_unmarked():
    mixed = [record("a", 0, 0.7, threads=1), record("a", 1, 0.71, threads=2)]
    same = [record("b", s, 0.6, threads=2) for s in range(2)]
    text = "\n".join(quality.quality_section(mixed + same, Path(".")))
    (a_row,) = [line for line in text.splitlines() if line.startswith("| a ")]
    (b_row,) = [line for line in text.splitlines() if line.startswith("| b ")]
    assert "(1/2 threads, mixed)" in a_row and "(2 threads)" in b_row and "mixed" not in b_row


def test_a_run_measured_on_a_busy_machine_is_marked():
    busy = {"start": {"cpus": 2}, "end": {"cpus": 2}, "others_busy_cores": 1.5}
    quiet = {"start": {"cpus": 2}, "end": {"cpus": 2}, "others_busy_cores": 0.05}
    assert is_loaded(busy, 2) and is_loaded(busy, 1) and not is_loaded(quiet, 2) and is_loaded(None, 1) is None
    text = "\n".join(quality.quality_section([record("a", 0, 0.7, threads=2, load=busy),
                                              record("b", 0, 0.6, threads=2, load=quiet)], Path(".")))
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith(("| a ", "| b "))}
    assert "‡" in rows["a"] and "‡" not in rows["b"]


def test_a_load_window_measures_other_processes_cpu():
    window = LoadWindow()
    spin = "import time\nend = time.time() + 1.0\nwhile time.time() < end: pass"
    burner = subprocess.Popen([sys.executable, "-c", spin])
    burner.wait()
    load = window.finish()
    assert load["start"]["cpus"] >= 1 and load["end"] is not None
    assert load["others_busy_cores"] > 0.3          # the child's busy second, not this process's


def test_capped_runs_are_flagged_in_tables_and_verdicts():
    records = [record("a", s, 0.75, epochs=(100, 100)) for s in range(2)]      # ran out of epochs, still improving
    records += [record("b", s, 0.70 + 0.001 * s, epochs=(10, 13)) for s in range(2)]
    text = "\n".join(quality.quality_section(records, Path(".")))
    (a_row,) = [line for line in text.splitlines() if line.startswith("| a ")]
    (b_row,) = [line for line in text.splitlines() if line.startswith("| b ")]
    assert "capped 2/2" in a_row and "capped" not in b_row
    verdict = verdict_of(records)
    assert verdict.capped and "**capped**" in quality.verdict_row(verdict, "link")[5]


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def tiny_repo(tmp_path):
    repo = tmp_path / "repo"
    for name in ("bench/x.py", "models/m.py", "datasets/d.py", "pyproject.toml", "tests/t.py", "bench/sub/y.py"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(f"# {name}\n")
    git(repo.parent, "init", "-q", str(repo))
    git(repo, "add", ".")
    git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")
    return repo


def test_code_tree_of_a_clean_checkout_is_its_commits_tree_and_a_dirty_one_finds_its_later_commit(tiny_repo):
    head_tree = code_identity.commit_code_tree("HEAD", tiny_repo)
    assert code_identity.code_tree(tiny_repo) == head_tree
    assert code_identity.git_commit(tiny_repo) == git(tiny_repo, "rev-parse", "HEAD")
    (tiny_repo / "tests" / "t.py").write_text("# tests are not code\n")
    assert not code_identity.is_dirty(code_identity.git_commit(tiny_repo))
    (tiny_repo / "models" / "m.py").write_text("# changed\n")
    (tiny_repo / "models" / "new.py").write_text("# a new file counts too\n")
    dirty_tree = code_identity.code_tree(tiny_repo)
    assert dirty_tree != head_tree and code_identity.is_dirty(code_identity.git_commit(tiny_repo))
    git(tiny_repo, "add", ".")
    git(tiny_repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "two")
    code_identity.commits_by_code_tree.cache_clear()
    assert code_identity.commits_by_code_tree(tiny_repo)[dirty_tree] == git(tiny_repo, "rev-parse", "HEAD")


def test_code_tree_without_git_is_the_same_id(tiny_repo, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_repo, copy, ignore=shutil.ignore_patterns(".git"))
    (copy / "bench" / "__pycache__").mkdir()
    (copy / "bench" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")        # build output is not code
    assert code_identity.git_commit(copy) is None
    assert code_identity.code_tree(copy) == code_identity.commit_code_tree("HEAD", tiny_repo)


def test_a_new_record_names_its_code_tree_and_load(tmp_path, tiny_dataset):
    from ctrbench.training.protocol import RunSpec, run_one
    from ctrbench.training.train import TrainConfig
    record_ = run_one(RunSpec("tiny", "fm", "sum_square", seed=0, config=TrainConfig(max_epochs=1, batch_size=512)),
                      tiny_dataset)
    environment = record_["environment"]
    assert re.fullmatch(r"[0-9a-f]{40}", environment["code_tree"]) and environment["cpu_isa"]
    assert set(environment["load_avg"]) == {"start", "end", "others_busy_cores"}
    write_record(tmp_path / "r.json", record_)
    assert read_record(tmp_path / "r.json")["key"] == record_["key"]


def test_a_key_no_writer_produces_is_refused(tmp_path):
    path = tmp_path / "r.json"
    write_record(path, {**record("a", 0, 0.7), "annotation": "typed by hand"})
    with pytest.raises(ValueError, match=r"\['annotation'\] are written by no code"):
        read_record(path)
    from ctrbench.measure import data_scale
    (tmp_path / "data_scale.json").write_text(json.dumps({"kind": "data_scale", "notes": {}}))
    with pytest.raises(ValueError, match="notes"):
        data_scale.read(tmp_path / "data_scale.json")


def sweep(impls):
    return {"kind": "device_sweep", "device_name": "GPU X", "complete": True, "planned_cells": 1, "environment": {},
            "settings": {"impls": impls}, "cells": [{"impl": impls[0], "num_fields": 39, "batch": 1024,
                                                     "mode": "train", "status": "ok", "median_s": 0.01,
                                                     "samples_per_s": 1.0e5, "peak_extra_bytes": None}]}


def test_results_lists_and_archives_what_no_longer_exists(tmp_path, capsys):
    results = tmp_path / "results"
    write_record(results / "runs" / "d" / "a__sum_square__seed0__a00.7.json", {**record("gone", 0, 0.7), "key": "a00.7",
                                                                                 "model": "gone"})
    write_record(results / "runs" / "d" / "fm__sum_square__seed0__k.json", {**record("fm", 0, 0.7), "key": "k"})
    (results / "gpu").mkdir(parents=True)
    (results / "gpu" / "afm_old.json").write_text(json.dumps(sweep(["triu_index"])))
    assert main(["results", "--results-dir", str(results)]) == 0
    listing = capsys.readouterr().out
    assert "names gone, no longer in the registry" in listing and "predates afm_fused" in listing
    assert re.search(r"\| run records +\| d +\| 1 +\| abc .*\| current", listing)
    moved = archive(results, inventory(results), today="2026-12-02")
    assert {p.name for p in moved} == {"a__sum_square__seed0__a00.7.json", "afm_old.json"}
    assert (results / "archive" / "2026-12-02" / "gpu" / "afm_old.json").is_file()
    assert not (results / "gpu" / "afm_old.json").exists()
    assert (results / "runs" / "d" / "fm__sum_square__seed0__k.json").exists()
    index = (results / "archive" / "index.md").read_text()
    assert "| 2026-12-02 | `2026-12-02/gpu/afm_old.json` | device sweep |" in index
    write_leaderboard(results, log=lambda message: None)
    assert "gone" not in (results / "leaderboard.md").read_text()
    assert main(["results", "--results-dir", str(results), "--archive"]) == 0
    assert "nothing to archive" in capsys.readouterr().out


def test_the_shipped_results_are_read_by_their_writers_readers_and_make_a_short_front_page(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(REPO / "results", results, ignore=shutil.ignore_patterns("archive"))
    pages, problems = render_pages(results)
    assert problems == []
    front = pages[results / "leaderboard.md"]
    assert len(front.splitlines()) <= 200
    assert "## Which model, per dataset" in front and "## Which implementation, per hardware" in front
    for path, text in pages.items():
        headings = [line for line in text.splitlines() if line.startswith("#")]
        assert not [h for h in headings if "{" in h], path              # never a JSON dict in a heading
        for target, anchor in re.findall(r"\]\(([^)#]+\.md)(?:#([^)]+))?\)", text):
            linked = (path.parent / target).resolve()
            assert linked in {p.resolve() for p in pages}, (path, target)
            if anchor:
                anchors = {quality.anchor_of(line.lstrip("#").strip()) for line in pages[linked].splitlines()
                           if line.startswith("#")}
                assert anchor in anchors, (path, target, anchor)


def test_rendering_the_pages_does_not_load_the_tuner():
    code = ("import sys, ctrbench.report.leaderboard; "
            "print(sorted(m for m in ('optuna', 'sqlalchemy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_peer_is_set_against_our_model_of_the_same_algebra():
    records = [record("afm", s, 0.70 + 0.01 * s) for s in range(3)]
    records += [record("torchfm_afm", s, 0.68 + 0.01 * s + (0.001 if s == 1 else 0)) for s in range(3)]
    records += [{**record("deepctr_afm", s, 0.70 + 0.01 * s), "train_samples_per_s": 500.0} for s in range(3)]
    assert quality.ours_of("torchfm_afm") == "afm" and quality.ours_of("deepctr_dcnmix") == "dcnv2"
    assert quality.ours_of("afm") is None
    rows = {row[3]: row for row in quality.peer_rows(quality.quality_tables(records), "d")}
    assert rows["torchfm_afm"][7] == "ctrbench better" and rows["torchfm_afm"][6].startswith("+0.0197")
    assert rows["deepctr_afm"][7] == "no significant difference" and rows["deepctr_afm"][8] == "×2.00"
