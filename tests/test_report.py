"""`cytoray report`: the page and figures come from MLflow alone and say what was recorded.

Stores are written by the studies' own writers (tests/report_store.py) with known numbers, and
the study's local folders are deleted before the report is built: only MLflow is left.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from report_store import (
    BASELINE_FID,
    BASELINE_SCORES,
    BEST_TEST,
    HISTO_FID,
    RATIO_TRIALS,
    SEG_SCORES,
    baselines_store,
    histo_store,
    ratio_store,
    segmentation_store,
)

from cytoray.errors import CytorayError


def _png_ok(path: Path, min_w: int = 300) -> None:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        assert im.width >= min_w and im.height >= 100, (path, im.size)
        lo, hi = im.convert("L").getextrema()
        assert hi - lo > 20, f"{path} is blank"


def _text(html: str) -> str:
    """The page's visible text (tags dropped, inline images removed)."""
    import html as h

    return h.unescape(
        re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"src='data:[^']+'", "", html)))
    )


EXPERIMENTS = {
    "syncgan_ratio": ratio_store,
    "augmentation_baselines": baselines_store,
    "cytoray-histo-to-cyto": histo_store,
    "refined_segmentation": segmentation_store,
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store holding a ratio, a baselines and a histology→cytology study: {experiment: (uri, parent)}."""
    tmp = tmp_path_factory.mktemp("store")
    made = {name: make(tmp, name) for name, make in EXPERIMENTS.items()}
    for local in (
        "figures",
        "grids",
        "study",
    ):  # what a study leaves on disk: gone, only MLflow is left
        shutil.rmtree(tmp / local, ignore_errors=True)
    return tmp, made


def _build(store, experiment: str, out: Path, **kw):
    from cytoray.report import build_report

    uri, parent = store[1][experiment]
    page = build_report(experiment, out, uri, **kw)
    return uri, parent, page, page.read_text()


@pytest.fixture(scope="module")
def ratio(store, tmp_path_factory):
    return _build(store, "syncgan_ratio", tmp_path_factory.mktemp("ratio") / "report", log=True)


def test_ratio_report_tables_and_figures_come_from_mlflow(ratio):
    uri, parent, page, html = ratio
    text = _text(html)
    figs = page.parent / "figures"
    for name in ("metric_vs_settings", "pareto", "learning_curves_best"):
        _png_ok(figs / f"{name}.png")
        assert (figs / f"{name}.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    grids = sorted(p.name for p in figs.glob("*real_vs_synthetic_*.png"))
    assert grids == [
        f"{w}_real_vs_synthetic_{c}.png" for w in ("best", "worst") for c in ("benign", "malignant")
    ]
    for g in grids:
        _png_ok(figs / g)
    # Trials best first, with the statuses as recorded (one ASHA-stopped after its 2nd epoch).
    order = [
        f"ratio={r:g} lam={lam:g}"
        for _, r, lam, *_ in sorted(
            RATIO_TRIALS, key=lambda t: -max(t[3]) if t[5] == "finished" else 9
        )
    ]
    assert [text.index(n) for n in order] == sorted(text.index(n) for n in order)
    assert "stopped at epoch 2" in text and text.count("finished") >= 3
    assert re.search(r"<tr class=best><td class=l>ratio=1 lam=10<", html) and re.search(
        r"<tr class=worst><td class=l>ratio=0.5 lam=25<", html
    )
    for k, v in BEST_TEST.items():  # the chosen trial's test figures, as logged on the parent
        assert f"{k} {v:.4g}" in text or f"<td class=l>{k}</td><td>{v:.4g}</td>" in html
    assert "Split protocol: stratified 3:1:1 train:val:test split, seed 0, 1 split" in text
    assert (
        "the line joins the trials no other trial beats" in text
    )  # the Pareto front, named in its caption


def test_report_is_self_contained_and_logged_to_the_parent_run(ratio):
    from mlflow import MlflowClient

    uri, parent, page, html = ratio
    assert not re.search(
        r"""(src|href)=['"]?(https?:|//|file:)""", html
    )  # nothing fetched from elsewhere
    assert (
        html.count("data:image/png;base64,") == 3 + 4
    )  # three figures, best and worst grids per class
    client = MlflowClient(tracking_uri=uri)
    arts = {f.path for f in client.list_artifacts(parent, "report")} | {
        f.path for f in client.list_artifacts(parent, "report/figures")
    }
    assert {
        "report/report.html",
        "report/figures/pareto.png",
        "report/figures/pareto.svg",
        "report/figures/learning_curves_best.png",
    } <= arts


def test_pareto_front_and_learning_curves_use_the_recorded_numbers(ratio):
    from cytoray.report import store
    from cytoray.report.figures import pareto_front
    from cytoray.report.search import curves

    # min FID, max metric: (120, .65) and (150, .85) beat (200, .60); ties are not dominated.
    assert pareto_front([(150, 0.85), (120, 0.65), (200, 0.60), (120, 0.65)], "max") == [1, 3, 0]
    assert pareto_front([(1, 5), (2, 4), (3, 6)], "min") == [0, 1]
    uri, parent, _, _ = ratio
    rec = store.load("syncgan_ratio", uri)
    best = next(r for r in rec.children if r.data.tags["cytoray.trial_id"] == "t0001")
    panels = curves(rec, best)
    assert panels["classifier: validation"]["val_balanced_accuracy"] == [
        (1, 0.55),
        (2, 0.70),
        (3, 0.85),
    ]  # the final report left out
    assert panels["generator: cgan"]["loss_g"] == [(1, 2.0), (2, 1.8), (3, 1.6)]
    assert set(panels) >= {
        "generator: mask_gan/benign",
        "generator: mask_gan/malignant",
        "classifier: loss",
    }


def test_baselines_report_lays_out_the_paper_tables_with_tests(store, tmp_path):
    from cytoray.metrics.classification import mean_ci, summarize

    _, _, page, html = _build(store, "augmentation_baselines", tmp_path / "report")
    text = _text(html)
    rows = [
        {
            "classifier": "smallcnn",
            "policy": p,
            "split": k,
            "balanced_accuracy": s,
            "n_test": 30,
            "n_train": 90,
        }
        for p, v in BASELINE_SCORES.items()
        for k, s in enumerate(v)
    ]
    summary = summarize(rows, baseline="orig")  # the splits' overlap corrected, as the report does
    assert summary["correction"]["method"] == "nadeau_bengio"
    assert "corrected for overlapping splits (random splits of one set" in text
    for pol in BASELINE_SCORES:
        ci = summary["cells"][f"smallcnn|{pol}"]
        cell = f"{100 * ci['mean']:.1f} ± {100 * ci['half_width']:.1f}"
        if pol != "orig":
            t = summary["tests"][f"smallcnn|{pol}"]
            p = t["p_holm"]
            cell += (
                f" ({100 * t['mean_diff']:+.1f}, "
                + ("p<0.001" if p < 0.001 else f"p={p:.3f}" if p < 0.01 else f"p={p:.2f}")
                + ")"
            )
        assert cell in text, cell
    assert (
        "Table 2 — real, traditional and SynCGAN augmentation" in text and "Table 3" not in text
    )  # no Table 3 policy ran
    assert (
        "3 splits × 1 repeats" in text
        and "Holm-adjusted per classifier over its 2 comparisons" in text
    )
    assert (
        text.count("Split protocol: stratified 3:1:1 train:val:test split, seeds 0..2, 3 splits")
        >= 3
    )  # under every table
    fid = mean_ci(BASELINE_FID)
    assert f"{fid['mean']:.1f} ± {fid['half_width']:.1f}" in text  # syncgan's FID over the 3 splits
    assert re.search(r"<td class=l>syncgan</td>(<td>[^<]*</td>){3}<td>0\.0500", html)  # KID all
    for name in (
        "paired_differences",
        "fid_per_policy",
        "syncgan_real_vs_synthetic_benign",
        "syncgan_real_vs_synthetic_malignant",
    ):
        _png_ok(page.parent / "figures" / f"{name}.png")
    from cytoray.metrics.power import (
        verdicts,
    )  # the report opens with one verdict per policy, before the tables

    sentences = [v["sentence"] for v in verdicts(summary, "smallcnn", list(BASELINE_SCORES))]
    assert len(sentences) == 2 and all(s in text for s in sentences)
    assert max(text.index(s) for s in sentences) < text.index("Table 2") and text.index(
        "Verdict"
    ) < text.index("Table 2")


def test_histo_report_has_the_histology_baseline_row_first(store, tmp_path):
    _, _, page, html = _build(store, "cytoray-histo-to-cyto", tmp_path / "report")
    text = _text(html)
    labels = ["real histology", "CycleGAN G(histology)", "NST [inception]"]
    assert [text.index(f" {lab} ") for lab in labels] == sorted(
        text.index(f" {lab} ") for lab in labels
    )
    for row, by in HISTO_FID.items():
        assert all(f"{v:.4g}" in text for v in by.values())
    assert re.search(r"<tr class=best><td class=l>CycleGAN G\(histology\)<", html)  # lowest FID/all
    assert "Real-vs-real floor" in text and "all 90.0" in text
    _png_ok(page.parent / "figures" / "fid_rows.png")
    assert sorted(p.name for p in (page.parent / "figures").glob("translated_*.png")) == [
        "translated_benign.png",
        "translated_malignant.png",
    ]


def test_segmentation_report_draws_each_method_with_its_interval_on_histology(
    store, tmp_path, monkeypatch
):
    from cytoray.metrics.classification import mean_ci, paired_test
    from cytoray.report import figures
    from cytoray.report.segmentation import PROPOSED, ROWS

    drawn = []
    real = figures.method_intervals
    monkeypatch.setattr(
        figures,
        "method_intervals",
        lambda *a, **kw: drawn.append((a, real(*a, **kw))) or drawn[-1][1],
    )
    _, _, page, html = _build(store, "refined_segmentation", tmp_path / "report")
    text = _text(html)
    assert "Methods on the test tiles" in text and "over 3 seeded splits by source image" in text
    assert (
        "embedded simulator (histology, n=40, seed 0, 128 px)" in text and "cytology" not in text
    )  # the study's own data
    assert "by source image 3:1:1 train:val:test split" in text  # under the trials table too
    _png_ok(page.parent / "figures" / "methods_test_dice.png")
    (labels, cells, points, _, _, notes), fig = drawn[0]
    assert labels == [
        f"{ROWS[r]} (syncgan)" if r == "syncgan_masks" else ROWS[r] for r in ROWS
    ] and points == list(SEG_SCORES.values())
    bars = [p.get_width() for p in fig.axes[0].patches]
    assert bars == pytest.approx(
        [100 * mean_ci(v)["mean"] for v in SEG_SCORES.values()]
    )  # the recorded numbers, in %
    raw = paired_test(SEG_SCORES[PROPOSED], SEG_SCORES["raw"])
    assert (
        notes[list(ROWS).index("raw")].startswith(f"Δ {100 * raw['mean_diff']:+.1f}, p")
        and notes[-1] == "(proposed)"
    )
    wide = real(
        ["a"], [{"mean": 0.9, "low": 0.5, "high": 1.3}], [[0.8, 1.0]], "Dice (%)", "two splits"
    )
    whisker = (
        wide.axes[0].collections[0].get_segments()[0]
    )  # the errorbar's line: a t-interval cut at 100% Dice
    assert [x for x, _ in whisker] == pytest.approx([50.0, 100.0])


def test_unknown_experiment_and_missing_store_are_one_line_errors(store, tmp_path):
    from cytoray.report import build_report

    uri, _ = store[1]["cytoray-histo-to-cyto"]
    with pytest.raises(CytorayError) as e:
        build_report("no_such_study", tmp_path / "r", uri)
    msg = str(e.value)
    assert (
        "no_such_study" in msg
        and uri in msg
        and all(name in msg for name in EXPERIMENTS)
        and "\n" not in msg
    )
    missing = tmp_path / "nowhere" / "m.db"
    with pytest.raises(CytorayError, match="no MLflow store at"):
        build_report("x", tmp_path / "r", f"sqlite:///{missing}")
    assert (
        not missing.exists() and not (tmp_path / "r").exists()
    )  # nothing created by a failed look-up


def test_report_never_overwrites_a_folder_it_did_not_write(store, tmp_path):
    from cytoray.report import build_report

    uri, _ = store[1]["cytoray-histo-to-cyto"]
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "draft.txt").write_text("keep me")
    with pytest.raises(CytorayError, match="holds no cytoray report"):
        build_report("cytoray-histo-to-cyto", mine, uri)
    assert (mine / "draft.txt").read_text() == "keep me"
    first = build_report("cytoray-histo-to-cyto", tmp_path / "rep", uri)
    (first.parent / "figures" / "stale.png").write_bytes(b"old")
    again = build_report(
        "cytoray-histo-to-cyto", tmp_path / "rep", uri
    )  # its own report: replaced whole, nothing stale left
    assert (
        first == again and again.is_file() and not (again.parent / "figures" / "stale.png").exists()
    )


def test_report_command(store, tmp_path, capsys):
    import argparse

    from cytoray.report import report_from_args

    uri, _ = store[1]["cytoray-histo-to-cyto"]
    a = argparse.Namespace(
        experiment="cytoray-histo-to-cyto",
        tracking_uri=uri,
        out=str(tmp_path / "out"),
        run_id=None,
        log=False,
    )
    assert report_from_args(a) == 0
    assert capsys.readouterr().out.strip() == f"report: {tmp_path / 'out' / 'report.html'}"


def test_a_run_without_a_comparison_never_logs_an_earlier_ones(tmp_path, monkeypatch):
    """compare=false: the comparison files an earlier run left in --out are not logged (the report
    would draw their numbers as this run's)."""
    import mlflow
    import numpy as np
    from mlflow import MlflowClient

    from cytoray.config import load
    from cytoray.data.source import simulated_set
    from cytoray.experiments import segmentation
    from cytoray.experiments.driver import StudyContext
    from cytoray.tracking.mlflow_utils import setup

    class Blank:  # a refined-sim that finds no nuclei: only what finish logs is under test
        def segment(self, images):
            return np.zeros(images.shape[:3], bool)

    out = tmp_path / "study"
    out.mkdir()
    for name in ("comparison.json", "comparison.md", "comparison.csv"):
        (out / name).write_text("an earlier run's\n")
    monkeypatch.setattr(
        segmentation, "train_generator", lambda *a, **kw: (Blank(), tmp_path / "bundle", True)
    )
    monkeypatch.setattr(
        segmentation, "write_best_segmenter", lambda *a, **kw: tmp_path / "segmenter"
    )
    ds = simulated_set("histology", 4, 32, 0)
    data = segmentation.SegmentationData(
        [segmentation.TileSplit(ds, ds, ds, "h", {})], "simulator", []
    )
    cfg = load(
        segmentation.SegmentationStudyConfig,
        None,
        ["compare=false", "register=false", "data.n_splits=1"],
    )
    setup("stale-comparison", f"sqlite:///{tmp_path / 'm.db'}")
    with mlflow.start_run() as run:
        ctx = StudyContext(out, tmp_path / "cache", parent=run.info.run_id)
        assert (
            segmentation.SegmentationStudy().finish(cfg, cfg, data, None, ctx)["comparison"] is None
        )
    assert [f.path for f in MlflowClient().list_artifacts(run.info.run_id)] == ["best.json"]


def test_a_trials_tags_and_params_reach_its_run_as_tags_and_params(store):
    """A trial reports its tags and params in one nested entry (tracking/run_info.py): the study
    logger sets them on the trial's child run as MLflow tags and params, never as metrics."""
    from mlflow import MlflowClient

    from cytoray.tracking.run_info import RUN_INFO, run_params, run_tags, with_run_info

    uri, parent = store[1]["syncgan_ratio"]
    client = MlflowClient(uri)
    children = client.search_runs(
        [client.get_run(parent).info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'"
    )
    assert children
    for c in children:
        assert c.data.tags["generator"] == "syncgan" and c.data.tags["policy"] == "orig+syncgan"
        assert not any(k.startswith(("tag.", "param.", RUN_INFO)) for k in c.data.metrics)
    assert any(c.data.params.get("weights") == "scratch" for c in children)
    # parts of a trial add to the entry without overwriting each other
    r = with_run_info(with_run_info({"x": 1.0}, tags={"a": 1}), tags={"b": "2"}, params={"w": "s"})
    assert r["x"] == 1.0 and run_tags(r) == {"a": "1", "b": "2"} and run_params(r) == {"w": "s"}
