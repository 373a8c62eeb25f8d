"""Measurements: deterministic costs (`costs`: FLOPs, saved bytes), timing and peak memory (`memory`), the
suite's cells (`cells`), and the stand-alone GPU measurements (`device_sweep`, `afm_gpu_step`, `step_gap`)."""
