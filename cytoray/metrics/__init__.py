"""Metrics: fidelity (FID/KID), classification, segmentation (Dice/IoU)."""
