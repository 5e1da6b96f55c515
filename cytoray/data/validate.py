"""`cytoray validate DIR`: is this folder usable as a dataset, and if not, what exactly is wrong."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io import sha256_file
from .background import detect_bands
from .folder import Problem, scan_folder
from .images import read_rgb
from .splits import SPLITS, _allocate, duplicate_pairs, phash64

# The documented minimum per class and split. train 2: the class-specific GANs and the classifier
# train in batches of at least 2 (BatchNorm), so one training image makes no optimiser step (the run
# would fail); val 1 and test 1: a class absent from a split has no per-class metric there.
MIN_PER_SPLIT = {"train": 2, "val": 1, "test": 1}
MINIMUM_TEXT = (
    "per class: train >= 2 (a batch of 2), val >= 1, test >= 1 when their ratio is above 0"
)


def parse_split(text: str, flag: str = "--split") -> list[float]:
    """'3:1:1' → [3.0, 1.0, 1.0]. Three finite weights in [0, 1000], train > 0 and val or test > 0,
    the smallest used one at least 1/1000 of the largest: anything else (nan, inf, 1e308, '3:x:1',
    0:0:0, '1:1') would loop, divide by zero or validate a split no study can make."""
    from ..errors import CytorayError

    bad = f"{flag} {text}: give three train:val:test weights like 3:1:1"
    parts = str(text).split(":")
    if len(parts) != 3:
        raise CytorayError(f"{bad} (got {len(parts)} part{'s' if len(parts) != 1 else ''})")
    try:
        ratios = [float(x) for x in parts]
    except ValueError:
        raise CytorayError(f"{bad} (each a number)") from None
    if not all(np.isfinite(r) and 0 <= r <= 1000 for r in ratios):
        raise CytorayError(f"{bad} (each a finite number from 0 to 1000)")
    used = [r for r in ratios if r > 0]
    if ratios[0] <= 0 or len(used) < 2:
        raise CytorayError(
            f"{bad} (train above 0, and val or test above "
            "0: a study selects on val and reports test)"
        )
    if min(used) * 1000 < max(used):
        raise CytorayError(f"{bad} (the smallest used weight at least 1/1000 of the largest)")
    return ratios


def split_shortfall(n: int, ratios) -> str | None:
    """'train 1, val 1, test 1' when the split protocol leaves a split of one class below its
    minimum (MIN_PER_SPLIT; splits with ratio 0 are not used); None when it is enough."""
    used = sum(1 for x in ratios if x > 0)
    if n < used:
        return f"{n} image(s) for {used} splits"
    counts = _allocate(n, list(ratios))
    low = any(r > 0 and c < MIN_PER_SPLIT[s] for s, c, r in zip(SPLITS, counts, ratios))
    return (
        ", ".join(f"{s} {c}" for s, c, r in zip(SPLITS, counts, ratios) if r > 0) if low else None
    )


def min_images(ratios) -> int:
    """The fewest images per class for which the split protocol meets MIN_PER_SPLIT."""
    n = 1
    while split_shortfall(n, ratios):
        n += 1
    return n


def validate_folder(
    root: str | Path,
    ratios: list[float] = (3.0, 1.0, 1.0),
    magnification: int | None = None,
    near_bits: int = 4,
    progress: bool = False,
) -> dict:
    """Scan and read every image; return a JSON-able report. `usable` is False if any problem."""
    import sys

    root = Path(root)
    records, problems = scan_folder(root, magnification=magnification)
    sizes: Counter = Counter()
    ok, hashes, thumbs, padded, mask_notes = [], [], [], [], []
    for k, r in enumerate(records):
        try:
            arr = read_rgb(r.path)
        except DataError as e:
            problems.append(Problem(str(r.path), str(e).split(": ", 1)[-1]))
            continue
        sizes[f"{arr.shape[1]}x{arr.shape[0]}"] += 1
        bands = detect_bands(arr)
        if bands.flat:
            problems.append(
                Problem(str(r.path), "the image is one flat colour (no content); remove it")
            )
            continue
        if bands.any():
            padded.append({"file": str(r.path), **bands.as_dict(), "bands": bands.describe()})
        if r.mask is not None:
            bad = _mask_problem(r.mask, arr.shape[:2], mask_notes)
            if bad:
                problems.append(Problem(str(r.mask), bad))
                continue
        ok.append(r)
        hashes.append(sha256_file(r.path))
        from .images import fit_square

        thumbs.append(fit_square(arr, 64))
        if progress and (k + 1) % 100 == 0:
            print(f"[validate] read {k + 1}/{len(records)}", file=sys.stderr)

    counts = Counter(r.cls for r in ok)
    rtxt = ":".join(f"{x:g}" for x in ratios)
    for cls, n in sorted(counts.items()):
        short = split_shortfall(n, ratios)
        if short:
            problems.append(
                Problem(
                    str(root / cls),
                    f"class has {n} readable images, too few for a {rtxt} split: it gives {short}; "
                    f"needs at least {min_images(ratios)} images ({MINIMUM_TEXT}); add images",
                )
            )
    if len(counts) < 2 and records and not any("two class" in p.problem for p in problems):
        problems.append(
            Problem(
                str(root),
                "needs at least two classes with readable "
                f"images (found: {', '.join(counts) or 'none'})",
            )
        )

    duplicates = []
    if ok:
        for i, j, kind in duplicate_pairs(hashes, phash64(np.stack(thumbs)), near_bits):
            a, b = ok[i], ok[j]
            duplicates.append({"a": str(a.path), "b": str(b.path), "kind": kind})
            if a.cls != b.cls:
                problems.append(
                    Problem(
                        str(a.path),
                        f"{kind} duplicate of {b.path} but labelled "
                        f"'{a.cls}' vs '{b.cls}'; remove one",
                    )
                )

    mags = Counter(r.magnification for r in ok if r.magnification)
    return {
        "root": str(root),
        "classes": {c: counts.get(c, 0) for c in sorted({r.cls for r in records} | set(counts))},
        "n_images": len(ok),
        "image_sizes": dict(sizes.most_common()),
        "magnifications": {f"{m}X": n for m, n in sorted(mags.items())},
        "masks": sum(1 for r in ok if r.mask is not None),
        # Flat bands at the edges (padding to a square, scanner margins): not a problem, since
        # masks exclude them and loading crops them off (padding=crop), but the user should know.
        "padding": {"images": len(padded), "examples": padded[:10]},
        # Masks that load but may not say what the user
        # meant (lossy JPEG, grey levels read as nucleus).
        "mask_notes": mask_notes,
        "duplicates": duplicates,
        "problems": [{"file": p.file, "problem": p.problem} for p in problems],
        "split_ratios": list(ratios),
        "splits": list(SPLITS),
        "usable": not problems,
    }


def _mask_problem(path: Path, hw: tuple[int, int], notes: list) -> str | None:
    """A ground-truth mask of another size than its image is a problem (the loader refuses it);
    a JPEG mask or one with grey levels loads (nonzero = nucleus) but is noted: JPEG noise around
    the edges, or a greyscale picture, turns faint pixels into nucleus."""
    from .images import read_mask

    try:
        m = read_mask(path)
    except DataError as e:
        return str(e).split(": ", 1)[-1]
    if m.shape != hw:
        return f"mask is {m.shape[1]}x{m.shape[0]} px but its image is {hw[1]}x{hw[0]}; re-export the mask at the image's size"
    if path.suffix.lower() in (".jpg", ".jpeg"):
        notes.append(
            {
                "file": str(path),
                "note": "a JPEG mask: lossy compression blurs its edges into grey values that count as "
                "nucleus; save masks as PNG (0 = background, 255 = nucleus)",
            }
        )
        return None
    from PIL import Image

    with Image.open(path) as im:
        grey = np.asarray(im.convert("L")) if im.mode in ("L", "LA", "RGB", "RGBA", "P") else None
    if grey is not None:
        fg = grey[grey > 0]
        if fg.size and np.unique(fg).size > 2 and np.mean(fg < 128) > 0.01:
            notes.append(
                {
                    "file": str(path),
                    "note": f"grey levels ({np.unique(grey).size} values): every nonzero pixel counts as "
                    "nucleus; save a binary mask (0 / 255)",
                }
            )
    return None


def format_report(rep: dict) -> str:
    lines = [f"dataset {rep['root']}: {rep['n_images']} readable images"]
    for c, n in rep["classes"].items():
        lines.append(f"  {c:<20} {n:>6}")
    if rep["image_sizes"]:
        lines.append(
            "  sizes: " + ", ".join(f"{s} ({n})" for s, n in list(rep["image_sizes"].items())[:5])
        )
    if rep["magnifications"]:
        lines.append(
            "  BreakHis magnifications: "
            + ", ".join(f"{m} ({n})" for m, n in rep["magnifications"].items())
        )
    lines.append(f"  nucleus masks: {rep['masks']}")
    pad = rep.get("padding") or {"images": 0, "examples": []}
    if pad["images"]:
        ex = pad["examples"][0]
        lines.append(
            f"  padding bands: {pad['images']} of {rep['n_images']} images "
            f"(e.g. {Path(ex['file']).name}: {ex['bands']}); nucleus masks "
            "exclude them and training crops cut them off (padding=crop)"
        )
    for d in rep["duplicates"][:20]:
        lines.append(
            f"  duplicate ({d['kind']}): {d['a']} ~ {d['b']} (kept in one split when splitting)"
        )
    for n in rep.get("mask_notes", [])[:20]:
        lines.append(f"  NOTE {n['file']}: {n['note']}")
    for p in rep["problems"]:
        lines.append(f"  PROBLEM {p['file']}: {p['problem']}")
    lines.append("usable" if rep["usable"] else f"NOT usable: {len(rep['problems'])} problem(s)")
    return "\n".join(lines)
