"""Histology → cytology (Dey et al.): per-class CycleGAN vs neural style transfer, FID/KID per class.

    python studies/histo_to_cyto.py                      # embedded data, ~12-15 min on 2 CPUs
    python studies/histo_to_cyto.py --histology /data/breakhis --cytology /data/jucyt
    python studies/histo_to_cyto.py --search             # Tune + Optuna (configs/search/histo_to_cyto.yaml), validation FID
    python studies/histo_to_cyto.py --smoke-test         # tiny end-to-end run (~1-2 min)
    mlflow ui --backend-store-uri sqlite:///mlflow.db

Rows, each against the cytology TEST split, from the same held-out histology test images:
real histology (baseline), CycleGAN G(histology), NST(histology). Writes fid_table.md/.csv and
grids/*.png to --out and logs all of it to one MLflow parent run (search trials as children).
"""

from __future__ import annotations

import sys

from cytoray.experiments.cli import run_script
from cytoray.experiments.histo_to_cyto import HistoToCytoStudy

SEARCH = "configs/search/histo_to_cyto.yaml"
SMOKE = [
    "data.size=32",
    "source.size=32",
    "data.sim_n=40",
    "source.sim_n=40",
    "generators.cyclegan.epochs=2",
    "generators.cyclegan.g_base=8",
    "generators.cyclegan.d_base=8",
    "generators.cyclegan.n_blocks=2",
    "generators.nst.steps=5",
    "run.sample_every=1",
    "tune.num_samples=2",
]


def flags(ap) -> None:
    ap.add_argument(
        "--histology",
        help="histology folder <dir>/<class>/*.png (BreakHis); default: embedded simulator",
    )
    ap.add_argument(
        "--cytology", help="cytology folder <dir>/<class>/*.png (JUCYT); same as --data"
    )
    ap.add_argument(
        "--search",
        action="store_true",
        help=f"Tune + Optuna over the translators' settings first ({SEARCH})",
    )
    ap.add_argument(
        "--allow-random-features",
        action="store_true",
        help="debugging only: let NST run on random-weight features (labelled RANDOM in every output)",
    )


def values(a) -> dict:
    v = {"source": {"root": a.histology}} if a.histology else {}
    if a.cytology:
        v["data"] = {"root": a.cytology}
    if a.search:
        v["tune"] = {"search_space": SEARCH}
    if a.allow_random_features:
        v["generators"] = {"nst": {"allow_random_features": True}}
    return v


def report(cfg, res: dict) -> None:
    print(res["table"])
    print(
        f"results in {res['out']}/ (fid_table.md, grids/); browse: mlflow ui --backend-store-uri {res['uri']}"
    )


def main(argv: list[str] | None = None) -> int:
    return run_script(
        "histo_to_cyto",
        HistoToCytoStudy(),
        argv,
        doc=__doc__,
        smoke=SMOKE,
        default_out="runs/histo_to_cyto",
        report=report,
        extra_args=flags,
        values_of=values,
    )


if __name__ == "__main__":
    sys.exit(main())
