"""Nucleus masks on real folders: Dice/IoU per method, failures, padding, and a side-by-side PNG.

    python benchmarks/real_data.py --he ../shared/data/brecahad_he ../shared/data/monusac_he \
        --cyto ../shared/data/herlev_dev --loso stain:agree_dice=0.3,0.5,0.7 --out /tmp/real_data

--he   one or more H&E folders with ground truth: <dir>/images/*.jpg + <dir>/masks/<same stem>.*
       (BreCaHAD / MoNuSAC layout; JPEG masks thresholded at 127), or a cytoray dataset folder
       <dir>/<class>/*.png with <class>/masks/.
--cyto cytology folder without ground truth: <dir>/<class>/*.jpg (Herlev layout).

Methods: `stain` (cytoray's default), `syncgan` (the SynCGAN-paper method, RGB), `otsu_h` (Otsu
on the haematoxylin channel, 5 lines: the floor), and `segmenter` (the refined-simulation nucleus
segmenter, benchmarks/real_segmenter.py: --segmenter FOLDER|NAME@ALIAS, or --train-segmenter,
one per H&E set trained with the other set as reference). For every method and folder it
prints mean/min Dice and IoU (where there is ground truth), per-image wins against the floor
(higher Dice than otsu_h), failures (Dice < --fail-dice, or a quality flag: empty / inverted /
covers / touches_padding), the worst-case count (images under Dice 0.3 that the floor gets
above 0.5), and how many masks touch a padding band; for the stain method also how often the
stain/Otsu disagreement rule fired and what it chose. It writes per-image rows to
<out>/real_data.json and one PNG per folder (image, then each method's mask outline; ground truth
in green) to <out>/.

Leave-one-set-out (--loso METHOD:KEY=v1,v2,...; needs two or more --he folders): the method is
run with each value of one MaskParams key; for every H&E folder the value with the best mean Dice
on the *other* folders is chosen and scored on this one, so no figure is on the set it was tuned on.

Measured (2026-12-04, 2 CPUs shared with five agents, --jobs 3, 19 min; the command above with
--methods stain,otsu_h --loso stain:keep_level=0.3,0.5): BreCaHAD stain 0.494 Dice / 0.331 IoU vs
Otsu 0.442, wins 30/30; MoNuSAC 0.571 / 0.429 vs 0.498, wins 53/63; 0 inverted, 0 empty, 0 worst
cases; leave-one-set-out 0.493 on BreCaHAD (keep_level 0.3 chosen on MoNuSAC) and 0.571 on
MoNuSAC (0.5 chosen on BreCaHAD); Herlev 0/150 flagged, 0 on a padding band (Otsu 45). Without
the ribbon rule (three constants fewer, 2.5 min with --jobs 2): BreCaHAD 0.493 / 0.330, wins
30/30, LOSO 0.492; MoNuSAC 0.571 / 0.429, wins 52/63, LOSO 0.571; Herlev 0/150 flagged.
The SynCGAN-paper method (--methods syncgan,otsu_h, 9 min): BreCaHAD 0.335 / 0.210, wins 9/30,
1 worst case; MoNuSAC 0.530 / 0.393, wins 39/63, 1 worst case; 0 inverted, 0 empty.

The segmenter (--methods segmenter,otsu_h --train-segmenter --seg-scale 0.25,0.5 --seg-epochs 12,8;
4 refined-sim trainings of 46-56 s, the scale chosen on the reference set's validation tiles:
0.25 for BreCaHAD, 0.5 for MoNuSAC): BreCaHAD 0.398 / 0.251, wins 6/30; MoNuSAC 0.394 / 0.272,
wins 20/63, 7 worst cases; 0 inverted, 0 empty. With the study's schedule (6,4; scale 0.25):
0.388 (3/30) and 0.399 (14/63, 5 worst). It loses to the floor on both sets: blocky masks at
the working scale, red cells and eosin taken for nuclei, most large MoNuSAC nuclei missed.

With `--syncgan`, a short SynCGAN run on the cytology folder (its default masks, padding cropped,
under Ray Train): a grid per class of real images | synthetic images | the masks that made them
(<out>/syncgan_grid.png), and FID/KID per class of synthetic vs real images beside the floor of two
halves of the real class and the real normal-vs-abnormal figure.
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

from cytoray.data.background import Bands, detect_bands, touches_padding  # noqa: E402
from cytoray.data.images import read_mask, read_rgb  # noqa: E402
from cytoray.io import (  # noqa: E402
    IMAGE_EXTS,  # noqa: E402
    save_png,
    write_json,
)
from cytoray.masks.nucleus import nucleus_mask_report  # noqa: E402
from cytoray.masks.params import MaskParams  # noqa: E402
from cytoray.masks.quality import quality_flags  # noqa: E402
from cytoray.masks.stain import otsu_haematoxylin  # noqa: E402
from cytoray.metrics.segmentation import dice, iou  # noqa: E402

METHODS = ("stain", "syncgan", "otsu_h", "segmenter")
PANEL = 256  # px: each image is shown at this height in the side-by-side PNG

# ----------------------------------------------------------------------------- listing


def list_pairs(root: Path) -> list[tuple[Path, Path | None]]:
    """(image, ground truth or None) for a BreCaHAD-style or cytoray-style folder."""
    if not root.is_dir():
        sys.exit(f"{root}: folder not found; pass a folder of real images")
    if (root / "images").is_dir():
        out = []
        for img in sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_EXTS):
            gt = next(
                (
                    root / "masks" / f"{img.stem}{e}"
                    for e in IMAGE_EXTS
                    if (root / "masks" / f"{img.stem}{e}").is_file()
                ),
                None,
            )
            out.append((img, gt))
        return out
    from cytoray.data.folder import scan_folder

    records, _ = scan_folder(root)
    return [(r.path, r.mask) for r in records]


# ----------------------------------------------------------------------------- one image


def run_method(
    method: str,
    rgb: np.ndarray,
    bands: Bands,
    params: MaskParams | None = None,
    segmenter: str | None = None,
) -> tuple[np.ndarray, dict]:
    """(mask, report) of one method; `params` overrides the defaults (leave-one-set-out variants);
    `segmenter` is the bundle folder the segmenter method uses on this set."""
    if method == "segmenter":
        from real_segmenter import segmenter_mask

        return segmenter_mask(segmenter, rgb, bands)
    if method == "otsu_h":
        mask = otsu_haematoxylin(rgb)
        return mask, {
            "flags": quality_flags(rgb, mask, np.ones(mask.shape, bool), bands, MaskParams())
        }
    return nucleus_mask_report(rgb, params or MaskParams(method=method))


def parse_loso(spec: str | None) -> tuple[str, str, list] | None:
    """'stain:agree_dice=0.3,0.5' -> ('stain', 'agree_dice', [0.3, 0.5]); values typed like the default."""
    if not spec:
        return None
    method, _, rest = spec.partition(":")
    key, _, values = rest.partition("=")
    if (
        method not in ("stain", "syncgan")
        or key not in MaskParams.__dataclass_fields__
        or not values
    ):
        sys.exit(
            f"--loso {spec!r}: use METHOD:KEY=v1,v2,... with METHOD stain or syncgan and KEY a MaskParams field"
        )
    kind = type(getattr(MaskParams(), key))
    return method, key, [kind(v) for v in values.split(",")]


def variant_name(method: str, key: str, value) -> str:
    return f"{method}@{key}={value}"


def read_truth(path: Path) -> np.ndarray:
    """Ground truth as bool; JPEG masks are thresholded at 127 (compression noise stays out)."""
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im.convert("L"))
    return a > 127 if path.suffix.lower() in (".jpg", ".jpeg") else read_mask(path)


# ----------------------------------------------------------------------------- sections


def one_image(job: tuple) -> tuple[dict, np.ndarray | None]:
    """Every method (and leave-one-set-out variant) on one image: (row, side-by-side panel or None)."""
    img_path, gt_path, methods, variants, fail_dice, want_panel, segmenter = job
    rgb = read_rgb(img_path)
    bands = detect_bands(rgb)
    truth = read_truth(gt_path) if gt_path else None
    row = {"image": str(img_path), "padding": bands.describe() if bands.any() else None}
    masks = {}
    for m in [*methods, *variants]:
        if (
            m in variants
            and variants[m] == MaskParams(method=m.split("@")[0])
            and m.split("@")[0] in row
        ):
            row[m] = row[m.split("@")[0]]  # the default value: the method's own run
            continue
        mask, info = run_method(m.split("@")[0], rgb, bands, variants.get(m), segmenter)
        masks[m] = mask
        r = {
            "flags": [f["flag"] for f in info["flags"]],
            "touches_padding": touches_padding(mask, bands),
            "cover": float(mask.mean()),
        }
        if "decision" in info:
            r["decision"] = info["decision"]
        if truth is not None:
            r.update(dice=dice(mask, truth), iou=iou(mask, truth))
        r["fail"] = bool(r["flags"]) or (truth is not None and r["dice"] < fail_dice)
        row[m] = r
    return row, (_panel(rgb, masks, truth, methods) if want_panel else None)


def section_masks(
    name: str,
    root: Path,
    methods: list[str],
    out: Path,
    fail_dice: float,
    limit: int | None,
    loso: tuple[str, str, list] | None = None,
    jobs: int = 1,
    segmenter: str | None = None,
) -> dict:
    pairs = list_pairs(root)[:limit]
    variants = {}
    if loso:
        base = MaskParams(method=loso[0])
        variants = {
            variant_name(loso[0], loso[1], v): dataclasses.replace(base, **{loso[1]: v})
            for v in loso[2]
        }
    step = max(1, len(pairs) // 12)
    work = [
        (img, gt, methods, variants, fail_dice, k < 12 or k % step == 0, segmenter)
        for k, (img, gt) in enumerate(pairs)
    ]
    rows, panels = [], []
    t0 = time.perf_counter()
    if jobs > 1:
        from multiprocessing import get_context

        pool = get_context("spawn").Pool(jobs)
        results = pool.imap(one_image, work)
    else:
        pool, results = None, map(one_image, work)
    for k, (row, panel) in enumerate(results):
        rows.append(row)
        if panel is not None:
            panels.append(panel)
        print(
            f"[{name}] {k + 1}/{len(pairs)} {Path(row['image']).name} "
            + " ".join(
                f"{m}={row[m].get('dice', row[m]['cover']):.2f}{'!' if row[m]['fail'] else ''}"
                for m in methods
            ),
            file=sys.stderr,
            flush=True,
        )
    if pool is not None:
        pool.close()
    summary = {m: _summary(rows, m) for m in [*methods, *variants]}
    summary["_n"], summary["_seconds"] = len(rows), round(time.perf_counter() - t0, 1)
    summary["_padded_images"] = sum(1 for r in rows if r["padding"])
    _save_grid(out / f"{name}_masks.png", panels)
    return {"summary": summary, "images": rows}


def _summary(rows: list[dict], m: str) -> dict:
    """Per method: failures, flags, padding; with ground truth mean/min Dice and IoU, wins against
    the floor (otsu_h), and the worst-case count (Dice < 0.3 where the floor gets > 0.5)."""
    d = [r[m]["dice"] for r in rows if "dice" in r[m]]
    s = {
        "n": len(rows),
        "failures": sum(r[m]["fail"] for r in rows),
        "touch_padding": sum(r[m]["touches_padding"] for r in rows),
    }
    for flag in ("empty", "inverted", "covers", "touches_padding"):
        s[f"flag_{flag}"] = sum(flag in r[m]["flags"] for r in rows)
    decided = [r[m]["decision"] for r in rows if "decision" in r[m]]
    if decided:
        s["disagreements"] = sum(x["rule"] != "agree" for x in decided)
        s["chose_otsu"] = sum(x["chose"] == "otsu" for x in decided)
    if d:
        j = [r[m]["iou"] for r in rows if "iou" in r[m]]
        s.update(dice=float(np.mean(d)), dice_min=float(np.min(d)), iou=float(np.mean(j)))
        if all("otsu_h" in r and "dice" in r["otsu_h"] for r in rows):
            s["wins"] = sum(r[m]["dice"] > r["otsu_h"]["dice"] for r in rows)
            s["worst"] = sum(r[m]["dice"] < 0.3 and r["otsu_h"]["dice"] > 0.5 for r in rows)
    return s


def loso_table(report: dict, loso: tuple[str, str, list]) -> str:
    """Leave-one-set-out: for each H&E set, the value chosen on the others, scored here."""
    method, key, values = loso
    sets = [n for n in report if n.startswith("he")]
    names = [variant_name(method, key, v) for v in values]
    lines = [
        f"leave-one-set-out: {method}, {key} chosen from {values} by mean Dice on the other set(s)",
        "| scored on | tuned on | chosen | Dice | IoU | Otsu-H Dice | margin | wins | inverted | empty | worst (<0.3, Otsu>0.5) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for target in sets:
        others = [o for o in sets if o != target]
        if not others:
            return "leave-one-set-out needs two or more --he folders"

        def mean_on_others(v: str) -> float:
            return float(np.mean([report[o]["summary"][v]["dice"] for o in others]))

        best = max(names, key=mean_on_others)
        s, floor = report[target]["summary"][best], report[target]["summary"]["otsu_h"]
        lines.append(
            f"| {target} | {', '.join(others)} | {best.split('=', 1)[1]} | {s['dice']:.3f} | {s['iou']:.3f} | "
            f"{floor['dice']:.3f} | {s['dice'] - floor['dice']:+.3f} | {s['wins']}/{s['n']} ({s['wins'] / s['n']:.0%}) | "
            f"{s['flag_inverted']} | {s['flag_empty']} | {s['worst']} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- pictures


def _panel(
    rgb: np.ndarray, masks: dict, truth: np.ndarray | None, methods: list[str]
) -> np.ndarray:
    """[image | image + outline of each method's mask] at PANEL px high (truth outline green)."""
    from PIL import Image
    from skimage.segmentation import find_boundaries

    def fit(a, nearest=False):
        h, w = a.shape[:2]
        im = Image.fromarray(a.astype(np.uint8) * (255 if a.dtype == bool else 1))
        im = im.resize(
            (max(1, round(w * PANEL / h)), PANEL), Image.NEAREST if nearest else Image.BILINEAR
        )
        out = np.asarray(im)
        return out > 127 if a.dtype == bool else out

    base = fit(rgb)
    tiles = [base]
    for m in methods:
        t = base.copy()
        if truth is not None:
            t[find_boundaries(fit(truth, True))] = (0, 255, 0)
        t[find_boundaries(fit(masks[m], True))] = (255, 255, 0)
        tiles.append(t)
    return np.concatenate(tiles, axis=1)


def _save_grid(path: Path, panels: list[np.ndarray]) -> None:
    if not panels:
        return
    w = max(p.shape[1] for p in panels)
    rows = [np.pad(p, ((0, 4), (0, w - p.shape[1]), (0, 0)), constant_values=255) for p in panels]
    save_png(path, np.concatenate(rows, axis=0))


# ----------------------------------------------------------------------------- main


def _table(name: str, summary: dict, methods: list[str]) -> str:
    has_gt = any("dice" in summary[m] for m in methods)
    head = f"{name} ({summary['_n']} images, {summary['_padded_images']} with padding bands, {summary['_seconds']}s)"
    lines = [
        head,
        f"  {'method':<8} "
        + ("  dice  (min)   iou   wins  worst" if has_gt else "")
        + " failures  touch_pad  empty inverted covers  disagree/chose-otsu",
    ]
    for m in methods:
        s = summary[m]
        gt = (
            f" {s['dice']:.3f} ({s['dice_min']:.3f}) {s['iou']:.3f} {s.get('wins', '-'):>4}/{s['n']:<3} {s.get('worst', '-'):>3}"
            if "dice" in s
            else ""
        )
        rule = f"{s['disagreements']}/{s['chose_otsu']}" if "disagreements" in s else ""
        lines.append(
            f"  {m:<8}{gt}  {s['failures']:>4}/{s['n']:<4} {s['touch_padding']:>6}    "
            f"{s['flag_empty']:>5} {s['flag_inverted']:>8} {s['flag_covers']:>6}  {rule:>10}"
        )
    return "\n".join(lines)


def section_syncgan(root: Path, out: Path, size: int, mask_epochs: int, cgan_epochs: int) -> dict:
    """Train SynCGAN briefly on the folder; the per-class grid and FID/KID against the real-vs-real floors."""
    from cytoray.config import DataConfig
    from cytoray.data.source import load_split
    from cytoray.generators.gan import CGANConfig, LatentGANConfig
    from cytoray.generators.syncgan import SynCGAN, SynCGANConfig
    from cytoray.metrics.fidelity import (
        fid_kid_report,
        inception_features,
        per_class,
        per_class_notes,
    )
    from cytoray.training.config import RunConfig

    t0 = time.perf_counter()
    work = out / "syncgan"
    ds, man = load_split(DataConfig(root=str(root), size=size), work / "split.json")
    train, val = ds.subset(man.indices("train")), ds.subset(man.indices("val"))
    cfg = SynCGANConfig(
        mask_gan=LatentGANConfig(epochs=mask_epochs, g_base=16, d_base=16),
        cgan=CGANConfig(epochs=cgan_epochs, g_base=16, d_base=16),
    )
    bundle, _ = SynCGAN.train(
        train, val, cfg, work / "bundle", work / "cache", man.hash, RunConfig(checkpoint_every=10)
    )
    gen = SynCGAN.load(bundle)
    real = {c: ds.images[ds.labels == i] for i, c in enumerate(ds.class_names)}
    fake = {c: gen.sample(len(x), c, seed=1) for c, x in real.items()}
    # 1. The grid: per class, 8 real | 8 synthetic | the 8 masks that made them.
    rows = []
    for c in ds.class_names:
        rows += [
            np.concatenate(list(real[c][:8]), 1),
            np.concatenate(list(fake[c][0][:8]), 1),
            np.concatenate(
                [np.repeat((m[..., None] * 255).astype(np.uint8), 3, -1) for m in fake[c][1][:8]], 1
            ),
        ]
    save_png(out / "syncgan_grid.png", np.concatenate(rows, 0))
    # 2. FID/KID per class vs all real images of the class; floors from two halves of the real class.
    metrics = per_class(real, {c: f[0] for c, f in fake.items()}, split="real")
    a, b = ds.class_names[:2]
    between = fid_kid_report(inception_features(real[a]), inception_features(real[b]), names=(a, b))
    mask_share = {c: float(f[1].mean()) for c, f in fake.items()}
    return {
        "metrics": metrics,
        "notes": per_class_notes(metrics, "real"),
        "between_classes": {"fid": between["fid"], "kid": between["kid_mean"]},
        "mask_share": mask_share,
        "seconds": time.perf_counter() - t0,
        "epochs": {"mask_gan": mask_epochs, "cgan": cgan_epochs},
    }


def _syncgan_table(r: dict, classes: list[str]) -> str:
    m = r["metrics"]
    lines = [
        "| class | FID synth vs real | FID floor (real halves, at n) | KID synth vs real | KID floor | nucleus share of masks |",
        "|---|---|---|---|---|---|",
    ]
    for c in classes:
        lines.append(
            f"| {c} | {m[f'fid_real_inception/{c}']:.1f} | {m.get(f'fid_real_inception_floor_at_n/{c}', float('nan')):.1f} | "
            f"{m[f'kid_real_inception_mean/{c}']:.4f} | {m.get(f'kid_real_inception_floor_mean/{c}', float('nan')):.4f} | "
            f"{r['mask_share'][c]:.3f} |"
        )
    lines.append(
        f"real {classes[0]} vs real {classes[1]}: FID {r['between_classes']['fid']:.1f}, KID {r['between_classes']['kid']:.4f}"
    )
    return "\n".join(lines + r["notes"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--he", type=Path, nargs="+", help="H&E folder(s) with ground-truth masks")
    ap.add_argument("--cyto", type=Path, help="cytology folder (no ground truth needed)")
    ap.add_argument(
        "--out",
        type=Path,
        required=True,
        help="where the PNGs and real_data.json go (outside the repository)",
    )
    ap.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated, from {', '.join(METHODS)} (default: all; segmenter "
        "only with --segmenter or --train-segmenter)",
    )
    ap.add_argument(
        "--fail-dice", type=float, default=0.3, help="an image below this Dice counts as a failure"
    )
    ap.add_argument(
        "--limit", type=int, default=None, help="first N images per folder (quick looks)"
    )
    ap.add_argument(
        "--syncgan",
        action="store_true",
        help="also train SynCGAN briefly on --cyto: grid and FID/KID per class",
    )
    ap.add_argument("--size", type=int, default=64, help="--syncgan: image side")
    ap.add_argument("--mask-epochs", type=int, default=60, help="--syncgan: class mask GAN epochs")
    ap.add_argument("--cgan-epochs", type=int, default=30, help="--syncgan: CGAN epochs")
    ap.add_argument(
        "--loso",
        help="leave-one-set-out over two or more --he folders: METHOD:KEY=v1,v2,... (e.g. stain:agree_dice=0.3,0.5)",
    )
    ap.add_argument("--jobs", type=int, default=1, help="images masked in parallel (processes)")
    ap.add_argument(
        "--verbose",
        action="store_true",
        help="--syncgan: Ray's own output and every worker's epoch line",
    )
    ap.add_argument(
        "--segmenter",
        help="segmenter method: a nucleus-segmenter bundle folder or NAME@ALIAS / NAME/VERSION, scored on every set",
    )
    ap.add_argument(
        "--train-segmenter",
        action="store_true",
        help="segmenter method: train one per --he set on refined simulation "
        "with the OTHER set(s) as reference (leave-one-set-out; benchmarks/real_segmenter.py)",
    )
    ap.add_argument(
        "--seg-scale",
        default=None,
        help="--train-segmenter: working scale(s), comma-separated: one segmenter each, the best "
        "on the reference set's validation tiles is used (default real_segmenter.SCALE)",
    )
    ap.add_argument(
        "--seg-tile",
        type=int,
        default=None,
        help="--train-segmenter: tile side after scaling (default real_segmenter.TILE)",
    )
    ap.add_argument(
        "--seg-tiles",
        type=int,
        default=96,
        help="--train-segmenter: at most this many tiles per reference set",
    )
    ap.add_argument(
        "--seg-epochs",
        default="6,4",
        help="--train-segmenter: joint,segmenter epochs (the study's defaults: 6,4)",
    )
    a = ap.parse_args()
    from cytoray.quiet import configure

    configure(verbose=a.verbose)
    want_seg = bool(a.segmenter or a.train_segmenter)
    methods = [
        m.strip()
        for m in (a.methods or ",".join(m for m in METHODS if want_seg or m != "segmenter")).split(
            ","
        )
        if m.strip()
    ]
    if bad := [m for m in methods if m not in METHODS]:
        ap.error(f"--methods: unknown {', '.join(bad)}; valid: {', '.join(METHODS)}")
    if not (a.he or a.cyto):
        ap.error("give --he and/or --cyto")
    if "segmenter" in methods and (not want_seg or (a.segmenter and a.train_segmenter)):
        ap.error("--methods segmenter: give one of --segmenter REF or --train-segmenter")
    if a.train_segmenter and len(a.he or []) < 2:
        ap.error(
            "--train-segmenter needs two or more --he folders (each set's segmenter is trained on the others)"
        )
    if a.out.resolve().is_relative_to(ROOT):
        ap.error(
            f"--out {a.out} is inside the repository; write figures elsewhere (e.g. /tmp/real_data)"
        )
    loso = parse_loso(a.loso)
    if loso and (len(a.he or []) < 2 or "otsu_h" not in methods):
        ap.error("--loso needs two or more --he folders and otsu_h among --methods")
    report = {}
    folders = [(f"he_{p.name}" if len(a.he) > 1 else "he", p) for p in a.he or []] + (
        [("cyto", a.cyto)] if a.cyto else []
    )
    from real_segmenter import segmenter_folders, segmenter_table

    segmenters = segmenter_folders(a, folders, methods, list_pairs, read_truth)
    for name, root in folders:
        grid = loso if name.startswith("he") else None
        here = [m for m in methods if m != "segmenter" or name in segmenters]
        report[name] = section_masks(
            name, root, here, a.out, a.fail_dice, a.limit, grid, a.jobs, segmenters.get(name)
        )
        print(_table(f"{name}: {root}", report[name]["summary"], here), flush=True)
        if name in segmenters:
            report[name]["segmenter"] = segmenters[name]
    if loso:
        report["loso"] = loso_table(report, loso)
        print(report["loso"], flush=True)
    if a.train_segmenter:
        report["loso_segmenter"] = segmenter_table(report)
        print(report["loso_segmenter"], flush=True)
    if a.syncgan and a.cyto:
        report["syncgan"] = section_syncgan(a.cyto, a.out, a.size, a.mask_epochs, a.cgan_epochs)
        classes = sorted(d.name for d in a.cyto.iterdir() if d.is_dir())
        print(
            f"SynCGAN on {a.cyto} ({report['syncgan']['seconds']:.0f} s): grid in {a.out / 'syncgan_grid.png'}\n"
            + _syncgan_table(report["syncgan"], classes),
            flush=True,
        )
    write_json(a.out / "real_data.json", report)
    print(
        f"wrote {a.out / 'real_data.json'} and {', '.join(f'{n}_masks.png' for n in report if not n.startswith('loso'))} in {a.out}"
    )


if __name__ == "__main__":
    main()
