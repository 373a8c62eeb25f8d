"""MovieLens-1M's ratings joined with users and movies (the columns of DeepCTR's 200-row sample)."""
from .download import RemoteFile
from .public_tables import register_table
from .tabular import movielens_spec

load_movielens = register_table(
    "movielens", movielens_spec, files=("movielens.csv", "movielens_sample.txt"), min_count=1,
    sources=[RemoteFile("https://files.grouplens.org/datasets/movielens/ml-1m.zip", "movielens.csv")])
