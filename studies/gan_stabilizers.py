"""Which GAN stabilisers (λ, label-smoothing ranges, label-flip rate) give the most faithful SynCGAN?

    python studies/gan_stabilizers.py                 # embedded data, 64 px, 2 CPUs
    python studies/gan_stabilizers.py --smoke-test
    python studies/gan_stabilizers.py --data /data/jucyt --set data.size=256 --set run.use_gpu=true --address auto

Ray Tune + Optuna over configs/search/gan_stabilizers.yaml; each trial trains (or reuses) its
mask GANs and CGAN and reports FID/KID of images and of masks against the validation split.
The best generator's FID/KID on the test split is computed once; it is registered as
`syncgan` and becomes champion only if it beats the current one under the same split.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import syncgan_ratio  # noqa: E402  (the same study kind, the fidelity objective)

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "studies" / "gan_stabilizers.yaml")

if __name__ == "__main__":
    sys.exit(
        syncgan_ratio.main(
            sys.argv[1:], config=CONFIG, out="runs/gan_stabilizers", prog="gan_stabilizers"
        )
    )
