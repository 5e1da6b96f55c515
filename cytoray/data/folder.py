"""Folder datasets: `<root>/<class>/**/*.{png,jpg,jpeg,tif,tiff,bmp}`, masks in `<class>/masks/`.

BreakHis file names (`SOB_B_A-14-22549AB-40-001.png`) are recognised: the class letter is
checked against the folder, the magnification is parsed (for `magnification` filtering) and
the patient/slide id becomes the split group, so one patient never sits in two splits.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io import IMAGE_EXTS, is_image_name
from .images import fit_square, read_mask, read_rgb

MASK_DIR = "masks"
IGNORED_FILES = {"thumbs.db", "desktop.ini"}
BREAKHIS_RE = re.compile(
    r"^SOB_(?P<cls>[BM])_(?P<subtype>[A-Z]+)-(?P<patient>\d+-[0-9A-Z]+)-(?P<mag>\d+)-(?P<seq>\d+)$",
    re.IGNORECASE,
)
BREAKHIS_CLASS = {"B": "benign", "M": "malignant"}


@dataclasses.dataclass(frozen=True)
class Record:
    path: Path
    cls: str
    mask: Path | None = None
    magnification: int | None = None
    group: str | None = None  # split group (BreakHis patient); None = the image alone


@dataclasses.dataclass
class Problem:
    file: str
    problem: str

    def message(self) -> str:
        return f"{self.file}: {self.problem}"


def parse_breakhis(stem: str) -> dict | None:
    m = BREAKHIS_RE.match(stem)
    if not m:
        return None
    return {
        "cls": BREAKHIS_CLASS[m["cls"].upper()],
        "subtype": m["subtype"].upper(),
        "patient": m["patient"].upper(),
        "magnification": int(m["mag"]),
    }


def _find_mask(class_dir: Path, img: Path) -> Path | None:
    mdir = class_dir / MASK_DIR
    if not mdir.is_dir():
        return None
    for ext in IMAGE_EXTS:
        cand = mdir / f"{img.stem}{ext}"
        if cand.is_file():
            return cand
    return None


def scan_folder(
    root: str | Path,
    classes: list[str] | None = None,
    magnification: int | None = None,
) -> tuple[list[Record], list[Problem]]:
    """List a folder dataset. Returns records and the problems found (never raises on content)."""
    root = Path(root)
    problems: list[Problem] = []
    if not root.exists():
        return [], [
            Problem(
                str(root),
                "folder not found; pass an existing dataset folder "
                "(<root>/<class>/*.png) or use the embedded simulator",
            )
        ]
    if not root.is_dir():
        return [], [
            Problem(
                str(root),
                "is a file, not a folder; pass the dataset "
                "folder that holds one sub-folder per class",
            )
        ]
    class_dirs = sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name != MASK_DIR
    )
    if classes:
        missing = [c for c in classes if not (root / c).is_dir()]
        for c in missing:
            problems.append(
                Problem(
                    str(root / c),
                    f"class folder '{c}' not found (found: "
                    f"{', '.join(d.name for d in class_dirs) or 'none'})",
                )
            )
        class_dirs = [root / c for c in classes if (root / c).is_dir()]
    records: list[Record] = []
    for cdir in class_dirs:
        n_before = len(records)
        for f in sorted(cdir.rglob("*")):
            rel = f.relative_to(cdir)
            if any(part.startswith(".") or part == MASK_DIR for part in rel.parts) or f.is_dir():
                continue
            if f.name.lower() in IGNORED_FILES:
                continue
            if not is_image_name(f):
                problems.append(
                    Problem(
                        str(f),
                        f"not an image file (extension '{f.suffix or 'none'}'); "
                        "move it out of the class folder",
                    )
                )
                continue
            bh = parse_breakhis(f.stem)
            if (
                bh
                and bh["cls"] != cdir.name.lower()
                and cdir.name.lower() in BREAKHIS_CLASS.values()
            ):
                problems.append(
                    Problem(
                        str(f),
                        f"BreakHis name says '{bh['cls']}' but the file "
                        f"is in class folder '{cdir.name}'; move it",
                    )
                )
                continue
            mag = bh["magnification"] if bh else None
            if magnification is not None and mag != magnification:
                # filtered out (non-BreakHis names have no
                # magnification and are dropped by the filter)
                continue
            records.append(
                Record(f, cdir.name, _find_mask(cdir, f), mag, bh["patient"] if bh else None)
            )
        if len(records) == n_before:
            what = f"no images at {magnification}X" if magnification else "no images"
            problems.append(
                Problem(
                    str(cdir),
                    f"class folder has {what} ({', '.join(IMAGE_EXTS)}); "
                    "add images or remove the folder",
                )
            )
    n_classes = len({r.cls for r in records})
    if n_classes < 2 and not any("not found" in p.problem for p in problems):
        found = ", ".join(d.name for d in class_dirs) or "none"
        problems.append(
            Problem(
                str(root),
                "needs at least two class folders with images (found: "
                f"{found}); put each class in its own sub-folder",
            )
        )
    return records, problems


def require_folder(
    root: str | Path, classes: list[str] | None = None, magnification: int | None = None
) -> list[Record]:
    """`scan_folder` that raises the first problem as a DataError."""
    records, problems = scan_folder(root, classes, magnification)
    if problems:
        extra = (
            f" (and {len(problems) - 1} more problems; run `cytoray validate {root}`)"
            if len(problems) > 1
            else ""
        )
        raise DataError(problems[0].message() + extra)
    return records


# ----------------------------------------------------------------------------- in memory


@dataclasses.dataclass
class ImageSet:
    """A small dataset held in memory as tensors-ready arrays (150 images fit anywhere)."""

    images: np.ndarray  # uint8 [N, S, S, 3]
    labels: np.ndarray  # int64 [N]
    class_names: tuple[str, ...]
    names: list[str]  # stable ids: path relative to the root (or simulator stem)
    sha256: list[str]
    masks: np.ndarray | None = None  # bool [N, S, S] where every image has one
    groups: list[str] | None = None
    source: str = ""
    # "crop": flat edge bands were cut off before resizing (part of what the pixels are)
    padding: str = "keep"

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx) -> ImageSet:
        idx = np.asarray(idx, dtype=np.int64)
        return dataclasses.replace(
            self,
            images=self.images[idx],
            labels=self.labels[idx],
            names=[self.names[i] for i in idx],
            sha256=[self.sha256[i] for i in idx],
            masks=None if self.masks is None else self.masks[idx],
            groups=None if self.groups is None else [self.groups[i] for i in idx],
        )

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.class_names)}

    def tensors(self):
        """(images float [-1,1] NCHW, labels, masks float {0,1} N1HW or None) as torch tensors."""
        import torch

        x = torch.from_numpy(self.images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        y = torch.from_numpy(self.labels)
        m = None if self.masks is None else torch.from_numpy(self.masks[:, None].astype(np.float32))
        return x, y, m


def load_folder(
    root: str | Path,
    size: int,
    classes: list[str] | None = None,
    magnification: int | None = None,
    progress: bool = False,
    padding: str = "crop",
) -> ImageSet:
    """Read every image of a folder dataset into memory at `size` x `size` (and its masks).

    padding="crop" (default) cuts flat bands and scanner margins off each image (and its mask)
    before the resize, so a GAN never learns frames (see data/background.py); "keep" uses the
    images as they are. Names and sha256 stay those of the files either way.
    """
    from ..io import sha256_file
    from .background import check_padding_mode, crop_padding, detect_bands

    check_padding_mode(padding, "padding")
    root = Path(root)
    records = require_folder(root, classes, magnification)
    class_names = tuple(classes) if classes else tuple(sorted({r.cls for r in records}))
    imgs, masks, hashes = [], [], []
    n_cropped = 0
    for i, r in enumerate(records):
        rgb = read_rgb(r.path)
        bands = detect_bands(rgb) if padding == "crop" else None
        crop = bands is not None and bands.any() and not bands.flat
        n_cropped += crop
        imgs.append(fit_square(crop_padding(rgb, bands) if crop else rgb, size))
        hashes.append(sha256_file(r.path))
        if r.mask is not None:
            m = read_mask(r.mask)
            if crop and m.shape != rgb.shape[:2]:
                raise DataError(
                    f"{r.mask}: mask is {m.shape[1]}x{m.shape[0]} px but its image is "
                    f"{rgb.shape[1]}x{rgb.shape[0]}; masks must match their images pixel for pixel"
                )
            masks.append(fit_square(crop_padding(m, bands) if crop else m, size, nearest=True))
        if progress and (i + 1) % 50 == 0:
            import sys

            print(f"[data] read {i + 1}/{len(records)} images from {root}", file=sys.stderr)
    if progress and n_cropped:
        import sys

        print(
            f"[data] cut flat padding bands off {n_cropped}/{len(records)} images (padding=crop)",
            file=sys.stderr,
        )
    all_masks = len(masks) == len(records)
    return ImageSet(
        images=np.stack(imgs),
        labels=np.array([class_names.index(r.cls) for r in records], dtype=np.int64),
        class_names=class_names,
        names=[str(r.path.relative_to(root)) for r in records],
        sha256=hashes,
        masks=np.stack(masks) if all_masks else None,
        groups=[r.group or str(r.path.relative_to(root)) for r in records],
        source=str(root.resolve()),
        padding=padding,
    )
