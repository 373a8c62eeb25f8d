"""Options as a user types them on the command line: lists with or without brackets and quotes."""
import pytest

from ctrbench.commands.values import key_value, parse_value
from ctrbench.datasets import load


@pytest.mark.parametrize("typed, expected", [
    ("64", 64), ("1e-3", 1e-3), ("true", True), ("[64,32]", [64, 32]), ("[64, 32]", [64, 32]),
    ('["brand", "origin"]', ["brand", "origin"]), ("[brand,origin]", ["brand", "origin"]), ("[]", []),
    ("user_id,item_id", "user_id,item_id"), ("path/to/file.csv", "path/to/file.csv")])
def test_values_parse_as_typed(typed, expected):
    assert parse_value(typed) == expected


@pytest.fixture
def clicks(tmp_path):
    path = tmp_path / "clicks.csv"
    rows = ["user_id,item_id,price,click"] + [f"u{i % 7},i{i % 5},{i % 3},{int(i % 4 == 0)}" for i in range(60)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("typed", ["categorical=user_id,item_id", "categorical=[user_id,item_id]",
                                   'categorical=["user_id","item_id"]', "categorical=[user_id, item_id]"])
def test_every_form_of_a_list_option_names_the_columns(clicks, tmp_path, typed):
    name, value = key_value(typed)
    dataset = load("csv", path=str(clicks), label="click", cache_dir=tmp_path / "cache", **{name: value})
    assert list(dataset.field_names) == ["user_id", "item_id"]


def test_one_column_without_brackets_is_a_list_of_one(clicks, tmp_path):
    dataset = load("csv", path=str(clicks), label="click", cache_dir=tmp_path / "cache",
                   **dict([key_value("categorical=user_id"), key_value("numeric=price")]))
    assert sorted(dataset.field_names) == ["price", "user_id"]          # numeric fields come first


def test_an_unknown_column_is_still_named_whole(clicks, tmp_path):
    with pytest.raises(ValueError, match=r"columns \['user'\] are not in the header"):
        load("csv", path=str(clicks), label="click", cache_dir=tmp_path / "cache", categorical="user")


def test_a_new_dataset_is_one_registration(monkeypatch, tmp_path):
    from ctrbench.datasets import registry
    from ctrbench.datasets.purchase import load_purchase
    monkeypatch.setattr(registry, "_DATASETS", dict(registry._DATASETS))

    @registry.register_dataset("tiny_purchase")
    def load_tiny(data_dir=None, seed: int = 0, planted: list = ((2, 8, 0.75),)):
        """A small purchase log."""
        return load_purchase(seed=seed, rows=500, planted=planted)
    assert "tiny_purchase" in registry.list_datasets() and registry.list_options("tiny_purchase") == {"planted"}
    assert load("tiny_purchase").num_fields == 10
    with pytest.raises(ValueError, match="already registered"):
        registry.register_dataset("tiny_purchase")(load_tiny)
    from ctrbench.datasets import download
    with pytest.raises(ValueError, match="no download for 'tiny_purchase'; downloadable: .*frappe"):
        download("tiny_purchase", data_dir=tmp_path)
