"""Small pieces every report section shares: the split-protocol sentence under each table, the
data source, number formatting, a trial's status, and MLflow image artefacts put on the page."""

from __future__ import annotations

import ast
import math
from pathlib import Path

from ..metrics import names
from .store import Recorded

FID_ALL, MASK_FID_ALL = names.FID_VAL, names.MASK_FID_VAL


def fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def number(text: str | None) -> float | None:
    """A recorded param as a number, or None for text ('scratch', 'None', a list)."""
    try:
        v = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def data_source(rec: Recorded, prefix: str = "data") -> str:
    root = rec.param(f"{prefix}.root")
    if root and root != "None":
        return root
    # The simulator's domain as recorded (data.sim_kind); without it,
    # what that study ran: the segmentation study (before it recorded
    # the key) simulated H&E, every other one the default, cytology.
    kind = rec.param(f"{prefix}.sim_kind") or (
        "histology" if rec.kind == "segmentation" else "cytology"
    )
    # the segmentation study's unit is a tile
    size = rec.param(f"{prefix}.size") or rec.param(f"{prefix}.tile", "?")
    return (
        f"embedded simulator ({kind}, n={rec.param(f'{prefix}.sim_n', '?')}, "
        f"seed {rec.param(f'{prefix}.sim_seed', '?')}, {size} px)"
    )


def split_protocol(rec: Recorded, n_splits: int | None = None) -> str:
    """'stratified 3:1:1 train:val:test split, seed 0, 1 split' from the recorded config."""
    try:
        ratios = ":".join(
            f"{float(r):g}" for r in ast.literal_eval(rec.param("data.split_ratios", "[3, 1, 1]"))
        )
    except (ValueError, SyntaxError):
        ratios = rec.param("data.split_ratios", "?")
    k = n_splits if n_splits is not None else int(number(rec.param("data.n_splits")) or 1)
    seed = rec.param("data.split_seed", "0")
    seeds = f"seed {seed}" if k == 1 else f"seeds {seed}..{int(number(seed) or 0) + k - 1}"
    # tiles of one image never straddle splits
    how = "by source image" if rec.kind == "segmentation" else "stratified"
    return f"{how} {ratios} train:val:test split, {seeds}, {k} split{'s' if k != 1 else ''}; data: {data_source(rec)}"


def trial_status(run) -> str:
    """finished (its final report arrived), stopped at epoch k (ASHA), or the run's own status."""
    m = run.data.metrics
    if run.info.status == "FAILED":
        return "failed"
    if m.get(names.FINAL) == 1:
        return "finished"
    if "epoch" in m:
        return f"stopped at epoch {int(m['epoch']) + 1}"
    return run.info.status.lower()


def run_images(
    rec: Recorded, run, folder: str, tmp: Path, prefix: str = ""
) -> list[tuple[str, Path]]:
    """(artefact path, local copy) of each PNG artefact of a run under `folder` (recursively; the
    root alone for folder ""), whose file name starts with `prefix` (empty list if none)."""
    rid = run.info.run_id
    paths = (
        rec.artifacts(rid, folder)
        if folder
        else [f.path for f in rec.client.list_artifacts(rid) if f.path.endswith(".png")]
    )
    return [
        (p, rec.download(rid, p, tmp / rid / Path(p).parent))
        for p in paths
        if Path(p).name.startswith(prefix)
    ]


def pooled(keys, prefix: str = "") -> list[str]:
    """Headline figures among metric keys: plain scores and the pooled ('/all') FID/KID means."""
    out = []
    for k in keys:
        rest = k[len(prefix) :] if k.startswith(prefix) else None
        if rest is None:
            continue
        if "/" not in rest or (
            rest.endswith("/all")
            and any(rest.startswith(s) for s in ("fid_", "kid_"))
            and not any(w in rest for w in ("_n_", "floor", "std", "subset"))
        ):
            out.append(k)
    return sorted(out)
