"""Model studies: what a model makes, measured against real data it never trained on."""
