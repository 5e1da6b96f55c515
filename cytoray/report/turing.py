"""Report section: the visual Turing test, when one was scored onto a run of the study.

Read from MLflow alone: any run of the study (the parent, a trial, a result row) that holds the
pooled `turing_accuracy` metric logged by `cytoray turing score --log`, with its `turing/scores.json`
artefact for the per-reader rows. A study without a reading shows nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..turing.score import ARTIFACT_DIR, HEADER, rows
from .html import Page
from .store import Recorded

METRIC = "turing_accuracy"


def build(rec: Recorded, page: Page, tmp: Path) -> None:
    runs = [r for r in [rec.parent, *rec.children, *rec.results] if METRIC in r.data.metrics]
    if not runs:
        return
    page.h2("Visual Turing test")
    for r in runs:
        rid = r.info.run_id
        name = r.info.run_name or rid
        if f"{ARTIFACT_DIR}/scores.json" in {
            f.path for f in rec.client.list_artifacts(rid, ARTIFACT_DIR)
        }:
            s = json.loads(
                rec.download(rid, f"{ARTIFACT_DIR}/scores.json", tmp / "turing" / rid).read_text()
            )
            ag = s["agreement"]
            kappa = (
                f"; agreement {ag['method']} kappa {ag['kappa']:.2f} on {ag['images']} images"
                if ag["method"]
                else ""
            )
            page.table(
                HEADER,
                rows(s),
                f"Run {name}: {s['images']} blinded images, half real (test split), "
                f"half synthetic ({s['generator']}). Accuracy of the real/synthetic "
                "call with exact 95% interval; p: two-sided exact binomial test "
                f"against chance; synthetic is the positive class{kappa}. 50% means "
                "readers could not tell the synthetic images from the real ones.",
            )
        else:  # the metrics alone (an artefact store the report cannot read)
            m = r.data.metrics
            page.p(
                f"Run {name}: accuracy {100 * m[METRIC]:.0f}% "
                f"[{100 * m.get('turing_accuracy_ci_low', float('nan')):.0f}%, "
                f"{100 * m.get('turing_accuracy_ci_high', float('nan')):.0f}%], "
                f"p {m.get('turing_p_value', float('nan')):.3f}"
            )
