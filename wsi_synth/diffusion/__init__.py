"""Noise math only: the schedule, forward noising, the DDIM step, classifier-free guidance."""
