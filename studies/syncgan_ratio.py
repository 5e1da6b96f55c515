"""Which SynCGAN settings and synthetic:real ratio help a classifier most?

    python studies/syncgan_ratio.py                                   # embedded data, 64 px, 2 CPUs, <= 15 min
    python studies/syncgan_ratio.py --smoke-test                      # ~2.5 min on 2 CPUs
    python studies/syncgan_ratio.py --resume                          # continue a killed run where it stopped
    python studies/syncgan_ratio.py --data /data/jucyt --config configs/studies/syncgan_ratio_paper.yaml --address auto
    python studies/syncgan_ratio.py --set generator.name=cyclegan --set tune.search_space=configs/search/cyclegan_ratio.yaml
    mlflow ui --backend-store-uri sqlite:///mlflow.db                 # one parent run, a child per trial

Ray Tune + Optuna (TPE, seeded) search λ, the label-smoothing ranges, the label-flip rate and
the synthetic:real ratio (configs/search/*.yaml). Each trial trains (or reuses) its generator,
scores FID/KID on validation, trains a classifier on real + synthetic images, and streams
validation metrics to ASHA. The best configuration is scored on the test split once, and its
generator and classifier are registered (`cytoray pull syncgan@champion`).
"""

from __future__ import annotations

import sys

from cytoray.experiments.cli import run_script
from cytoray.experiments.ratio import RatioStudy

SMOKE = [
    "data.sim_n=40",
    "data.size=32",
    "tune.num_samples=2",
    "tune.asha=false",
    "classifier.epochs=2",
    "fid_per_class=6",
    "generator.cgan.epochs=10",
    "generator.mask_gan.epochs=20",
    "generator.cgan.g_base=8",
    "generator.cgan.d_base=8",
    "generator.mask_gan.g_base=8",
    "generator.mask_gan.d_base=8",
]  # 20/10 GAN epochs: enough for nuclei in the grid on real cells; at 2 it is flat colour


def report(cfg, res: dict) -> None:
    print(f"\nTrials of {cfg.name} (validation {cfg.tune.metric}; best first):\n{res['table']}")
    headline = {
        k: v
        for k, v in res["test"].items()
        if "/" not in k or (k.endswith("/all") and "_std" not in k and "subset" not in k)
    }
    print(
        "\nBest configuration, test split (scored once): "
        + ", ".join(f"{k} {v:.3f}" for k, v in headline.items())
    )
    for name, r in res["registered"].items():
        state = (
            f"not champion: {r['ineligible']}"
            if r["ineligible"]
            else ("→ champion" if r["champion"] else "champion kept")
        )
        print(
            f"registered {name} v{r['version']} ({state}); champions are chosen on validation {cfg.tune.metric}"
        )
    print(
        f"{res['n_trials']} trials in {res['seconds']:.0f}s. MLflow: mlflow ui --backend-store-uri {res['uri']}"
    )


def main(
    argv: list[str] | None = None,
    config: str | None = None,
    out: str = "runs/syncgan_ratio",
    prog: str = "syncgan_ratio",
) -> int:
    return run_script(
        prog,
        RatioStudy(),
        argv,
        doc=__doc__,
        smoke=SMOKE,
        default_out=out,
        default_config=config,
        report=report,
    )


if __name__ == "__main__":
    sys.exit(main())
