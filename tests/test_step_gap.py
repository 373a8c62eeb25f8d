"""`ctrbench measure step_gap`: both throughputs for the same model, shape and batch, and their ratio."""
import json

import pytest

from ctrbench.commands.measure.step_gap import main


def test_step_gap_reports_protocol_and_bare_step_and_writes_json(tmp_path, capsys):
    out = tmp_path / "gap.json"
    assert main(["--device", "cpu", "--models", "fm,afm", "--interactions", "sum_square,afm_fused",
                 "--batches", "256,512", "--rows", "3000", "--epochs", "1", "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["kind"] == "step_gap" and result["environment"]["device"] == "cpu"
    assert [(c["batch"], c["model"], c["interaction"]) for c in result["cells"]] == [
        (batch, model, interaction) for batch in (256, 512) for model, interaction in (("fm", "sum_square"),
                                                                                      ("afm", "afm_fused"))]
    for cell in result["cells"]:
        assert cell["bare_samples_per_s"] > 0 and cell["protocol_samples_per_s"] > 0
        assert cell["bare_over_protocol"] == pytest.approx(cell["bare_samples_per_s"] / cell["protocol_samples_per_s"])
        assert len(cell["protocol_epoch_samples_per_s"]) == 1
    assert "bare/protocol" in capsys.readouterr().out


def test_step_gap_needs_one_interaction_per_model():
    with pytest.raises(SystemExit):
        main(["--device", "cpu", "--models", "fm,afm", "--interactions", "sum_square"])
