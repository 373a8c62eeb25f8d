"""Training and its records: one train step and the fit loop (`train`), the multi-seed protocol and its
run key (`protocol`), the JSON records (`records`), the environment a record carries (`environment`), and
torchrun data parallelism (`distributed`)."""
