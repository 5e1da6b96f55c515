"""Generators side by side on a real cytology folder: KID on held-out real cells, with floors.

    python benchmarks/generators_real.py --cyto ../shared/data/herlev_dev --out /tmp/generators_real

One seeded 3:1:1 split of the folder. Every variant trains on the training split only, under
Ray Train (the stage cache shares identical stages between variants), and is scored per class
by KID of n synthetic images against the real images it never saw (validation + test), beside:
  kid_floor        two halves of that held-out real class (what sampling alone scores)
  kid_other_class  the other real class's held-out images against this class's: a synthetic set
                   above it is further from its class than real cells of the other class are
Variants (each adds one thing to the one before; `--variants` picks):
  paper        SynCGAN as published: binary nucleus masks, λ·MSE (λ = 100), best validation G
               loss, no augmentation of D's inputs, the last weights
  small_data   + DiffAugment (colour, translation, cutout, dihedral) on D's inputs, EMA of G
  labels       + glass/cytoplasm/nucleus label maps painted with region colours
  loss         + L1 at λ = 10 and the last EMA weights
  sharp        + a full-resolution path with per-pixel noise in the CGAN's UNet (nets/unet.py)
  bank         + `prior: bank`: no class mask GAN; each map is one of the class's training maps under
               a random symmetry, rotation, scale and elastic warp (masks/warp.py); the CGAN is
               `sharp`'s (shared through the stage cache): cytoray's shipped defaults
  kid          + `cgan.select: kid`: the CGAN keeps the epoch (of every 5th and the last) whose cells
               are closest to the training cells by KID, instead of the last
  turned       `bank` with each CGAN training pair (condition, image) under one random flip/quarter
               turn (cgan.augment: dihedral): what the pair symmetry is worth
  restarts     `bank` trained 4 times from 4 seeds (cgan.restarts: 4), keeping the CGAN whose cells
               are nearest the training cells by KID (training cells only: the held-out ones stay unseen)
  turned_restarts  the same with `turned`'s CGAN
  gan          the vanilla RGB GAN per class with the small-data pieces (control)
  diffusion    the mask-conditioned diffusion generator (generators/diffusion.py) on the same label maps,
               its maps drawn as `bank`'s (the class's training maps warped; its `prior`, shipped default)
`--filter realism|centroid|classifier --keep K` also scores each variant behind cytoray's synthetic-
sample filter (classify/filter.py, the stage the studies put between generator and classifier): n / K
images drawn per class, ranked against the class's TRAINING cells (never the held-out ones), the best n
scored as above, under the variant's `filtered` key beside its unfiltered figures, with a grid
<out>/grid_<variant>_filtered.png.
It writes <out>/generators_real.json (per variant and class: kid, kid_sd, kid_floor,
kid_other_class, precision/recall/density/coverage with their real-vs-real values, memorised share;
train_seconds, sample_seconds; `default`: the variant the shipped defaults train) and one grid
per variant, <out>/grid_<variant>.png: per class, a row of real held-out cells, a row of synthetic
cells and a row of the label maps (or masks) that made them. `kid` is the mean over `--draws` draws
of n per class (each draw's in `kid_draws`); the other figures and the grid are the first draw's.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cytoray.classify.filter import METHODS, FilterConfig, FilteredSampler  # noqa: E402
from cytoray.config import ConfigError  # noqa: E402
from cytoray.masks.labels import WHITES  # noqa: E402

VARIANTS = (
    "paper",
    "small_data",
    "labels",
    "loss",
    "sharp",
    "bank",
    "kid",
    "turned",
    "restarts",
    "turned_restarts",
    "gan",
    "diffusion",
)
DEFAULT = "bank"  # the variant whose settings are SynCGANConfig()'s
# configs/models/syncgan_real.yaml's CGAN (at --width 64 --cgan-epochs 80): the best on herlev_dev
REAL = "turned_restarts"


def variant_config(name: str, a: argparse.Namespace):
    """The generator config of one variant at the benchmark's epochs and widths."""
    from cytoray.generators.gan import CGANConfig, LatentGANConfig
    from cytoray.generators.syncgan import SynCGANConfig
    from cytoray.generators.vanilla import GANConfig
    from cytoray.masks.config import MasksConfig

    width = dict(g_base=a.width, d_base=a.width) if a.width else {}  # 0: each config's own widths
    if name == "gan":
        return GANConfig(epochs=a.gan_epochs, **width)
    if name == "diffusion":
        from cytoray.generators.diffusion import DenoiserConfig, DiffusionConfig

        return DiffusionConfig(
            mask_gan=LatentGANConfig(epochs=a.mask_epochs, **width),
            denoiser=DenoiserConfig(epochs=a.diffusion_epochs),
        )
    off = dict(diffaug="", ema=0.0)
    unet = dict(full_res=0, noise=0)  # pix2pix's UNet
    paper = dict(recon="mse", lam=100.0, select="val_loss", **unet)
    cgan = {
        "paper": {**paper, **off, "augment": "none"},
        "small_data": {**paper, "select": "last"},
        "labels": {**paper, "select": "last"},
        "loss": unet,
        "sharp": {},
        "bank": {},
        "kid": {"select": "kid"},
        "turned": {"augment": "dihedral"},
        "restarts": {"restarts": 4},
        "turned_restarts": {"augment": "dihedral", "restarts": 4},
    }[name]
    mask_gan = off if name == "paper" else {}
    labels = "nucleus" if name in ("paper", "small_data") else "cell"
    cfg = SynCGANConfig(
        masks=MasksConfig(labels=labels, white=a.white),
        mask_gan=LatentGANConfig(epochs=a.mask_epochs, **width, **mask_gan),
        cgan=CGANConfig(epochs=a.cgan_epochs, crop=a.crop, **width, **cgan),
        prior="bank" if name in ("bank", "kid", "turned", "restarts", "turned_restarts") else "gan",
    )
    if name == REAL and a.width == 64 and a.cgan_epochs == 80 and not a.crop:  # the preset's CGAN
        from cytoray.config import load

        assert cfg.cgan == load(SynCGANConfig, ROOT / "configs/models/syncgan_real.yaml").cgan
    if name == DEFAULT:  # the shipped defaults, at the benchmark's epochs, widths and crop only
        ref = SynCGANConfig()
        assert (
            dataclasses.replace(
                cfg.cgan,
                epochs=ref.cgan.epochs,
                g_base=ref.cgan.g_base,
                d_base=ref.cgan.d_base,
                crop=ref.cgan.crop,
            )
            == ref.cgan
        )
        assert dataclasses.replace(cfg.masks, white=ref.masks.white) == ref.masks
        assert cfg.prior == ref.prior and cfg.warp == ref.warp
    return cfg


def held_out(ds, man) -> dict:
    idx = np.concatenate([man.indices("val"), man.indices("test")])
    sub = ds.subset(idx)
    return {c: sub.images[sub.labels == i] for i, c in enumerate(sub.class_names)}


def kid_row(f_fake, f_real, f_other, seed: int) -> dict:
    from cytoray.metrics.fidelity import fid_kid_from_features
    from cytoray.metrics.fidelity_stats import real_floor

    r = fid_kid_from_features(f_fake, f_real, seed=seed)
    other = fid_kid_from_features(f_other, f_real, seed=seed)
    floor = real_floor(f_real, seed=seed) or {}
    return {
        "kid": r["kid_mean"],
        "kid_sd": r["kid_std"],
        "fid": r["fid"],
        "kid_floor": floor.get("kid_floor_mean", float("nan")),
        "kid_other_class": other["kid_mean"],
        "n_fake": r["n1"],
        "n_real": r["n2"],
    }


def realism_row(m: dict, c: str) -> dict:
    """Precision / recall / density / coverage (with real-vs-real values) and the memorised share."""
    from cytoray.metrics.realism import names

    n = names("test")
    out = {}
    for key in ("precision", "recall", "density", "coverage", "memorised"):
        if key in n and n[key].format(c=c) in m:
            out[key] = m[n[key].format(c=c)]
            floor = n.get(f"{key}_floor")
            if floor and floor.format(c=c) in m:
                out[f"{key}_real"] = m[floor.format(c=c)]
    return out


def grid(real: dict, fake: dict, maps: dict, n: int = 8) -> np.ndarray:
    from cytoray.masks.labels import PALETTE

    rows = []
    for c in real:
        rows.append(np.concatenate(list(real[c][:n]), 1))
        rows.append(np.concatenate(list(fake[c][:n]), 1))
        if maps.get(c) is not None:
            m = maps[c][:n]
            pic = (
                PALETTE[m]
                if m.dtype == np.uint8
                else np.repeat((m[..., None] * 255).astype(np.uint8), 3, -1)
            )
            rows.append(np.concatenate(list(pic), 1))
    w = max(r.shape[1] for r in rows)
    return np.concatenate(
        [np.pad(r, ((0, 2), (0, w - r.shape[1]), (0, 0)), constant_values=255) for r in rows], 0
    )


ARITH = {"auto": {}, "fp32": {"cpu_bf16": False, "channels_last": False}}


class MapSampler:
    """A trained generator's `sample(n, cls, seed)` returning (images, label maps or None), the
    shape `classify.filter.FilteredSampler` passes through."""

    def __init__(self, gen) -> None:
        self.gen = gen

    def sample(self, n: int, cls: str, seed: int = 0):
        if hasattr(self.gen, "sample_maps"):
            return self.gen.sample_maps(n, cls, seed=seed)
        return self.gen.sample(n, cls, seed=seed), None


def draw(sampler, classes: list, n: int, seed: int = 1) -> tuple[dict, dict]:
    """n images per class (draw 1 is seed 1, as every variant) and the maps that made them."""
    fake, maps = {}, {}
    for c in classes:
        fake[c], maps[c] = sampler.sample(n, c, seed=seed)
    return fake, maps


def score(fake: dict, f_real: dict, f_train: dict, seed: int) -> dict:
    """Per class: KID with its floor and other-class distance, then precision / recall / density /
    coverage and the memorised share, of the synthetic images against the held-out cells."""
    from cytoray.metrics import realism
    from cytoray.metrics.fidelity import inception_features

    classes = list(f_real)
    f_fake = {c: inception_features(fake[c]) for c in classes}
    realism_metrics, _ = realism.per_class(f_real, f_fake, "test", f_train, seed=seed)
    out = {}
    for c in classes:
        other = next(o for o in classes if o != c)
        out[c] = kid_row(f_fake[c], f_real[c], f_real[other], seed)
        out[c].update(realism_row(realism_metrics, c))
    return out


def score_draws(sampler, classes: list, n: int, draws: int, f_real, f_train, seed: int, first=None):
    """`draws` independent draws of n images per class (sampling seeds 1, 2, ...): everything of
    `score` on the first, and per class `kid` as the mean over the draws, `kid_draws` each draw's
    KID and `kid_draw_sd` their spread (one draw of 90 cells moves KID by about as much as its own
    subset spread `kid_sd`, which is the first draw's; `first`: draw 1 if already drawn). Returns
    (row, images and maps of draw 1)."""
    from cytoray.metrics.fidelity import fid_kid_from_features, inception_features

    fake, maps = first if first is not None else draw(sampler, classes, n, seed=1)
    row = score(fake, f_real, f_train, seed)
    for c in classes:
        kids = [row[c]["kid"]]
        for d in range(2, draws + 1):
            more, _ = sampler.sample(n, c, seed=d)
            kids.append(
                fid_kid_from_features(inception_features(more), f_real[c], seed=seed)["kid_mean"]
            )
        row[c].update(kid=float(np.mean(kids)), kid_draws=kids, kid_draw_sd=float(np.std(kids)))
    return row, fake, maps


def kid_line(row: dict, classes: list) -> str:
    return "  ".join(
        f"{c}: KID {row[c]['kid']:.4f} ± {row[c]['kid_sd']:.4f} "
        f"(draws {', '.join(f'{k:.4f}' for k in row[c]['kid_draws'])}; floor {row[c]['kid_floor']:.4f}, "
        f"other class {row[c]['kid_other_class']:.4f})"
        for c in classes
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--cyto", type=Path, required=True, help="real cytology folder <dir>/<class>/*.jpg"
    )
    ap.add_argument(
        "--out", type=Path, required=True, help="results folder (outside the repository)"
    )
    ap.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, from {', '.join(VARIANTS)}",
    )
    ap.add_argument(
        "--size", type=int, default=128, help="image side (128 shows a cell; 64 for quick looks)"
    )
    ap.add_argument("--mask-epochs", type=int, default=60, help="class mask GAN epochs")
    ap.add_argument("--cgan-epochs", type=int, default=40, help="CGAN epochs")
    ap.add_argument("--gan-epochs", type=int, default=60, help="vanilla GAN epochs")
    ap.add_argument("--diffusion-epochs", type=int, default=300, help="diffusion denoiser epochs")
    ap.add_argument(
        "--width",
        type=int,
        default=0,
        help="g_base and d_base of every network (0: each config's own defaults)",
    )
    ap.add_argument(
        "--crop",
        type=int,
        default=0,
        help="cgan.crop of the SynCGAN variants: train the CGAN on random crops of this side and "
        "draw whole images (a step costs (crop/size)^2 of a whole one); 0 = whole images",
    )
    ap.add_argument(
        "--white",
        choices=WHITES,
        default="absolute",
        help="masks.white of the SynCGAN variants: label maps against 255 or the training set's own "
        "white level",
    )
    ap.add_argument("--n", type=int, default=90, help="synthetic images per class for KID")
    ap.add_argument(
        "--draws",
        type=int,
        default=3,
        help="independent draws of --n images per class; `kid` is their mean (figures dated before "
        "2026-12-07 18:00 are one draw, sampling seed 1: the first of these)",
    )
    ap.add_argument(
        "--filter",
        choices=METHODS,
        default="none",
        help="also score each variant behind cytoray's synthetic-sample filter (filter.method): "
        "n / --keep drawn per class, the n nearest the TRAINING cells kept; reported beside the "
        "unfiltered figures, under `filtered`",
    )
    ap.add_argument(
        "--keep", type=float, default=0.5, help="filter.keep: the share of drawn images kept"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cpus", type=int, default=2, help="CPU threads of the training job")
    ap.add_argument(
        "--arith",
        choices=("auto", "fp32"),
        default="auto",
        help="run.cpu_bf16 / run.channels_last: the defaults (auto) or float32 NCHW (the stage cache does "
        "not tell them apart: give each its own --out)",
    )
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    from cytoray.config import DataConfig
    from cytoray.data.source import load_split
    from cytoray.generators.base import get_generator
    from cytoray.io import save_png, write_json
    from cytoray.metrics.fidelity import inception_features
    from cytoray.quiet import configure
    from cytoray.training.config import RunConfig

    # the training jobs' epoch lines are the progress of a run that takes 20-30 min (as `cytoray train`)
    configure(verbose=a.verbose, worker_output=True)
    if a.draws < 1:
        ap.error(f"--draws {a.draws}: give at least 1")
    fcfg = FilterConfig(method=a.filter, keep=a.keep)
    try:
        fcfg.validate()
    except ConfigError as e:
        ap.error(str(e))
    names = [v.strip() for v in a.variants.split(",") if v.strip()]
    if bad := [v for v in names if v not in VARIANTS]:
        ap.error(f"--variants: unknown {', '.join(bad)}; valid: {', '.join(VARIANTS)}")
    if a.out.resolve().is_relative_to(ROOT):
        ap.error(
            f"--out {a.out} is inside the repository; write results elsewhere (e.g. /tmp/generators_real)"
        )
    a.out.mkdir(parents=True, exist_ok=True)
    ds, man = load_split(
        DataConfig(root=str(a.cyto), size=a.size, split_seed=a.seed), a.out / "split.json"
    )
    train, val = ds.subset(man.indices("train")), ds.subset(man.indices("val"))
    real = held_out(ds, man)
    classes = list(real)
    f_real = {c: inception_features(x) for c, x in real.items()}
    f_train = {
        c: inception_features(train.images[train.labels == i])
        for i, c in enumerate(train.class_names)
    }
    report: dict = {
        "data": str(a.cyto),
        "size": a.size,
        "n_train": len(train),
        "n_held_out": {c: len(x) for c, x in real.items()},
        "epochs": {
            "mask_gan": a.mask_epochs,
            "cgan": a.cgan_epochs,
            "gan": a.gan_epochs,
            "diffusion": a.diffusion_epochs,
        },
        "width": a.width,
        "white": a.white,
        "crop": a.crop,
        "default": DEFAULT,
        "variants": {},
    }
    for name in names:
        cfg = variant_config(name, a)
        gen_cls = get_generator(cfg.name)
        t0 = time.perf_counter()
        bundle, _ = gen_cls.train(
            train,
            val,
            cfg,
            a.out / "bundles" / name,
            a.out / "cache",
            man.hash,
            RunConfig(seed=a.seed, cpus_per_worker=a.cpus, **ARITH[a.arith]),
        )
        seconds = time.perf_counter() - t0
        sampler = MapSampler(gen_cls.load(bundle))
        t1 = time.perf_counter()
        first = draw(sampler, classes, a.n)
        # the n images of every class drawn once (before 2026-12-07 this timed the metrics instead)
        row = {
            "train_seconds": round(seconds, 1),
            "sample_seconds": round(time.perf_counter() - t1, 1),
        }
        scored, fake, maps = score_draws(
            sampler, classes, a.n, a.draws, f_real, f_train, a.seed, first
        )
        row.update(scored)
        save_png(a.out / f"grid_{name}.png", grid(real, fake, maps))
        print(f"[{name}] {seconds:.0f} s  " + kid_line(row, classes), flush=True)
        if fcfg.active:
            # the same generator with cytoray's filter stage in front (classify/filter.py): drawn
            # n / keep per class, ranked against the TRAINING cells' features, the best n scored
            fs = FilteredSampler(sampler, fcfg, f_train, seed=a.seed)
            scored, fake_f, maps_f = score_draws(fs, classes, a.n, a.draws, f_real, f_train, a.seed)
            row["filtered"] = {"method": fcfg.method, "keep": fcfg.keep, **fs.stats(), **scored}
            save_png(a.out / f"grid_{name}_filtered.png", grid(real, fake_f, maps_f))
            print(
                f"[{name}, filter {fcfg.method} keep {fcfg.keep:g}]  "
                + kid_line(row["filtered"], classes),
                flush=True,
            )
        report["variants"][name] = row
        write_json(a.out / "generators_real.json", report)
    print(
        "\n| variant | "
        + " | ".join(f"KID {c} (sd) | floor | other class | recall | memorised" for c in classes)
        + " | train s | sample s |"
    )
    print("|---|" + "---|---|---|---|---|" * len(classes) + "---|---|")
    for name, row in report["variants"].items():
        lines = [(f"{name}{' (default)' if name == DEFAULT else ''}", row)]
        if "filtered" in row:
            f = row["filtered"]
            lines.append((f"{name}, filter {f['method']} keep {f['keep']:g}", f))
        for label, r in lines:
            print(
                f"| {label} | "
                + " | ".join(
                    f"{r[c]['kid']:.4f} ({r[c]['kid_sd']:.4f}) | {r[c]['kid_floor']:.4f} | {r[c]['kid_other_class']:.4f} | "
                    f"{r[c].get('recall', float('nan')):.2f} | {r[c].get('memorised', float('nan')):.2f}"
                    for c in classes
                )
                + f" | {row['train_seconds']:.0f} | {row['sample_seconds']:.0f} |"
            )
    print(f"wrote {a.out / 'generators_real.json'} and grid_<variant>.png in {a.out}")


if __name__ == "__main__":
    main()
