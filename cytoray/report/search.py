"""Report sections of a searched study (the ratio study and the stabiliser study).

The trials table; the validation metric against each searched setting; validation FID against
the metric with the Pareto front (for the stabilisers: image FID against mask FID); the best
trial's learning curves (classifier epochs and the generator's stages); real vs synthetic
images per class for the best and the worst trial.
"""

from __future__ import annotations

from pathlib import Path

from ..metrics import names
from . import figures, realism
from .common import (
    FID_ALL,
    MASK_FID_ALL,
    fmt,
    number,
    pooled,
    run_images,
    split_protocol,
    trial_status,
)
from .html import Page
from .store import Recorded

SKIP_PARAMS = ("weights",)  # recorded beside the settings but not searched


def trial_points(rec: Recorded, metric: str, mode: str) -> list[dict]:
    """One dict per trial: its settings, selection figure, FIDs, status; best/worst marked."""
    pts = []
    for run in rec.children:
        m = run.data.metrics
        settings = {
            k: number(v)
            for k, v in run.data.params.items()
            if k not in SKIP_PARAMS and number(v) is not None
        }
        pts.append(
            {
                "run": run,
                "id": run.data.tags.get("cytoray.trial_id", run.info.run_id[:8]),
                "name": run.info.run_name,
                "status": trial_status(run),
                "settings": settings,
                "y": m.get(metric),
                "fid": m.get(FID_ALL),
                "mask_fid": m.get(MASK_FID_ALL),
                "m": m,
            }
        )
    done = [p for p in pts if p["status"] == "finished" and p["y"] is not None]
    sign = 1 if mode == "max" else -1
    done.sort(key=lambda p: -sign * p["y"])
    chosen = rec.parent.data.tags.get("cytoray.best_trial")
    best = next((p for p in done if p["id"] == chosen), done[0] if done else None)
    if best is not None:
        best["best"] = True
        # A tie with the best is not "worst": mark one only when it scored differently.
        worst = (
            done[-1]
            if len(done) > 1 and done[-1] is not best and done[-1]["y"] != best["y"]
            else None
        )
        if worst is not None:
            worst["worst"] = True
    ranked = done + [p for p in pts if p not in done]
    return ranked


def searched(points: list[dict]) -> list[str]:
    keys = sorted({k for p in points for k in p["settings"]})
    return [k for k in keys if len({p["settings"].get(k) for p in points}) > 1] or keys


def build(rec: Recorded, page: Page, tmp: Path) -> None:
    metric, mode = rec.param("tune.metric", FID_ALL), rec.param("tune.mode", "max")
    fidelity = rec.kind == "stabilisers"
    pts = trial_points(rec, metric, mode)
    if not pts:
        page.p("No trial runs were recorded under this study's parent run.")
        return
    keys = searched(pts)
    proto = (
        f"Split protocol: {split_protocol(rec, 1)}. Trials are selected on the "
        "validation split; the test split is scored once, for the chosen trial only."
    )
    # 1. The trials table, best first.
    extra = [("mask FID (val)", "mask_fid")] if any(p["mask_fid"] is not None for p in pts) else []
    short = [
        ".".join(k.split(".")[-2:]) for k in keys
    ]  # generator.cgan.lam -> cgan.lam: the table fits a page
    cols = (
        ["trial", "status", *short, metric]
        + ([] if metric == FID_ALL else [FID_ALL])
        + [c for c, _ in extra]
        + ["seconds"]
    )
    rows, classes = [], []
    for p in pts:
        row = [p["name"], p["status"], *(fmt(p["settings"].get(k)) for k in keys), fmt(p["y"])]
        row += [] if metric == FID_ALL else [fmt(p["fid"])]
        row += [fmt(p[k]) for _, k in extra] + [fmt(p["m"].get(names.TRIAL_SECONDS), 3)]
        rows.append(row)
        classes.append("best" if p.get("best") else "worst" if p.get("worst") else "")
    page.h2(f"Trials ({len(pts)}; best first by validation {metric})")
    page.table(
        cols,
        rows,
        f"{proto} Green: the chosen trial; red: the worst finished trial. A trial ASHA stopped "
        "shows its last validation figure.",
        classes,
        left=2,
    )
    best = next((p for p in pts if p.get("best")), None)
    worst = next((p for p in pts if p.get("worst")), None)
    test = {k[len("best_test_") :]: v for k, v in rec.metrics.items() if k.startswith("best_test_")}
    if test:
        shown = pooled(test)
        page.table(
            ["figure", "value"],
            [[k, fmt(test[k])] for k in shown],
            f"The chosen trial ({best['name'] if best else '?'}) "
            f"on the test split, scored once. {proto}",
        )
    # 2. The metric against each setting.
    if keys:
        fig = figures.settings_scatter(pts, keys, metric, f"{metric} against each searched setting")
        page.figure(
            fig,
            "metric_vs_settings",
            "One dot per trial (hollow: stopped early by ASHA); "
            f"gold star: chosen, red cross: worst. {proto}",
        )
    # 3. FID against the metric (stabilisers: image FID against mask FID), Pareto front joined.
    if fidelity and any(p["mask_fid"] is not None for p in pts):
        pp = [{**p, "x": p["fid"], "y": p["mask_fid"]} for p in pts]
        fig = figures.pareto(
            pp, FID_ALL, MASK_FID_ALL, "min", "image FID against mask FID (validation)"
        )
        page.figure(
            fig,
            "pareto",
            "Both lower is better; the line joins the "
            f"trials no other trial beats on both. {proto}",
        )
    elif not fidelity and any(p["fid"] is not None for p in pts):
        pp = [{**p, "x": p["fid"]} for p in pts]
        fig = figures.pareto(pp, FID_ALL, metric, mode, f"validation FID against {metric}")
        page.figure(
            fig,
            "pareto",
            f"The multi-objective view: the line joins the trials no other trial beats on both "
            f"FID and {metric}. {proto}",
        )
    # 4. The best trial's learning curves; 5. its images and the worst trial's.
    if best is not None:
        panels = curves(rec, best["run"])
        if panels:
            fig = figures.learning_curves(
                panels, f"learning curves of the chosen trial ({best['name']})"
            )
            page.figure(
                fig,
                "learning_curves_best",
                "Classifier: per-epoch training and validation figures as reported "
                "to Tune (ASHA's signal). Generator: per-epoch losses of each stage. " + proto,
            )
    for which, p in (("best", best), ("worst", worst)):
        if p is None:
            continue
        imgs = (
            run_images(rec, p["run"], "", tmp, "real_vs_synthetic_")
            or run_images(rec, p["run"], "samples", tmp)[-2:]
        )
        for path, img in imgs:
            what = (
                "real (validation) vs synthetic"
                if img.name.startswith("real_vs")
                else "generator samples at its last epoch"
            )
            page.image(
                img,
                f"{which} trial ({p['name']}, validation {metric} {fmt(p['y'])}): {what}, {path}.",
                name=f"{which}_{path.replace('/', '_')}",
            )
    if best is not None:  # 6. why the chosen generator scores as it does: P/R/D/C, copying, CAS
        realism.trial_section(rec, page, best["run"], f"chosen trial ({best['name']})", tmp)


def curves(rec: Recorded, run) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{panel: {series: [(epoch, value)]}} from the run's metric histories. Tune steps count
    reports from 1; the final report (step with `final`) repeats the chosen epoch and is left out."""
    rid, keys = run.info.run_id, set(run.data.metrics)
    final_steps = {s for s, _ in rec.history(rid, names.FINAL)} if names.FINAL in keys else set()
    panels: dict[str, dict] = {}

    def series(key: str) -> list[tuple[int, float]]:
        return [(s, v) for s, v in rec.history(rid, key) if s not in final_steps]

    for panel, shown in (
        ("classifier: validation", (names.VAL_BACC, names.VAL_ACCURACY)),
        ("classifier: loss", ("train_loss", names.VAL_LOSS)),
    ):
        got = {n: series(n) for n in shown if n in keys}
        got = {n: s for n, s in got.items() if len(s) > 1}
        if got:
            panels[panel] = got
    for key in sorted(k for k in keys if k.startswith("gen/")):
        label, name = key[len("gen/") :].rsplit("/", 1)  # gen/<stage label, may hold '/'>/<metric>
        if name in ("images_per_s", "epoch_s", "best_epoch"):
            continue
        pts = rec.history(rid, key)
        if len(pts) > 1:
            panels.setdefault(f"generator: {label}", {})[name] = [
                (s + 1, v) for s, v in pts
            ]  # epochs from 1, like the classifier's
    return panels
