"""The README's figures are the records' own: its summary block equals what the committed records give."""
import shutil
import subprocess
from pathlib import Path

import pytest

from ctrbench.report.leaderboard import readme_summary, summary_lines

REPO = Path(__file__).resolve().parent.parent


def committed_results(target: Path) -> Path:
    """A copy of the results files git tracks (a user's own new runs do not change the README's figures)."""
    listing = subprocess.run(["git", "ls-files", "-z", "--", "results"], cwd=REPO, capture_output=True, text=True)
    if listing.returncode != 0 or not listing.stdout:
        pytest.skip("not a git checkout: the committed results cannot be told from a user's own")
    for name in filter(None, listing.stdout.split("\0")):
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    return target / "results"


def test_the_readme_summary_is_what_the_committed_records_say(tmp_path):
    expected = summary_lines(committed_results(tmp_path))
    assert readme_summary((REPO / "README.md").read_text()) == expected, (
        "README.md's summary block is stale: run `ctrbench leaderboard --readme README.md` and commit it")


def test_a_readme_without_the_block_is_a_clear_error():
    with pytest.raises(ValueError, match="no summary block"):
        readme_summary("# a readme\n")
