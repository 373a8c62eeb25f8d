"""Measurements: the suite's cells (`cells`, `suite_cells`) and the stand-alone measurements (`device_sweep`,
`afm_gpu_step`, `step_gap`, `embedding_scale`, `data_scale`), each with its file's reader. Their flags live in
ctrbench.commands.measure (`ctrbench measure NAME`); these modules take parsed values."""
