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


def test_auc_plot_draws_the_groups_it_is_given_best_first_and_names_their_setting(tmp_path, captured):
    groups = [("purchase", "cpu, eager; untuned; quick preset",
               {"fm": [0.70, 0.72], "afm": [0.69, 0.75], "nfm": [0.60]}),
              ("frappe", "cuda (X), eager; tuned", {"fm": [0.9]})]
    plots._auc_plot(tmp_path / "auc.png", groups)
    (first, second), = captured
    means = first.containers[0].lines[0].get_ydata()
    assert [label.get_text() for label in first.get_xticklabels()] == ["afm", "fm", "nfm"]
    assert means == pytest.approx([0.72, 0.71, 0.60])
    assert "cpu, eager; untuned; quick preset" in first.get_title() and "cuda (X)" in second.get_title()


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
