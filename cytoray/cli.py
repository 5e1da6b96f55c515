"""The `cytoray` command. Each subcommand imports its machinery lazily so `--help` is instant.

Input problems (`CytorayError`) print one line, `cytoray: error: ...`, and exit 2; nothing
half-written is left behind because every writer is atomic.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


# ----------------------------------------------------------------------------- data commands


def cmd_simulate(a: argparse.Namespace) -> int:
    from .data.simulate import write_dataset
    from .io import check_memory, check_output_folder

    if a.size > 0 and a.n > 0:  # images and masks are built in memory first (all or nothing)
        check_memory(
            float(a.n) * a.size * a.size * 4 * 3,
            f"--n {a.n} --size {a.size}",
            "give fewer or smaller images",
        )
    # --overwrite replaces a simulated dataset (it holds
    # simulation.json), never one someone collected
    check_output_folder(
        a.out, overwrite=a.overwrite, ours=lambda d: (d / "simulation.json").is_file()
    )
    out = write_dataset(a.out, kind=a.kind, n=a.n, size=a.size, seed=a.seed, overwrite=a.overwrite)
    print(f"wrote {a.n} {a.kind} images ({a.size} px, seed {a.seed}) with nucleus masks to {out}")
    return 0


def cmd_validate(a: argparse.Namespace) -> int:
    from .data.validate import format_report, parse_split, validate_folder

    # nan / inf / 3:x:1 / 0:0:0 / 1:1: one line, before any file is read
    ratios = parse_split(a.split)
    rep = validate_folder(a.dir, ratios=ratios, magnification=a.magnification, progress=not a.json)
    print(json.dumps(rep, indent=2) if a.json else format_report(rep))
    return 0 if rep["usable"] else 1


def cmd_split(a: argparse.Namespace) -> int:
    from .config import DataConfig, from_dict
    from .data.source import load_dataset
    from .data.splits import repeated_manifests

    if a.seed < 0 or a.k < 1 or not a.out.strip():
        from .errors import CytorayError

        raise CytorayError(
            f"--seed {a.seed} --k {a.k} --out '{a.out}': "
            "give a seed >= 0, --k >= 1 and an output file"
        )
    cfg = from_dict(
        DataConfig,
        {"root": a.data, "size": a.size, "split_seed": a.seed, "n_splits": a.k},
        "command line",
    )
    ds = load_dataset(cfg, progress=True)
    for k, m in enumerate(
        repeated_manifests(
            ds, cfg.split_ratios, cfg.split_seed, cfg.n_splits, cfg.near_duplicate_bits
        )
    ):
        # K splits: split_0.json, split_1.json, ... (one file each, whatever the suffix)
        out = Path(a.out)
        path = m.save(out if cfg.n_splits == 1 else out.with_name(f"{out.stem}_{k}{out.suffix}"))
        counts = {s: len(m.indices(s)) for s in ("train", "val", "test")}
        print(f"{path}: {counts} (seed {m.seed}, hash {m.hash})")
    return 0


def cmd_masks(a: argparse.Namespace) -> int:
    from .masks.run import format_summary, run_masks

    if not 0.0 <= a.fail_dice <= 1.0:
        from .errors import CytorayError

        raise CytorayError(f"--fail-dice {a.fail_dice}: a Dice score in [0, 1]")
    from .data.folder import scan_folder
    from .data.images import check_min_side
    from .errors import CytorayError

    out, data = Path(a.out).expanduser().resolve(), Path(a.data).expanduser().resolve()
    mine = lambda d: (d / "summary.json").is_file() or (d / ".cache").is_dir()  # noqa: E731 (a previous `masks` output)
    if out.is_dir() and any(out.iterdir()) and not mine(out) or out == data or out in data.parents:
        raise CytorayError(
            f"--out {a.out}: holds files `masks` did not write (a dataset, or the input itself); "
            "masks would be written over same-named images there; choose a new or empty folder"
        )
    if Path(a.data).is_dir():  # the unsupervised masks work on 8 px and up (masks/unsupervised.py)
        check_min_side([r.path for r in scan_folder(a.data)[0]], 8, "nucleus masking")
    summary = run_masks(
        a.data, a.out, evaluate=a.eval, method=a.method, fail_dice=a.fail_dice, progress=not a.json
    )
    if a.json:
        _print_json(summary)
    else:  # per-image Dice/IoU, flags, the share that fails and why
        print(format_summary(summary))
    return 0


def cmd_fid(a: argparse.Namespace) -> int:
    from .errors import CytorayError
    from .metrics.fidelity import describe
    from .metrics.fidelity_dirs import fid_kid_dirs

    if a.size is not None and not 16 <= a.size <= 2048:
        raise CytorayError(
            f"--size {a.size}: give 16 to 2048 px (or leave "
            "it out: each image goes to 299 px as it is)"
        )
    if a.train and not a.realism:
        raise CytorayError("--train DIR is read for the memorisation share only; add --realism")
    feats: dict | None = {} if a.realism else None
    res = fid_kid_dirs(a.dir_a, a.dir_b, size=a.size, progress=not a.json, features_out=feats)
    if feats is not None:  # dir_a is the real set, dir_b the synthetic one
        from .metrics.realism import pair_report

        train = None
        if a.train:
            from .metrics.fidelity_dirs import folder_features, list_images

            paths = list_images(a.train)
            if len(paths) < 2:
                raise CytorayError(
                    f"--train {a.train}: {len(paths)} image(s) "
                    "found; the memorisation share needs at least 2"
                )
            train = folder_features(
                paths, a.size, desc=None if a.json else "Inception features train"
            )
        res["realism"] = pair_report(feats["a"], feats["b"], train, k=a.k)
    if a.json:
        _print_json(res)
    else:  # KID leads below the documented n, with each set's real-vs-real floor beside the figure
        print("\n".join(describe(res, (str(a.dir_a), str(a.dir_b)))))
        if feats is not None:
            print("\n".join(_realism_lines(res["realism"])))
    return 0


def _realism_lines(r: dict) -> list[str]:
    p, fl = r["prdc"], r["prdc_floor"] or {}
    lines = [
        f"{m} {p[m]:.3f}" + (f" (real-vs-real {fl[m]:.3f})" if m in fl else "")
        for m in ("precision", "recall", "density", "coverage")
    ]
    floor = (
        f"; real-vs-real: {fl['floor_kind']}, {fl['floor_n_ref']}/{fl['floor_n_other']} images"
        if fl
        else ""
    )
    lines = [
        f"realism (dir_a real, dir_b synthetic; k={int(p['k'])} nearest neighbours): "
        + "; ".join(lines)
        + floor
    ]
    m = r.get("memorisation")
    if m:
        pairs = ", ".join(f"#{i}~train #{j} ({d:.2f})" for i, j, d in m["closest_pairs"][:3])
        lines.append(
            f"memorised share {m['share']:.3f}: synthetic images nearer to "
            f"a training image than the {m['percentile']:g}th percentile "
            f"({m['threshold']:.3f}) of train-to-train nearest distances (dir_a's "
            f"real images: {m['held_out_real_share']:.3f}); closest: {pairs}"
        )
    return lines


# ----------------------------------------------------------------------------- generator commands


def cmd_train(a: argparse.Namespace) -> int:
    from .experiments.train import train_from_args

    return train_from_args(a)


def _check_n(n: int) -> None:
    if n < 1:
        from .errors import CytorayError

        raise CytorayError(f"--n {n}: give the number of images to write per class (>= 1)")


def cmd_generate(a: argparse.Namespace) -> int:
    from .generators import load_bundle

    _check_n(a.n)

    _check_sample_dests([a.cls], a.out, a.overwrite, inputs=[a.checkpoint])
    for line in _write_samples(
        load_bundle(a.checkpoint), a.n, [a.cls], a.out, a.seed, a.overwrite, [a.checkpoint]
    ):
        print(line)
    return 0


# ----------------------------------------------------------------------------- registry commands


def _check_sample_dests(classes: list[str], out: str, overwrite: bool, inputs=()) -> None:
    """Each `<out>/<class>` is new or empty, or (with --overwrite) holds only this command's own
    `<class>_synth_NNNN.png` images: a class folder of a real dataset is never replaced."""
    import re

    from .io import check_output_folder, safe_component

    for c in classes:  # class names come from the bundle's metadata: never a path
        safe_component(c, "class name")
        pat = re.compile(rf"{re.escape(c)}_synth_\d{{4}}\.png")
        ours = lambda d: all(
            p.is_dir() and p.name == "masks" or p.is_file() and pat.fullmatch(p.name)  # noqa: E731
            for p in d.rglob("*")
        )
        check_output_folder(
            Path(out) / c, overwrite=overwrite, inputs=inputs, ours=ours, inside_input_ok=True
        )


def _write_samples(
    gen, n: int, classes: list[str], out: str, seed: int, overwrite: bool = False, inputs=()
) -> list[str]:
    import numpy as np

    from .io import atomic_dir, save_png

    _check_n(n)
    _check_sample_dests(classes, out, overwrite, inputs)
    from .progress import Progress

    lines = []
    if (
        n > 256
    ):  # the n images of a class are made in memory at once: refused before if they cannot fit
        from .io import check_memory

        one, _ = gen.sample(1, classes[0], seed=seed)
        check_memory(
            float(n) * one[0].nbytes * 3,
            f"--n {n}",
            "give a smaller --n and run it several times with other --seed",
        )
    with Progress(n * len(classes), "sampling") as bar:
        for c in classes:
            images, masks = gen.sample(n, c, seed=seed)
            bar.update(n)
            dest = Path(out) / c
            with atomic_dir(dest, overwrite=True) as tmp:
                for i, im in enumerate(images):
                    save_png(tmp / f"{c}_synth_{i:04d}.png", im)
                    if masks is not None:
                        save_png(
                            tmp / "masks" / f"{c}_synth_{i:04d}.png",
                            (masks[i] * 255).astype(np.uint8),
                        )
            lines.append(f"wrote {n} synthetic '{c}' images to {dest}")
    return lines


def cmd_pull(a: argparse.Namespace) -> int:
    import mlflow

    from .generators import load_bundle
    from .tracking.mlflow_utils import store_uri, tracking_uri
    from .tracking.registry import pull

    _check_n(a.n)
    if a.cls:  # refused before anything is pulled
        _check_sample_dests([a.cls], a.out, a.overwrite)
    from .tracking.reach import probe_tracking_server

    # seconds, not MLflow's minutes of retries
    probe_tracking_server(tracking_uri(a.tracking_uri), f"pulling {a.ref}")
    mlflow.set_tracking_uri(store_uri(tracking_uri(a.tracking_uri)))
    with tempfile.TemporaryDirectory(prefix="cytoray-pull-") as d:  # nothing left behind in /tmp
        gen = load_bundle(pull(a.ref, d))
        lines = _write_samples(
            gen, a.n, [a.cls] if a.cls else gen.classes, a.out, a.seed, a.overwrite
        )
    print("\n".join(lines))
    return 0


def cmd_classify(a: argparse.Namespace) -> int:
    import mlflow
    import numpy as np

    from .classify.bundle import load_classifier_bundle, predict_images
    from .data.images import fit_square, read_rgb
    from .metrics.fidelity_dirs import list_images
    from .tracking.mlflow_utils import store_uri, tracking_uri
    from .tracking.reach import probe_tracking_server
    from .tracking.registry import pull

    # seconds, not MLflow's minutes of retries
    probe_tracking_server(tracking_uri(a.tracking_uri), f"pulling {a.ref}")
    mlflow.set_tracking_uri(store_uri(tracking_uri(a.tracking_uri)))
    paths = list_images(a.dir)
    if not paths:
        from .errors import DataError

        raise DataError(f"{a.dir}: no images (png, jpg, jpeg, tif, tiff, bmp) to classify")
    from .data.images import check_min_side

    # headers only: a decompression bomb is named before the model is pulled
    check_min_side(paths, 1, "classification")
    with tempfile.TemporaryDirectory(prefix="cytoray-pull-") as d:  # nothing left behind in /tmp
        model, meta = load_classifier_bundle(pull(a.ref, d))
    imgs = np.stack([fit_square(read_rgb(p), meta["input_size"]) for p in paths])
    prob = predict_images(model, meta, imgs)
    names = meta["class_names"]
    rows = [
        {
            "file": str(p),
            "prediction": names[int(np.argmax(q))],
            **{f"p_{c}": round(float(v), 4) for c, v in zip(names, q)},
        }
        for p, q in zip(paths, prob)
    ]
    if a.json:
        _print_json(rows)
    else:
        print(",".join(rows[0].keys()))
        for r in rows:
            print(",".join(str(v) for v in r.values()))
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cytoray", description="Synthetic cytology/histology studies (SynCGAN, CycleGAN, NST)."
    )
    p.add_argument(
        "--verbose", action="store_true", help="Ray's own output too (workers, log lines)"
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "simulate", help="write an embedded simulated dataset (images + nucleus masks)"
    )
    s.add_argument("--kind", choices=["cytology", "histology"], default="cytology")
    s.add_argument("--out", required=True)
    s.add_argument("--n", type=int, default=150)
    s.add_argument("--size", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser(
        "validate",
        help="check a dataset folder: classes, counts, sizes, unreadable files, duplicates",
    )
    s.add_argument("dir")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument(
        "--magnification",
        type=int,
        default=None,
        help="BreakHis magnification filter (40/100/200/400)",
    )
    s.add_argument(
        "--split", default="3:1:1", help="train:val:test ratios the classes must support"
    )
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser(
        "split", help="write a stratified split manifest (path, class, sha256, split)"
    )
    s.add_argument("--data", required=True)
    s.add_argument("--out", default="split.json")
    s.add_argument("--size", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--k", type=int, default=1, help="number of seeded splits")
    s.set_defaults(func=cmd_split)

    s = sub.add_parser(
        "masks",
        help="unsupervised nucleus masks (stain-aware; --method syncgan: SynCGAN §3.2), cached by image hash",
    )
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True)
    s.add_argument(
        "--eval",
        action="store_true",
        help="compare with ground-truth masks (<class>/masks/): Dice/IoU per image",
    )
    s.add_argument(
        "--method",
        choices=["stain", "syncgan"],
        default="stain",
        help="stain: colour deconvolution, the default (best on real H&E/Pap); syncgan: the paper's RGB method",
    )
    s.add_argument(
        "--fail-dice",
        type=float,
        default=0.3,
        help="with --eval, an image below this Dice counts as failed",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_masks)

    s = sub.add_parser(
        "fid", help="FID/KID between two image folders (real Inception weights, offline)"
    )
    s.add_argument("dir_a")
    s.add_argument("dir_b")
    s.add_argument(
        "--size",
        type=int,
        default=None,
        help="resize every image of both folders to SIZE x SIZE first (compare at a "
        "generator's resolution, e.g. real 224 px cells at 64 px); either way "
        "each image then goes to the extractor's 299 px",
    )
    s.add_argument(
        "--realism",
        action="store_true",
        help="also precision/recall/density/coverage (dir_a real, dir_b synthetic) with their real-vs-real values",
    )
    s.add_argument(
        "--train",
        default=None,
        help="with --realism: the generator's training images, for the memorisation share",
    )
    s.add_argument(
        "--k",
        type=int,
        default=5,
        help="with --realism: nearest neighbours of the manifolds (Naeem et al.: 5)",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_fid)

    s = sub.add_parser(
        "train",
        help="train a registered generator (e.g. syncgan = mask GANs + mask->RGB CGAN; gan = vanilla "
        "control; cyclegan = histology->cytology, one per class)",
    )
    s.add_argument(
        "generator", help="registered generator name (an unknown name lists the known ones)"
    )
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--data",
        help="folder dataset <root>/<class>/*.png (a translator: the cytology target domain)",
    )
    src.add_argument("--simulate", action="store_true", help="use the embedded simulator")
    s.add_argument(
        "--source",
        help="a translator's histology folder <root>/<class>/*.png, same classes (default: embedded)",
    )
    s.add_argument("--size", type=int, default=64)
    s.add_argument(
        "--epochs", type=int, default=None, help="epochs for every stage (overrides the config)"
    )
    s.add_argument("--out", required=True)
    s.add_argument(
        "--config",
        default=None,
        help="the generator's YAML section (configs/models/<generator>.yaml)",
    )
    s.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    s.add_argument("--workers", type=int, default=1, help="Ray Train workers (DDP when > 1)")
    s.add_argument("--gpu", action="store_true", help="one GPU per worker")
    s.add_argument("--tracking-uri", default=None)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("generate", help="sample class-specific images from a trained generator")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--cls", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="replace <out>/<cls> when it holds a previous `generate` output",
    )
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser(
        "pull", help="sample images from a registered generator (e.g. syncgan@champion)"
    )
    s.add_argument("ref", help="NAME@ALIAS or NAME/VERSION")
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--cls", default=None, help="class to sample (default: every class)")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db"
    )
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="replace <out>/<class> folders that hold a previous sample",
    )
    s.set_defaults(func=cmd_pull)

    s = sub.add_parser(
        "report", help="the HTML report (tables + figures) of a study, built from MLflow alone"
    )
    s.add_argument(
        "--experiment", required=True, help="the study's MLflow experiment (e.g. syncgan_ratio)"
    )
    s.add_argument(
        "--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db"
    )
    s.add_argument(
        "--out",
        required=True,
        help="folder for report.html and figures/ (new, or a previous report)",
    )
    s.add_argument("--run-id", default=None, help="the study's parent run (default: the newest)")
    s.add_argument("--log", action="store_true", help="also attach the report to that parent run")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("classify", help="predict a folder of images with a registered classifier")
    s.add_argument("ref", help="NAME@ALIAS or NAME/VERSION (e.g. syncgan-classifier@champion)")
    s.add_argument("dir")
    s.add_argument("--json", action="store_true")
    s.add_argument("--tracking-uri", default=None)
    s.set_defaults(func=cmd_classify)

    s = sub.add_parser(
        "segment",
        help="nucleus masks for a folder of real images with a registered segmenter "
        "(e.g. nucleus-segmenter@champion, from studies/refined_segmentation.py)",
    )
    s.add_argument(
        "ref",
        help="NAME@ALIAS or NAME/VERSION (e.g. nucleus-segmenter@champion), or a local segmenter bundle folder",
    )
    s.add_argument("dir", help="folder of images (searched recursively; masks/ folders skipped)")
    s.add_argument(
        "--out",
        required=True,
        help="folder for <relative path>.png masks (0/255), each at its image's size",
    )
    s.add_argument(
        "--scale",
        type=float,
        default=None,
        help="resize factor to the segmenter's working resolution (default: "
        "the one it was trained at, recorded in its bundle)",
    )
    s.add_argument(
        "--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db"
    )
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an --out folder that holds a previous `segment` output",
    )
    s.set_defaults(func=cmd_segment)

    s = sub.add_parser(
        "weights",
        help="which torchvision ImageNet weight files (classifiers, style-transfer VGG-19) are "
        "found locally and verify by the hash in their name (nothing downloads)",
    )
    s.add_argument(
        "--dir",
        default=None,
        help="a folder searched before the torch cache (as classifier.weights_dir)",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_weights)

    from .turing.cli import add_parser as add_turing  # build / serve / score: cytoray/turing/cli.py

    add_turing(sub)
    return p


def cmd_weights(a: argparse.Namespace) -> int:
    from .classify.weights import format_inventory, inventory

    if a.dir is not None and not Path(a.dir).is_dir():
        from .errors import CytorayError

        raise CytorayError(
            f"--dir {a.dir}: no such folder; name the folder "
            "holding torchvision's <network>-<hash>.pth files"
        )
    rows = inventory(a.dir)
    _print_json(rows) if a.json else print(format_inventory(rows, a.dir))
    # a damaged file is worth a failing exit
    return 1 if any(r["status"] == "mismatch" for r in rows) else 0


def cmd_segment(a: argparse.Namespace) -> int:
    from .experiments.segment import segment_from_args

    return segment_from_args(a)


def cmd_report(a) -> int:
    from .report import report_from_args
    from .tracking.mlflow_utils import tracking_uri
    from .tracking.reach import probe_tracking_server

    probe_tracking_server(tracking_uri(a.tracking_uri), f"reading experiment {a.experiment!r}")

    return report_from_args(a)


def main(argv: list[str] | None = None) -> int:
    from .errors import CytorayError
    from .quiet import configure

    args = build_parser().parse_args(argv)
    # train: its epochs are its progress
    configure(verbose=args.verbose, worker_output=True if args.command == "train" else None)
    try:
        return int(args.func(args) or 0)
    except CytorayError as e:
        print(f"cytoray: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a user's path: read-only --out, a file where a folder goes, a full disk
        from .io import FULL_DISK_ERRNOS, os_error_message

        if (
            e.filename is None and e.errno not in FULL_DISK_ERRNOS
        ):  # ENOSPC / EDQUOT / EFBIG: the user's to fix
            raise
        print(f"cytoray: error: {os_error_message(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # a full disk under SQLAlchemy/MLflow or Ray's wrappers: one line too
        from .io import full_disk_message

        msg = full_disk_message(e)
        if msg is None:
            raise
        print(f"cytoray: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cytoray: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
