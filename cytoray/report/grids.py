"""Labelled image grids: real vs synthetic images of one class, one row per source.

A trial writes one per class (`real_vs_synthetic_<class>.png`) into its figures folder; the
MLflow callback logs it to the trial's child run and the report shows the best and the worst
trial's side by side. Plain PIL, no matplotlib: trials run in Ray workers and only need pixels.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

# px: least row-label column, title strip, smallest readable tile, PIL's default font
LABEL_W, HEADER_H, MIN_TILE, CHAR_W = (
    84,
    16,
    96,
    6,
)


def _rgb(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == bool:
        x = x.astype(np.uint8) * 255
    if x.ndim == 3:  # masks / gray: N x H x W
        x = np.repeat(x[..., None], 3, axis=-1)
    return x.astype(np.uint8)


def labelled_grid(rows: dict[str, np.ndarray], title: str, k: int = 8) -> np.ndarray:
    """`rows` {label: N x H x W (x 3) uint8 or bool}: up to `k` tiles each, scaled up (nearest, so
    pixels stay pixels) until a tile is at least MIN_TILE px, a label left of every row."""
    from PIL import Image, ImageDraw

    rows = {name: _rgb(x)[:k] for name, x in rows.items() if len(x)}
    if not rows:
        raise ValueError(f"{title}: no images to draw")
    size = max(x.shape[1] for x in rows.values())
    scale = max(1, math.ceil(MIN_TILE / size))
    tile = size * scale
    cols = max(len(x) for x in rows.values())
    label_w = max(LABEL_W, CHAR_W * max(len(n) for n in rows) + 10)
    canvas = Image.new(
        "RGB",
        (
            max(label_w + cols * (tile + 2), CHAR_W * len(title) + 8),
            HEADER_H + len(rows) * (tile + 2),
        ),
        "white",
    )
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), title, fill="black")
    for r, (name, x) in enumerate(rows.items()):
        y = HEADER_H + r * (tile + 2)
        draw.text((4, y + tile // 2 - 6), name, fill="black")
        for c, im in enumerate(x):
            canvas.paste(
                Image.fromarray(im).resize((tile, tile), Image.NEAREST),
                (label_w + c * (tile + 2), y),
            )
    return np.asarray(canvas)


def safe_name(cls: str) -> str:
    """A class name as a file-name part (class names may hold spaces or '/')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", cls) or "class"


def write_real_vs_synthetic(
    out: Path, real: dict[str, np.ndarray], synthetic: dict[str, tuple], what: str, k: int = 8
) -> list[Path]:
    """One PNG per class: real images (rows of `real[cls]`), the synthetic ones and, when the
    generator makes them, its synthetic masks. `synthetic[cls]` = (images, masks or None)."""
    from ..io import save_png

    paths = []
    for cls, x in real.items():
        images, masks = synthetic[cls]
        rows = {"real": x, "synthetic": images}
        if masks is not None:
            rows["synth. mask"] = masks
        p = Path(out) / f"real_vs_synthetic_{safe_name(cls)}.png"
        save_png(p, labelled_grid(rows, f"{cls}: real (validation) vs {what}", k))
        paths.append(p)
    return paths
