"""Metrics: fidelity (FID/KID), classification, segmentation (Dice/IoU).

Import the submodule you need (`from cytoray.metrics import fidelity`): `fidelity` loads
torch-fidelity and registers its offline Inception extractor, which a Dice computation should not pay for.
"""
