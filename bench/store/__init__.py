"""The results store: run records and their schema, the environment a number was measured in, and the
code identity (commit, code tree) that names the code that made it. Below training, beside the probes."""
