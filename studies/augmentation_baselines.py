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

import argparse
import sys
from pathlib import Path

SMOKE = [
    "data.sim_n=40", "data.size=32", "data.n_splits=2", "policies=[orig,trad,syncgan]",
    "classifiers=[smallcnn]", "classifier.epochs=2", "cgan.epochs=2", "mask_gan.epochs=2", "gan.epochs=2",
    "cgan.g_base=8", "cgan.d_base=8", "mask_gan.g_base=8", "mask_gan.d_base=8", "gan.g_base=8", "gan.d_base=8",
    "run.checkpoint_every=100",
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="folder dataset <root>/<class>/*.png (default: embedded simulator)")
    ap.add_argument("--config", help="YAML study config (configs/studies/augmentation_baselines.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    ap.add_argument("--out", default="runs/augmentation_baselines")
    ap.add_argument("--tracking-uri", default=None, help="MLflow URI (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    ap.add_argument("--address", default=None, help="Ray cluster address (auto joins a running cluster)")
    ap.add_argument("--smoke-test", action="store_true", help="a minimal run: tiny data, 2 splits, 2 epochs")
    a = ap.parse_args(argv)

    from cytoray.classify.baselines import BaselinesConfig, run_baselines
    from cytoray.config import load
    from cytoray.errors import CytorayError

    try:
        sets = (SMOKE if a.smoke_test else []) + ([f"data.root={a.data}"] if a.data else []) + a.set
        cfg = load(BaselinesConfig, a.config, sets)
        res = run_baselines(cfg, Path(a.out), a.tracking_uri, a.address)
    except CytorayError as e:
        print(f"augmentation_baselines: error: {e}", file=sys.stderr)
        return 2
    print(res["table"])
    print(f"\n{len(res['rows'])} classifier runs in {res['seconds']:.0f}s; table in {a.out}/table.md")
    print(f"MLflow: mlflow ui --backend-store-uri {res['uri']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
