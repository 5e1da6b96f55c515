"""`cytoray report`: one self-contained HTML page and its PNG/SVG figures, built only from what
MLflow recorded for a study (so it works for a study that ran on a cluster last month).

    cytoray report --experiment syncgan_ratio --tracking-uri sqlite:///runs/mlflow.db --out runs/report

Every study builds it at its end too (`study_report`, from the driver) into `<out>/report/` and
logs it to its parent run: `report/report.html`, and each figure through `log_figure` so the
MLflow UI shows it on the run's artefacts tab.

What a report holds, by study kind:
- ratio / stabilisers (`search.py`): trials table, metric against each searched setting, FID
  against the metric with the Pareto front, the best trial's learning curves, real vs synthetic
  images per class for the best and the worst trial;
- baselines (`baselines.py`): SynCGAN Tables 2 and 3 (mean ± 95% CI, paired tests vs orig,
  Holm), opened by one verdict per policy and the paired-difference figure, FID/KID per policy;
- histology→cytology (`histo.py`): the FID/KID table with the real-histology baseline row, its
  bar chart, the translated grids, and the search when there was one.
- refined segmentation (`segmentation.py`): the comparison table (in the run's description), its
  methods' test Dice with 95% CIs and paired tests as a figure, then the search as for ratio.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from ..errors import CytorayError

REPORT_DIR = "report"  # artefact folder of the parent run, and sub-folder of a study's --out


def _sections(kind: str):
    from . import baselines, histo, search, segmentation

    return {
        "ratio": search.build,
        "stabilisers": search.build,
        "segmentation": segmentation.build,
        "baselines": baselines.build,
        "histo_to_cyto": histo.build,
    }[kind]


def build_report(
    experiment: str,
    out: str | Path,
    tracking_uri: str | None = None,
    run_id: str | None = None,
    log: bool = False,
) -> Path:
    """Write `<out>/report.html` and `<out>/figures/` for the study (newest parent run, or
    `run_id`) in `experiment`; with `log`, attach both to that parent run. Returns the page."""
    from ..io import atomic_dir
    from .html import Page, esc
    from .store import load, study_dir

    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()) and not (out / "report.html").is_file():
        raise CytorayError(
            f"{out}: folder exists and holds no cytoray report; choose an empty or new --out"
        )
    rec = load(experiment, tracking_uri, run_id)
    p = rec.parent
    figs: list = []
    with (
        atomic_dir(out, overwrite=True) as tmp_out,
        tempfile.TemporaryDirectory() as dl,
    ):  # all or nothing
        page = Page(f"{experiment} — {rec.kind.replace('_', ' ')} study", tmp_out)
        desc = p.data.tags.get("mlflow.note.content")
        if desc:
            page.raw(f"<div class=desc>{esc(desc)}</div>")
        _sections(rec.kind)(rec, page, Path(dl))
        # a visual Turing test scored onto a run, when there is one
        from .turing import (
            build as turing_section,
        )

        turing_section(rec, page, Path(dl))
        figs = [(f, name) for f, name in page.figures]
        secs = rec.metrics.get("study_seconds")
        page.write(
            [
                f"MLflow: {rec.uri}, experiment {experiment!r} "
                f"({rec.experiment.experiment_id}), parent run "
                f"{p.info.run_id}{'' if p.info.status == 'RUNNING' else f' ({p.info.status.lower()})'}, {len(rec.children)} trial runs"
                + (f", {secs / 60:.1f} min" if secs else ""),
                f"study folder: {study_dir(rec) or '?'}",
            ]
        )
        files = [f.relative_to(tmp_out) for f in page.files]
    if log:
        publish(rec, out, figs, files)
    return out / "report.html"


def publish(rec, out: Path, figs: list, files: list[Path]) -> None:
    """The page and its SVGs/grids as artefacts under `report/`, each matplotlib figure through
    `log_figure` (the PNG the UI previews)."""
    rid = rec.parent.info.run_id
    logged = set()
    for fig, name in figs:
        rec.client.log_figure(rid, fig, f"{REPORT_DIR}/figures/{name}.png")
        logged.add(f"figures/{name}.png")
    rec.client.log_artifact(rid, str(out / "report.html"), REPORT_DIR)
    for f in files:
        if str(f) not in logged:
            rec.client.log_artifact(rid, str(out / f), f"{REPORT_DIR}/{f.parent}")


def study_report(experiment: str, tracking_uri: str, parent: str, out: Path) -> str | None:
    """(driver, end of a study) Build the report into `out` and log it to the parent run. A
    failure here is reported, not raised: the study's results are already recorded."""
    try:
        path = build_report(experiment, out, tracking_uri, parent, log=True)
    except Exception as e:  # noqa: BLE001 — never lose a finished study to its report
        print(
            f"[report] not written: {type(e).__name__}: {e}; rebuild it with `cytoray "
            f"report --experiment {experiment} --tracking-uri {tracking_uri} --out {out}`",
            file=sys.stderr,
        )
        return None
    return str(path)


def report_from_args(a) -> int:
    """`cytoray report` (argparse namespace: experiment, tracking_uri, out, run_id, log)."""
    path = build_report(a.experiment, a.out, a.tracking_uri, a.run_id, log=a.log)
    print(f"report: {path}")
    return 0
