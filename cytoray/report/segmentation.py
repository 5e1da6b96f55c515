"""Report sections of the refined-segmentation study (Hou et al. 2019): its comparison table's
methods as a figure (test Dice, mean ± 95% CI over the seeded splits, each split a dot, the
paired test of refined + hard examples against each), then the search (search.py).

The figure's numbers are the study's own `comparison.json`, the parent run's artefact, so the
figure and the table in the run's description agree to the digit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from . import figures, search
from .common import data_source
from .html import Page
from .store import Recorded

COMPARISON = "comparison.json"  # logged to the parent run by experiments/segmentation.py (finish)


def comparison(rec: Recorded, tmp: Path) -> dict | None:
    """The study's comparison (scores per method and split, intervals, paired tests), or None when
    the study ran without one (compare=false) or was stopped before it."""
    rid = rec.parent.info.run_id
    if COMPARISON not in {f.path for f in rec.client.list_artifacts(rid)}:
        return None
    return json.loads(rec.download(rid, COMPARISON, tmp / "comparison").read_text())


# The segmentation study's methods (experiments/segmentation.py scores
# each), as the table names them, and the one the others are tested against.
ROWS = {
    "otsu": "Otsu on haematoxylin (floor)",
    "syncgan_masks": "SynCGAN unsupervised masks",
    "raw": "segmenter on raw simulation",
    "refined": "segmenter on refined simulation",
    "refined_hard": "segmenter on refined + hard examples",
}
PROPOSED = "refined_hard"


def _p(t: dict | None) -> str:
    if t is None:
        return ""
    p = t.get("p_holm", float("nan"))
    return (
        "p=n/a"
        if not math.isfinite(p)
        else "p<0.001"
        if p < 0.001
        else f"p={p:.3f}"
        if p < 0.01
        else f"p={p:.2f}"
    )


def build(rec: Recorded, page: Page, tmp: Path) -> None:
    c = comparison(rec, tmp)
    if c is not None:
        rows = [r for r in ROWS if r in c["cells"]]
        labels = [
            f"{ROWS[r]} ({c.get('syncgan_method', '?')})" if r == "syncgan_masks" else ROWS[r]
            for r in rows
        ]
        notes = [
            "(proposed)"
            if r == PROPOSED
            else f"Δ {100 * t['mean_diff']:+.1f}, {_p(t)}"
            if (t := c["tests"].get(r))
            else ""
            for r in rows
        ]
        fig = figures.method_intervals(
            labels,
            [c["cells"][r] for r in rows],
            [c["scores"][r] for r in rows],
            "test Dice (%)",
            "segmentation methods on the test tiles",
            notes,
        )
        page.h2("Methods on the test tiles")
        page.figure(
            fig,
            "methods_test_dice",
            "Test Dice pooled over each split's test tiles: bar = mean, whiskers = 95% "
            f"t-interval (cut at 0 and 100) over {c['n_splits']} seeded splits by source "
            "image, dots = the splits. Right: refined + hard examples minus the method "
            f"(points) and the paired t-test's Holm-adjusted p. Data: {data_source(rec)}.",
        )
    search.build(rec, page, tmp)
