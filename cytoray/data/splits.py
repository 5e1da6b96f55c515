"""Stratified, seeded train/val/test splits saved as a JSON manifest, with a leakage guard.

Every variant of a study reads the same manifest, so every policy sees the same split.
Exact duplicates (sha256) and near-duplicates (perceptual hash within a few bits) are kept
in one split group when splitting, and a manifest whose splits share such a pair is refused
with both files named.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io import stable_hash, write_json
from .folder import ImageSet

SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------- hashing


def phash64(images: np.ndarray) -> np.ndarray:
    """64-bit perceptual hashes (imagehash.phash) of uint8 [N,H,W,3] images, as uint64."""
    import imagehash
    from PIL import Image

    out = np.empty(len(images), dtype=np.uint64)
    for i, im in enumerate(images):
        bits = imagehash.phash(Image.fromarray(im)).hash.flatten()
        out[i] = np.packbits(bits.astype(np.uint8)).view(">u8")[0]
    return out


def duplicate_pairs(
    sha: list[str], phash: np.ndarray | None, max_bits: int
) -> list[tuple[int, int, str]]:
    """All (i, j, 'exact'|'near') pairs, i < j: equal sha256, or (given hashes) phash within `max_bits`."""
    found: dict[tuple[int, int], str] = {}
    by_sha: dict[str, list[int]] = {}
    for i, h in enumerate(sha):
        by_sha.setdefault(h, []).append(i)
    for idx in by_sha.values():
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                found[(idx[a], idx[b])] = "exact"
    if phash is not None:
        for i in range(len(sha) - 1):  # vectorised XOR + popcount against the rest
            dist = np.bitwise_count(phash[i] ^ phash[i + 1 :])
            for k in np.nonzero(dist <= max_bits)[0]:
                found.setdefault((i, i + 1 + int(k)), "near")
    return sorted((i, j, kind) for (i, j), kind in found.items())


def _union_groups(n: int, base: list[str] | None, pairs) -> np.ndarray:
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    if base is not None:
        first: dict[str, int] = {}
        for i, g in enumerate(base):
            parent[find(i)] = find(first.setdefault(g, i))
    for i, j, _ in pairs:
        parent[find(i)] = find(j)
    return np.array([find(i) for i in range(n)])


# ----------------------------------------------------------------------------- splitting


def _allocate(n: int, ratios: list[float]) -> list[int]:
    """Largest-remainder allocation of n items to splits; every split with ratio > 0 gets >= 1."""
    r = np.asarray(ratios, dtype=float) / sum(ratios)
    raw = r * n
    counts = np.floor(raw).astype(int)
    for k in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[k] += 1
    for k in range(len(r)):  # steal from the largest so each non-empty split is used
        if r[k] > 0 and counts[k] == 0:
            counts[np.argmax(counts)] -= 1
            counts[k] += 1
    return counts.tolist()


def stratified_split(
    labels: np.ndarray,
    class_names: tuple[str, ...],
    ratios: list[float],
    seed: int,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Assign 'train'/'val'/'test' per item, stratified by class, whole groups together."""
    labels = np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    need = sum(1 for r in ratios if r > 0)
    out = np.empty(len(labels), dtype=object)
    rng = np.random.default_rng(seed)
    for c, name in enumerate(class_names):
        idx = np.nonzero(labels == c)[0]
        gids = np.unique(groups[idx])
        if len(gids) < need:
            ratio_txt = ":".join(f"{r:g}" for r in ratios)
            raise DataError(
                f"class '{name}' has {len(idx)} images in {len(gids)} independent "
                f"groups, too few for split ratios {ratio_txt} (needs at least "
                f"{need}); add images to '{name}' or change data.split_ratios"
            )
        gids = rng.permutation(gids)
        counts = _allocate(len(gids), ratios)
        start = 0
        for split, k in zip(SPLITS, counts):
            for g in gids[start : start + k]:
                out[idx[groups[idx] == g]] = split
            start += k
    return out


# ----------------------------------------------------------------------------- manifest


@dataclasses.dataclass
class Manifest:
    source: str
    size: int
    seed: int
    ratios: list[float]
    class_names: list[str]
    items: list[dict]  # {"name", "class", "sha256", "split"}
    # how flat edge bands were handled when loading (the pixels differ, the files do not)
    padding: str = "crop"

    @property
    def hash(self) -> str:
        """Names, file hashes and splits, and how the images were loaded: everything cached downstream
        (stages, bundles, Inception features) keys on it."""
        return stable_hash(
            [(i["name"], i["sha256"], i["split"]) for i in self.items] + [self.size, self.padding]
        )

    def indices(self, split: str) -> np.ndarray:
        return np.array(
            [k for k, it in enumerate(self.items) if it["split"] == split], dtype=np.int64
        )

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["manifest_hash"] = self.hash
        d["version"] = 1
        return d

    def save(self, path: str | Path) -> Path:
        write_json(path, self.to_json())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
            d.pop("manifest_hash", None)
            d.pop("version", None)
            return cls(**d)
        except FileNotFoundError:
            raise DataError(
                f"{path}: manifest not found; create one with a study run or `cytoray split`"
            ) from None
        except (json.JSONDecodeError, TypeError) as e:
            raise DataError(
                f"{path}: not a cytoray split manifest ({e}); delete it to make a new split"
            ) from None


def _duplicate_groups(ds: ImageSet, near_bits: int) -> tuple[np.ndarray, list, np.ndarray]:
    """Perceptual hashes, duplicate pairs (refused across classes) and the groups a split keeps together."""
    ph = phash64(ds.images)
    pairs = duplicate_pairs(ds.sha256, ph, near_bits)
    for i, j, kind in pairs:
        if ds.labels[i] != ds.labels[j]:
            raise DataError(
                f"{ds.names[i]} and {ds.names[j]} are {kind} duplicates "
                f"with different classes ('{ds.class_names[ds.labels[i]]}' "
                f"vs '{ds.class_names[ds.labels[j]]}'); remove one of them"
            )
    return ph, pairs, _union_groups(len(ds), ds.groups, pairs)


def make_manifest(
    ds: ImageSet, ratios: list[float], seed: int, near_bits: int = 4
) -> tuple[Manifest, list]:
    """Split `ds` (duplicates kept together), check leakage, return the manifest and the duplicate pairs."""
    ph, pairs, groups = _duplicate_groups(ds, near_bits)
    return _split_manifest(ds, ratios, seed, near_bits, ph, groups), pairs


def _split_manifest(
    ds: ImageSet, ratios: list[float], seed: int, near_bits: int, ph: np.ndarray, groups: np.ndarray
) -> Manifest:
    split = stratified_split(ds.labels, ds.class_names, ratios, seed, groups)
    items = [
        {"name": n, "class": ds.class_names[c], "sha256": h, "split": s}
        for n, c, h, s in zip(ds.names, ds.labels.tolist(), ds.sha256, split)
    ]
    m = Manifest(
        ds.source,
        int(ds.images.shape[1]),
        seed,
        list(ratios),
        list(ds.class_names),
        items,
        getattr(ds, "padding", "crop"),
    )
    check_leakage(m, ph, near_bits)
    return m


def check_leakage(m: Manifest, phash: np.ndarray | None = None, near_bits: int = 4) -> None:
    """Refuse a manifest whose splits share identical (or, given hashes, near-identical) images."""
    for i, j, kind in duplicate_pairs([it["sha256"] for it in m.items], phash, near_bits):
        a, b = m.items[i], m.items[j]
        if a["split"] != b["split"]:
            raise DataError(
                f"leakage: {a['name']} ({a['split']}) and {b['name']} ({b['split']}) are "
                f"{kind} duplicates in different splits; remove one of them or make a new split"
            )


def repeated_manifests(
    ds: ImageSet, ratios: list[float], seed: int, k: int, near_bits: int = 4
) -> list[Manifest]:
    """K seeded stratified splits (seeds seed..seed+k-1) for repeated evaluation.

    The K splits must differ: a set so small that two seeds give the same assignment would
    count one split twice and make the intervals and paired tests look surer than they are.
    """
    ph, _, groups = _duplicate_groups(ds, near_bits)  # seed-independent: found once for all K
    mans = [_split_manifest(ds, ratios, seed + r, near_bits, ph, groups) for r in range(k)]
    first: dict[str, int] = {}
    for r, m in enumerate(mans):
        if m.hash in first:
            per_class = ", ".join(
                f"{c} {int(np.sum(ds.labels == i))}" for i, c in enumerate(ds.class_names)
            )
            raise DataError(
                f"{ds.source}: split seeds {seed + first[m.hash]} and {seed + r} "
                f"give the same split ({per_class} images), so the data is too "
                f"small for {k} distinct repeats; add images or lower data.n_splits"
            )
        first[m.hash] = r
    return mans
