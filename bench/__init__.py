"""ctrbench: a benchmark suite for CTR feature-interaction models and their pairwise-product
implementations. The registry lives in `ctrbench.models`, data in `ctrbench.datasets`, and the
protocol (training, evaluation, records, leaderboard, CLI) in this package."""
__version__ = "0.1.0"
