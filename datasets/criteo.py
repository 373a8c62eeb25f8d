"""Criteo's display-ads log (Kaggle `train.txt`, tab-separated, or the 200-row CSV sample DeepCTR ships):
13 integer fields bucketed ⌊ln(x)²⌋ and 26 categoricals."""
from .download import RemoteFile
from .public_tables import register_table
from .tabular import criteo_spec

load_criteo = register_table(
    "criteo", criteo_spec, files=("train.txt", "train.txt.gz", "criteo_sample.txt"), min_count=10,
    sources=[RemoteFile("https://go.criteo.net/criteo-research-kaggle-display-advertising-challenge-dataset.tar.gz",
                        "train.txt")])
