"""Which refiner settings give the best nucleus segmenter on real H&E, trained without a single annotated nucleus?

    python studies/refined_segmentation.py --smoke-test                # embedded H&E simulator, 2 CPUs: 2.5 min measured
    python studies/refined_segmentation.py                             # embedded simulator as "real", <= 30 min
    python studies/refined_segmentation.py --data /data/brecahad_he    # <root>/images + <root>/masks (BreCaHAD's layout): 12 min on 2 CPUs
    python studies/refined_segmentation.py --data DIR --reference UNLABELLED_DIR --set data.scale=0.5
    python studies/refined_segmentation.py --resume                    # continue a killed run where it stopped
    cytoray segment nucleus-segmenter@champion MY_TILES/ --out MY_MASKS/
    mlflow ui --backend-store-uri sqlite:///mlflow.db                  # one parent run, a child per trial

Hou et al. (CVPR 2019): initial images drawn with textures of the (unlabelled) training tiles,
a style-conditioned refiner GAN, and a U-Net segmenter trained on the refined images with their
exact masks, with hard examples and realism weights. Ray Tune + Optuna search the refiner's
loss weights, the hard-example weight and the weight clip range (configs/search/); the
objective is Dice on the real validation tiles. The best segmenter and refiner are registered
(`nucleus-segmenter`, `refiner`); then every method of the comparison table (Otsu floor,
SynCGAN's unsupervised masks, raw, refined, refined + hard examples) is scored on the test tiles
of `data.n_splits` seeded splits: mean ± 95% CI and paired tests (results/comparison.md).
"""

from __future__ import annotations

import sys

from cytoray.experiments.cli import run_script
from cytoray.experiments.segmentation import SegmentationStudy

SMOKE = [
    "data.sim_n=16",
    "data.tile=64",
    "data.n_splits=2",
    "tune.num_samples=1",
    "generator.pool=32",
    "generator.holdout=8",
    "generator.schedule.discriminator_epochs=1",
    "generator.schedule.joint_epochs=1",
    "generator.schedule.segmenter_epochs=1",
]


def extra_args(ap) -> None:
    ap.add_argument(
        "--reference",
        default=None,
        help="unlabelled H&E folder for the style and textures (default: the training split)",
    )


def report(cfg, res: dict) -> None:
    print(
        f"\nBest setting (validation Dice {res['val_dice']:.3f}); its segmenter on split 0's test tiles (scored once): "
        f"Dice {res['test']['test_dice']:.3f}"
    )
    for name, r in res["registered"].items():
        state = (
            f"not champion: {r['ineligible']}"
            if r["ineligible"]
            else ("→ champion" if r["champion"] else "champion kept")
        )
        print(
            f"registered {name} v{r['version']} ({state}); champions are chosen on validation Dice"
        )
    if res["table"]:
        print("\n" + res["table"])
    print(
        f"{res['n_trials']} trials in {res['seconds']:.0f}s; results in {res['out']}. MLflow: mlflow ui --backend-store-uri {res['uri']}"
    )


def main(
    argv: list[str] | None = None,
    config: str | None = "configs/studies/refined_segmentation.yaml",
    out: str = "runs/refined_segmentation",
    prog: str = "refined_segmentation",
) -> int:
    return run_script(
        prog,
        SegmentationStudy(),
        argv,
        doc=__doc__,
        smoke=SMOKE,
        default_out=out,
        default_config=config,
        report=report,
        extra_args=extra_args,
        values_of=lambda a: {"data": {"reference": a.reference}} if a.reference else {},
    )


if __name__ == "__main__":
    sys.exit(main())
