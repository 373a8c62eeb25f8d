"""Named training presets, read by every command from one place, and the architectures a preset gives models."""
import json

import pytest

from ctrbench.commands import build_parser, main
from ctrbench.models import registry
from ctrbench.models.registry import preset_hparams
from ctrbench.training.train import PRESETS, preset_config


def test_each_command_takes_its_defaults_from_a_named_preset():
    parser = build_parser()
    for command, preset in (("run", "quick"), ("tune", "bars-budget"), ("attention", "attention")):
        extra = ["--models", "fm", "--trials", "1"] if command == "tune" else []
        args = parser.parse_args([command, *extra])
        assert args.preset == preset and args.batch_size is None     # None: the preset fills it
    assert preset_config("bars").plateau_lr_factor == 0.1 and preset_config("bars-budget").plateau_lr_factor is None
    assert set(PRESETS) >= {"article", "quick", "bars-budget", "bars", "attention", "suite"}


def test_bars_gives_each_model_its_architecture_and_set_overrides_it(tmp_path):
    assert preset_hparams("nfm", "bars") == {"embed_dim": 10, "hidden": (400, 400, 400), "dropout": 0.4}
    assert preset_hparams("nfm", "quick") == {}
    assert main(["run", "--preset", "bars", "--models", "fm,deepfm", "--set", "dropout=0.3", "--data-option",
                 "rows=2000", "--max-epochs", "1", "--seeds", "1", "--threads", "1", "--quiet",
                 "--results-dir", str(tmp_path)]) == 0
    records = {json.loads(p.read_text())["model"]: json.loads(p.read_text())
               for p in (tmp_path / "runs" / "purchase").glob("*.json")}
    assert records["fm"]["hparams"] == {"embed_dim": 10}
    assert records["deepfm"]["hparams"] == {"embed_dim": 10, "hidden": [400, 400, 400], "dropout": 0.3}
    assert records["deepfm"]["config"]["plateau_lr_factor"] == 0.1


def test_a_preset_naming_no_hyper_parameter_is_refused(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))

    class Tiny:
        def __init__(self, field_dims, interaction="triu_index", embed_dim: int = 4):
            pass
    with pytest.raises(ValueError, match=r"preset 'bars' sets \['width'\]"):
        registry.register_model("tiny", accepts={registry.PAIRS}, hparams={"embed_dim": "size"},
                                presets={"bars": {"width": 3}})(Tiny)
