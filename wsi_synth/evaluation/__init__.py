"""`wsi-synth evaluate`: is the synthetic data good, and does it copy training patients?

`features` turns tiles into vectors (reference TorchScript networks or an offline default), `metrics`
holds the paper's measures (improved precision/recall, FID, authenticity, C_T, seams), `inputs` reads
tiles from folders, datasets and pyramidal TIFFs, `report` writes report.json and report.html.
"""
