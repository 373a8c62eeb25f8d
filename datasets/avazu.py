"""Avazu's mobile-ads log (Kaggle `train`, or the 100-row sample DeepCTR ships); behind a login, so fetched
by hand."""
from .public_tables import register_table
from .tabular import avazu_spec

load_avazu = register_table(
    "avazu", avazu_spec, files=("train", "train.csv", "train.gz", "train.csv.gz", "avazu_sample.txt"), min_count=5,
    manual="Avazu is behind a Kaggle login: download train.gz from https://www.kaggle.com/c/avazu-ctr-prediction/data "
           "and put it in {folder}/ (gzip is read as is).")
