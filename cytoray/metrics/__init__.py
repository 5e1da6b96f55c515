"""Metrics: fidelity (FID/KID), classification (with power), segmentation (Dice/IoU).

Import the submodule you need (`from cytoray.metrics import fidelity`): `fidelity` loads
torch-fidelity and registers its offline Inception extractor, which a Dice computation should not pay for.
`fidelity_stats` (FID/KID on features, real-vs-real floors, the small-sample rule) and `power`
(splits / test images needed to detect a difference) are re-exported by `fidelity` and
`classification` respectively.
"""
