"""Probes: what one measurement reads off the machine (time, resident memory, CUDA peak, FLOPs and bytes,
the device to run on). Below training; they know models, never the protocol."""
