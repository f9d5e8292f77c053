"""Random-patch diffusion on a canvas larger than the denoiser's crop: planners and the sampler.

The sampler sees a denoiser only as a callable `(latents, t, labels, masks) → ε`, so a trained UNet and
the exact Gaussian oracle used in tests plug in the same way.
"""
