"""The `wsi-synth` command line: a thin click layer over `wsi_synth` (one module per command)."""
