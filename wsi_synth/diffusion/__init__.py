"""Noise math only, beneath training and sampling: the schedule, forward noising, the DDIM and DPM-Solver++ steps,
classifier-free guidance. Training is `wsi_synth.training`."""
