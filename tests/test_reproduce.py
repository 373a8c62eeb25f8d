"""`ctrbench reproduce`: a stored run trained again from its own record is the same run, scored the same on CPU;
--replace swaps the record only after archiving it; what cannot be re-made here says why."""
import json

import pytest

from ctrbench.commands import main
from ctrbench.report.provenance import reproduced_label
from ctrbench.store.records import read_record, write_record
from ctrbench.training.protocol import Grid, run_grid
from ctrbench.training.reproduce import remake, spec_of, untraceable
from ctrbench.training.train import TrainConfig

FAST = TrainConfig(max_epochs=3, batch_size=256, patience=2)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A results folder with two small purchase runs (FM given a row count, AFM the loader's defaults but
    for the rows); returns (folder, [record paths])."""
    results = tmp_path_factory.mktemp("results")
    for model in ("fm", "afm"):
        run_grid(Grid("purchase", [model], seeds=[1], dataset_options={"rows": 3000}, config=FAST), results,
                 log=lambda message: None)
    return results, sorted((results / "runs" / "purchase").glob("*.json"))


def without_time(epoch: dict) -> dict:
    return {name: value for name, value in epoch.items() if name != "seconds"}


def copy_of(stored, tmp_path):
    results, paths = stored
    target = tmp_path / "results"
    for path in paths:
        (target / path.relative_to(results)).parent.mkdir(parents=True, exist_ok=True)
        (target / path.relative_to(results)).write_bytes(path.read_bytes())
    return target, [target / path.relative_to(results) for path in paths]


def as_if_untraceable(path):
    """The record as code before code trees were recorded wrote it: a dirty commit, no tree."""
    record = read_record(path)
    record["environment"] = {**record["environment"], "git_commit": "0" * 40 + "+dirty"}
    record["environment"].pop("code_tree", None)
    write_record(path, record)
    return record


def test_a_remade_record_is_the_same_run_with_the_same_scores(stored):
    _, paths = stored
    for path in paths:
        record = read_record(path)
        assert spec_of(record).key() == record["key"]
        fresh = remake(record)
        assert fresh["key"] == record["key"]
        assert fresh["test"] == record["test"]
        assert [without_time(epoch) for epoch in fresh["history"]] == [without_time(e) for e in record["history"]]
        assert fresh["reproduces"]["test"] == record["test"]


def test_a_record_whose_settings_changed_cannot_be_remade(stored):
    record = read_record(stored[1][0])
    with pytest.raises(ValueError, match="cannot be re-made as the same run"):
        spec_of({**record, "config": {**record["config"], "lr": 0.5}})
    with pytest.raises(ValueError, match="not this code's"):
        spec_of({**record, "config": {**record["config"], "no_such_setting": 1}})


def test_check_only_writes_nothing_and_says_identical(stored, tmp_path, capsys):
    results, paths = copy_of(stored, tmp_path)
    before = {path: path.read_bytes() for path in paths}
    assert main(["reproduce", "--quiet", "--results-dir", str(results), *map(str, paths)]) == 0
    out = capsys.readouterr().out
    assert out.count(": identical") == 2 and "re-made 2 run(s): 2 identical" in out
    assert {path: path.read_bytes() for path in paths} == before
    assert not (results / "archive").exists()


def test_replace_swaps_only_the_untraceable_record_after_archiving_it(stored, tmp_path, capsys):
    results, paths = copy_of(stored, tmp_path)
    old = as_if_untraceable(paths[0])
    untouched = paths[1].read_bytes()
    assert main(["reproduce", "--quiet", "--untraceable", "--replace", "--results-dir", str(results)]) == 0
    assert "[1/1] purchase" in capsys.readouterr().out
    new = read_record(paths[0])
    assert not untraceable(new) and new["environment"]["code_tree"]
    assert new["reproduces"]["git_commit"] == old["environment"]["git_commit"] and new["test"] == old["test"]
    assert paths[1].read_bytes() == untouched
    archived = list((results / "archive").rglob(paths[0].name))
    assert len(archived) == 1 and json.loads(archived[0].read_text()) == old
    assert "replaced by its re-made run" in (results / "archive" / "index.md").read_text()
    page = (results / "leaderboard" / "quality-purchase.md").read_text()
    assert "1 of them re-made by `ctrbench reproduce` from records of `000000000000+dirty`: all identical" in page


def test_the_pages_say_how_remade_records_compare():
    def remade(auc, epoch=3):
        return {"test": {"auc": auc, "logloss": 0.5}, "best_epoch": epoch,
                "reproduces": {"git_commit": "a" * 40 + "+dirty", "test": {"auc": 0.7, "logloss": 0.5},
                               "best_epoch": 3}}
    assert reproduced_label([{"test": {"auc": 0.7}}]) == ""
    assert reproduced_label([remade(0.7), {"test": {"auc": 0.7}}]).endswith(
        "1 of them re-made by `ctrbench reproduce` from records of `aaaaaaaaaaaa+dirty`: all identical (test AUC, "
        "logloss, best epoch)")
    assert reproduced_label([remade(0.7), remade(0.7012), remade(0.7, epoch=4)]).endswith(
        "1 identical, the largest test-AUC change 0.0012")


@pytest.mark.parametrize("change, reason", [
    ({"device": "cuda"}, "this torch sees no CUDA GPU"),
    ({"world_size": 2}, "re-make it under torchrun"),
])
def test_what_cannot_be_remade_here_says_why_and_fails_the_command(stored, tmp_path, capsys, change, reason,
                                                                  monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    results, paths = copy_of(stored, tmp_path)
    record = read_record(paths[0])
    changed = {**record, **change}
    changed["key"] = spec_of(record).__class__(**{**spec_of(record).__dict__, **change}).key()
    with pytest.raises(ValueError, match=reason):
        remake(changed)
    path = tmp_path / "other.json"
    write_record(path, changed)
    assert main(["reproduce", "--quiet", "--results-dir", str(results), str(path)]) == 1
    assert "cannot re-make it here" in capsys.readouterr().out


def test_replace_refuses_a_record_outside_the_results_folder(stored, tmp_path, capsys):
    results, paths = copy_of(stored, tmp_path)
    outside = tmp_path / "elsewhere.json"
    outside.write_bytes(paths[0].read_bytes())
    assert main(["reproduce", "--quiet", "--replace", "--results-dir", str(results), str(outside)]) == 1
    assert "is not there" in capsys.readouterr().out
    assert not (results / "archive").exists()


def test_a_selection_is_required_and_the_limit_positive(tmp_path, capsys):
    assert main(["reproduce", "--results-dir", str(tmp_path)]) == 2
    assert "name records, or select them" in capsys.readouterr().err
    assert main(["reproduce", "--dataset", "purchase", "--limit", "0", "--results-dir", str(tmp_path)]) == 2
    assert "--limit must be >= 1" in capsys.readouterr().err
