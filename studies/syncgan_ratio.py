"""Which SynCGAN settings and synthetic:real ratio help a classifier most?

    python studies/syncgan_ratio.py                                   # embedded data, 64 px, 2 CPUs, <= 15 min
    python studies/syncgan_ratio.py --smoke-test                      # <= 3 min
    python studies/syncgan_ratio.py --resume                          # continue a killed run where it stopped
    python studies/syncgan_ratio.py --data /data/jucyt --config configs/studies/syncgan_ratio_paper.yaml --address auto
    mlflow ui --backend-store-uri sqlite:///mlflow.db                 # one parent run, a child per trial

Ray Tune + Optuna (TPE, seeded) search λ, the label-smoothing ranges, the label-flip rate and
the synthetic:real ratio (configs/search/*.yaml). Each trial trains (or reuses) its SynCGAN,
scores FID/KID on validation, trains a classifier on real + synthetic images, and streams
validation metrics to ASHA. The best configuration is scored on the test split once, and its
generator and classifier are registered (`cytoray pull syncgan@champion`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SMOKE = [
    "data.sim_n=40", "data.size=32", "tune.num_samples=2", "tune.asha=false",
    "cgan.epochs=2", "mask_gan.epochs=2", "cgan.g_base=8", "cgan.d_base=8", "mask_gan.g_base=8", "mask_gan.d_base=8",
    "classifier.epochs=2", "fid_per_class=6",
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="folder dataset <root>/<class>/*.png (default: embedded simulator)")
    ap.add_argument("--config", help="YAML study config (default: configs/studies/syncgan_ratio.yaml values)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    ap.add_argument("--out", default="runs/syncgan_ratio", help="study folder (split, caches, Tune state, tables)")
    ap.add_argument("--tracking-uri", default=None, help="MLflow URI (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    ap.add_argument("--address", default=None, help="Ray cluster to join ('auto' or host:port; default RAY_ADDRESS or local)")
    ap.add_argument("--resume", action="store_true", help="continue the study in --out (finished trials are kept)")
    ap.add_argument("--no-cache", action="store_true", help="retrain every stage (to measure what the stage cache saves)")
    ap.add_argument("--smoke-test", action="store_true", help="a minimal run: 32 px, 40 images, 2 trials, 2 epochs")
    a = ap.parse_args(argv)

    from cytoray.config import load
    from cytoray.distributed.study import RatioStudyConfig
    from cytoray.distributed.study_driver import run_study
    from cytoray.errors import CytorayError

    try:
        sets = (SMOKE if a.smoke_test else []) + ([f"data.root={a.data}"] if a.data else []) + a.set
        cfg = load(RatioStudyConfig, a.config, sets)
        res = run_study(cfg, Path(a.out), tracking_uri=a.tracking_uri, address=a.address, resume=a.resume, use_cache=not a.no_cache)
    except CytorayError as e:
        print(f"syncgan_ratio: error: {e}", file=sys.stderr)
        return 2
    print(f"\nTrials of {cfg.name} (validation {cfg.tune.metric}; best first):\n{res['table']}")
    headline = {k: v for k, v in res["test"].items() if "/" not in k or (k.endswith("/all") and "_std" not in k and "subset" not in k)}
    print("\nBest configuration, test split (scored once): " + ", ".join(f"{k} {v:.3f}" for k, v in headline.items()))
    for name, r in res["registered"].items():
        print(f"registered {name} v{r['version']}" + (" → champion" if r["champion"] else " (champion kept)"))
    print(f"{res['n_trials']} trials in {res['seconds']:.0f}s. MLflow: mlflow ui --backend-store-uri {res['uri']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
