"""SynCGAN Tables 2 and 3 as one study, with uncertainty a reviewer can check.

    python studies/augmentation_baselines.py                      # embedded data, ResNet-18, 3 splits, 7 policies (39 min on 2 CPUs)
    python studies/augmentation_baselines.py --smoke-test         # minutes: tiny images, 2 splits, SmallCNN
    python studies/augmentation_baselines.py --data /data/jucyt --config configs/studies/augmentation_baselines.yaml \
        --set 'classifiers=[resnet152,densenet161,inception_v3]' --set data.size=256

Rows: classifiers; columns: policies (orig, trad, syncgan, trad+syncgan, syncgan-only, gan,
orig+gan); cells: test balanced accuracy, mean ± 95% CI over K seeded splits; every policy vs
orig by a paired test (Holm-adjusted). Writes table.md / table.csv / results.json to --out and
one MLflow parent run with a child per cell.
"""

from __future__ import annotations

import sys

from cytoray.experiments.baselines import BaselinesStudy
from cytoray.experiments.cli import run_script

SMOKE = [
    "data.sim_n=40",
    "data.size=32",
    "data.n_splits=2",
    "policies=[orig,trad,syncgan]",
    "classifiers=[smallcnn]",
    "classifier.epochs=2",
    "run.checkpoint_every=100",
    "generators.syncgan.cgan.epochs=2",
    "generators.syncgan.mask_gan.epochs=2",
    "generators.syncgan.cgan.g_base=8",
    "generators.syncgan.cgan.d_base=8",
    "generators.syncgan.mask_gan.g_base=8",
    "generators.syncgan.mask_gan.d_base=8",
    "generators.gan.epochs=2",
    "generators.gan.g_base=8",
    "generators.gan.d_base=8",
]


def report(cfg, res: dict) -> None:
    print(res["table"])
    print(
        f"\n{len(res['rows'])} classifier runs in {res['seconds']:.0f}s; table in {res['out']}/table.md"
    )
    print(f"MLflow: mlflow ui --backend-store-uri {res['uri']}")


def main(argv: list[str] | None = None) -> int:
    return run_script(
        "augmentation_baselines",
        BaselinesStudy(),
        argv,
        doc=__doc__,
        smoke=SMOKE,
        default_out="runs/augmentation_baselines",
        report=report,
    )


if __name__ == "__main__":
    sys.exit(main())
