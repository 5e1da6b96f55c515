"""Report sections of the histology→cytology study: the FID/KID table with the real-histology
baseline row, a bar chart of it per class, the translated grids, and (when the translators'
settings were searched) each translator's validation FID against its settings."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from ..metrics import names
from ..metrics.fidelity_stats import KID_NO_SPREAD, kid_text_of
from . import figures, realism
from .common import fmt, number, run_images, split_protocol, trial_status
from .html import Page
from .store import Recorded

# the prefixes of the per-class names (`<prefix>/<class>`)
FID, KID, KID_SD = (
    n.rsplit("/", 1)[0] for n in (names.FID_TEST, names.KID_TEST, names.kid("test", part="std"))
)


def table_rows(rec: Recorded) -> list[str]:
    """The rows the study logged (`<row>/fid_test_inception/all`), the histology baseline first."""
    rows = sorted({k.split("/", 1)[0] for k in rec.metrics if k.endswith(f"/{FID}/all")})
    return sorted(rows, key=lambda r: (r != "histology", r))


def labels(rec: Recorded, rows: list[str]) -> dict[str, str]:
    """Each row's label as the study printed it (its result run's name), e.g. 'NST [inception]'."""
    out = {r: ("real histology" if r == "histology" else r) for r in rows}
    for run in rec.results:
        v = run.data.tags.get("variant")
        if v in out and run.info.run_name.startswith("result: "):
            out[v] = run.info.run_name[len("result: ") :]
    return out


def build(rec: Recorded, page: Page, tmp: Path) -> None:
    rows = table_rows(rec)
    if not rows:
        page.p("The study recorded no FID/KID rows (it did not reach its final table).")
        return
    lab = labels(rec, rows)
    m = rec.metrics
    classes = sorted(
        {k.rsplit("/", 1)[1] for k in m if k.startswith(f"{rows[0]}/{FID}/")} - {"all"}
    )
    groups = [*classes, "all"]
    n = {c: m.get(f"{rows[0]}/{FID}_n_real/{c}") for c in groups}
    proto = (
        f"Split protocol: {split_protocol(rec, 1)}; histology: "
        f"{rec.param('source.root') or 'embedded simulator'}. Every row is computed from the "
        "same held-out histology test images against the real cytology test split (real "
        f"images per class: {', '.join(f'{c} {int(v)}' for c, v in n.items() if v) or '?'}); "
        "InceptionV3 pool features, each image to 299 px. The "
        "real-histology row is the baseline a translator must beat."
    )
    floors = {c: m.get(f"histology/{FID}_floor/{c}") for c in groups}
    floor_txt = ", ".join(f"{c} {v:.1f}" for c, v in floors.items() if v is not None)
    page.h2("FID / KID against real cytology (test split)")
    body = [
        [
            lab[r],
            *(fmt(m.get(f"{r}/{FID}/{c}"), 4) for c in groups),
            *(kid_text_of(m, f"{r}/{KID}/{c}") if f"{r}/{KID}/{c}" in m else "—" for c in groups),
        ]
        for r in rows
    ]
    page.table(
        ["row", *(f"FID {c}" for c in groups), *(f"KID {c}" for c in groups)],
        body,
        proto
        + f" {KID_NO_SPREAD}."
        + (
            f" Real-vs-real floor (two seeded halves of the real test images): FID {floor_txt}."
            if floor_txt
            else ""
        ),
        ["best" if r == min(rows, key=lambda r: m[f"{r}/{FID}/all"]) else "" for r in rows],
    )
    short = {
        r: re.sub(r":sha1=[0-9a-f]+", "", lab[r]) for r in rows
    }  # the extractor's hash is in the table, not the legend
    values = {
        (c, short[r]): (m[f"{r}/{FID}/{c}"], float("nan"))
        for r in rows
        for c in groups
        if f"{r}/{FID}/{c}" in m
    }
    series = [short[r] for r in rows]
    if floor_txt:
        values.update(
            {
                (c, "real-vs-real floor"): (v, float("nan"))
                for c, v in floors.items()
                if v is not None
            }
        )
        series.append("real-vs-real floor")
    fig = figures.grouped_bars(
        groups, series, values, "FID (lower is better)", "FID against real cytology, per class"
    )
    page.figure(fig, "fid_rows", proto)
    for (
        r
    ) in rows:  # why each row scores as it does: realism (precision) and variety (recall, coverage)
        realism.table(
            page,
            {k[len(r) + 1 :]: v for k, v in m.items() if k.startswith(f"{r}/")},
            "test",
            lab[r],
        )
    for _, img in run_images(
        rec, rec.parent, "results", tmp
    ):  # results/<class>.png: one row per translator
        page.image(
            img,
            f"class {img.stem}: the same test histology images (top row) "
            "and each translator's output, row by row in the table's order.",
            name=f"translated_{img.name}",
        )
    if rec.children:
        search_section(rec, page)


def search_section(rec: Recorded, page: Page) -> None:
    """Each translator's validation FID against its searched settings (a translator's settings only move its own FID)."""
    try:
        variants = [str(v) for v in ast.literal_eval(rec.param("variants", "[]"))]
    except (ValueError, SyntaxError):
        variants = []
    metrics = [f"{v}/fid_val_inception/all" for v in variants]
    runs = rec.children
    keys = sorted({k for r in runs for k, v in r.data.params.items() if number(v) is not None})
    page.h2(f"Search ({len(runs)} trials; validation FID per translator)")
    page.table(
        ["trial", "status", *keys, *metrics],
        [
            [
                r.info.run_name,
                trial_status(r),
                *(fmt(number(r.data.params.get(k))) for k in keys),
                *(fmt(r.data.metrics.get(mk)) for mk in metrics),
            ]
            for r in runs
        ],
        "Each trial trains every translator with its settings; each translator "
        "then takes its own best trial (their settings are disjoint). Split "
        f"protocol: {split_protocol(rec, 1)}; FID on the validation split.",
        left=2,
    )
    for v, mk in zip(variants, metrics):
        own = [k for k in keys if k.startswith(f"generators.{v}.")]
        pts = [
            {
                "settings": {k: number(r.data.params.get(k)) for k in own},
                "y": r.data.metrics.get(mk),
                "status": trial_status(r),
            }
            for r in runs
        ]
        done = [p for p in pts if p["y"] is not None and p["status"] == "finished"]
        if own and done:
            min(done, key=lambda p: p["y"])["best"] = True
            fig = figures.settings_scatter(
                pts, own, mk, f"{v}: validation FID against its settings"
            )
            page.figure(
                fig,
                f"search_{v}",
                f"One dot per trial; gold star: {v}'s chosen trial (lowest validation FID).",
            )
