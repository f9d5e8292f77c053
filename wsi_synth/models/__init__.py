"""Networks (diffusers AutoencoderKL and UNet2DModel), their configurations, and the model bundle on disk."""
