"""The leaderboard's figures: what each one draws, read back from the matplotlib calls."""
import matplotlib.pyplot as plt
import pytest

from ctrbench.report import plots


@pytest.fixture
def captured(monkeypatch):
    """The Axes each plot drew on, instead of a file."""
    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(fig.axes) or path)
    yield drawn
    plt.close("all")


def run(model, auc, device="cpu", patience=10):
    return {"kind": "run", "dataset": "purchase", "model": model, "test": {"auc": auc},
            "device": device, "config": {"patience": patience}}


def group_of(record):
    key = (record["device"], record["config"]["patience"])
    return key, f"{record['device']}, patience={record['config']['patience']}"


def test_auc_plot_draws_one_comparable_group_never_a_pool_of_settings(tmp_path, captured):
    records = [run("fm", 0.70), run("fm", 0.72), run("afm", 0.69), run("afm", 0.71),
               run("fm", 0.10, device="cuda"), run("fm", 0.20, patience=3)]
    plots._auc_plot(tmp_path / "auc.png", records, group_of)
    (ax,), = captured
    means = ax.containers[0].lines[0].get_ydata()
    assert list(ax.get_xticklabels()[k].get_text() for k in range(2)) == ["afm", "fm"]
    assert means == pytest.approx([0.70, 0.71])          # the cpu/patience-10 runs alone
    assert "cpu, patience=10" in ax.get_title()


def test_coinciding_lines_stay_visible_and_are_named(tmp_path, captured):
    series = {"afm_fused": [(10, 1.0), (39, 2.0)], "afm_triton": [(10, 1.0), (39, 2.0)],
              "triu_index": [(10, 5.0), (39, 9.0)]}
    plots._line_plot(tmp_path / "m.png", series, "t", "MiB")
    (ax,), = captured
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["afm_fused", "afm_triton (= afm_fused)", "triu_index"]
    styles = {(line.get_marker(), line.get_linestyle()) for line in lines}
    assert len(styles) == 3
    assert lines[1].get_markersize() < lines[0].get_markersize() or lines[1].get_linestyle() != "-"
