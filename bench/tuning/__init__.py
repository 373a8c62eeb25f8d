"""`ctrbench tune`: Optuna studies over each model's declared search space, stored in a relational
database (SQLite by default, PostgreSQL for many workers), and the re-runs of their best configurations."""
