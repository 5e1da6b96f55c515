"""`cytoray segment NAME@ALIAS DIR --out DIR`: nucleus masks for a folder of real images by a
registered segmenter (or a local segmenter / refined-sim bundle folder).

Each image is resized by the segmenter's working scale (recorded when it was trained; `--scale`
overrides), segmented, and its mask resized back to the image's own size and written as
`<out>/<relative path>.png` (0 / 255): the whole folder at once, with `segment.json` beside the
masks. An existing non-empty --out is refused; `--overwrite` replaces only a previous `segment`
output (it holds segment.json), and never the input folder or a folder around or inside it.

A registered `nucleus-segmenter` is a segmenter bundle (segmenter.json + weights; also a
refined-sim generator bundle when a study wrote it), registered with the segmenter pyfunc
(`model_code/segmenter.py`: uint8 images in, masks or probabilities out).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def load_segmenter_ref(ref: str, tracking_uri: str | None = None):
    """A Segmenter from a local bundle folder, or NAME@ALIAS / NAME/VERSION pulled from the
    registry into a temporary folder that is gone afterwards (the weights are in memory)."""
    from ..masks.segmenter import load_mask_segmenter
    from ..tracking.mlflow_utils import tracking_uri as uri

    return load_mask_segmenter(ref, uri(tracking_uri))[
        0
    ]  # flag > MLFLOW_TRACKING_URI > sqlite:///mlflow.db


def segment_folder(seg, src: Path, out: Path, scale: float | None = None) -> list[Path]:
    """Masks for every image under `src` (recursively, masks/ folders skipped) into `out`."""
    import numpy as np

    from ..data.images import read_rgb
    from ..errors import CytorayError
    from ..io import atomic_dir, is_image_name, save_png, write_json

    src = Path(src)
    if not src.is_dir():
        raise CytorayError(f"{src}: not a folder; give a folder of images to segment")
    paths = [
        p
        for p in sorted(src.rglob("*"))
        if p.is_file() and is_image_name(p) and "masks" not in p.relative_to(src).parts
    ]
    if not paths:
        raise CytorayError(f"{src}: no images (.png, .jpg, .tif, ...) to segment")
    written = []
    with atomic_dir(out, overwrite=True) as tmp:  # callers check --out (check_output_folder) first
        for p in paths:
            mask = seg.segment_image(read_rgb(p), scale)
            rel = p.relative_to(src).with_suffix(".png")
            save_png(tmp / rel, (mask.astype(np.uint8) * 255))
            written.append(Path(out) / rel)
        write_json(
            tmp / SEGMENT_META,
            {"source": str(src.resolve()), "scale": scale, "masks": len(written)},
        )
    return written


SEGMENT_META = "segment.json"  # marks a folder `segment` wrote: what --overwrite may replace


def segment_from_args(a: argparse.Namespace) -> int:
    """The `cytoray segment` subcommand: a.ref, a.dir, a.out, a.scale, a.tracking_uri."""
    from ..errors import CytorayError

    if a.scale is not None and not 0 < a.scale <= 4:
        raise CytorayError(
            f"--scale {a.scale}: give a resize factor in "
            "(0, 4] (or leave it out: the segmenter's own)"
        )
    if not Path(a.dir).is_dir():
        raise CytorayError(f"{a.dir}: not a folder; give a folder of images to segment")
    from ..io import check_output_folder

    check_output_folder(
        a.out,
        overwrite=getattr(a, "overwrite", False),
        inputs=[a.dir],
        ours=lambda d: (d / SEGMENT_META).is_file(),
    )
    if (
        not Path(a.ref).expanduser().is_dir()
    ):  # a registered model: is the server there at all (seconds)?
        from ..tracking.mlflow_utils import tracking_uri
        from ..tracking.reach import probe_tracking_server

        probe_tracking_server(tracking_uri(getattr(a, "tracking_uri", None)), f"pulling {a.ref}")
    seg = load_segmenter_ref(a.ref, getattr(a, "tracking_uri", None))
    scale = seg.scale if a.scale is None else a.scale
    written = segment_folder(seg, Path(a.dir), Path(a.out), scale)
    print(
        f"wrote {len(written)} nucleus masks to {a.out} (images resized "
        f"by {scale:g} for the segmenter, masks at each image's size)"
    )
    return 0
