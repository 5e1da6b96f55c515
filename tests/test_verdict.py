"""The verdict (metrics/power.py): one sentence per policy against orig, from constructed per-split
scores whose paired intervals are computed here independently (scipy's t quantile); the minimum
detectable effect; the paired figure; KID without a spread shown without '± 0.0000'."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from cytoray.metrics.classification import summarize
from cytoray.metrics.power import min_detectable_effect, paired_t_power, verdicts

ORIG = [0.70, 0.72, 0.68, 0.71, 0.69]
DIFFS = {
    "lower": [-0.10, -0.12, -0.08, -0.11, -0.09],  # lower on every split, a tight interval
    "same": [0.01, -0.01, 0.0, 0.005, -0.005],  # an interval well inside ±5 points
    "noisy": [0.15, -0.10, 0.05, -0.08, 0.12],
}  # an interval that holds 0 and ±5 points


def _rows():
    rows = [
        {"classifier": "resnet18", "policy": "orig", "split": k, "balanced_accuracy": s}
        for k, s in enumerate(ORIG)
    ]
    for pol, d in DIFFS.items():
        rows += [
            {"classifier": "resnet18", "policy": pol, "split": k, "balanced_accuracy": s + x}
            for k, (s, x) in enumerate(zip(ORIG, d))
        ]
    return rows


def _pts(x: float) -> str:
    return f"{round(100 * x, 1) + 0.0:+.1f}".replace("-", "−")


def test_verdict_sentences_on_known_intervals():
    summary = summarize(_rows(), baseline="orig")
    by = {v["policy"]: v for v in verdicts(summary, "resnet18", ["orig", *DIFFS], effect=0.05)}
    assert set(by) == set(DIFFS)  # orig gets none
    for pol, d in DIFFS.items():
        d = np.array(d)
        half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        v = by[pol]
        assert v["low"] == pytest.approx(d.mean() - half) and v["high"] == pytest.approx(
            d.mean() + half
        )
        assert f"{_pts(d.mean())} points" in v["sentence"]
        assert f"95% CI {_pts(d.mean() - half)} to {_pts(d.mean() + half)}" in v["sentence"]
        assert v["p_holm"] == summary["tests"][f"resnet18|{pol}"]["p_holm"]
        # the MDE: what 80% power reaches at this spread over 5 splits
        assert paired_t_power(5, d.std(ddof=1), v["mde"]) == pytest.approx(0.8, abs=1e-4)
        assert f"{100 * v['mde']:.1f} points" in v["sentence"]
    assert by["lower"]["call"] == "lower" and "Verdict: lower than orig" in by["lower"]["sentence"]
    assert (
        by["same"]["call"] == "no effect"
        and "excludes differences of ±5.0 points" in by["same"]["sentence"]
    )
    assert by["noisy"]["call"] == "inconclusive" and "no effect" not in by["noisy"]["sentence"]
    # the difference that matters decides "no effect": at half a point, "same"'s interval no longer lies inside it
    assert {
        v["policy"]: v["call"] for v in verdicts(summary, "resnet18", list(DIFFS), effect=0.005)
    }["same"] == "inconclusive"


def test_min_detectable_effect():
    for n, sd in ((3, 0.05), (5, 0.05), (10, 0.02)):
        mde = min_detectable_effect(n, sd)
        assert paired_t_power(n, sd, mde) == pytest.approx(0.8, abs=1e-4)
        assert paired_t_power(n, sd, 0.9 * mde) < 0.8
    assert min_detectable_effect(3, 0.05) > min_detectable_effect(
        6, 0.05
    )  # more splits, smaller detectable difference
    assert min_detectable_effect(1, 0.05) is None and min_detectable_effect(4, 0.0) == 0.0


def test_paired_figure_is_written(tmp_path):
    from cytoray.report.baselines import verdict_section
    from cytoray.report.html import Page

    rows = [{**r, "repeat": 0} for r in _rows()]
    summary = summarize(rows, baseline="orig")
    page = Page("t", tmp_path)
    verdict_section(
        page, summary, rows, ["resnet18"], ["orig", *DIFFS], "balanced_accuracy", 0.05, "protocol"
    )
    png = tmp_path / "figures" / "paired_differences.png"
    assert png.is_file() and png.stat().st_size > 5000
    from PIL import Image

    w, h = Image.open(png).size
    assert w > 400 and h > 200
    html = "".join(page.parts)
    assert html.count(". Verdict: ") == 3 and "the difference that matters" in html


def test_kid_without_spread_has_no_plus_minus():
    from cytoray.metrics.fidelity_stats import kid_text, kid_text_of, per_class_notes

    assert (
        kid_text(0.0123, 0.0, 12, 12, 12)
        == "0.0123 (no spread: 12/12 images, each subset the whole set)"
    )
    assert kid_text(0.0123, 0.004, 12, 12, 30) == "0.0123 ± 0.0040"  # the larger set's subsets vary
    m = {
        "fid_test_inception/a": 90.0,
        "kid_test_inception_mean/a": 0.02,
        "kid_test_inception_std/a": 0.0,
        "kid_test_inception_subset_size/a": 10.0,
        "fid_test_inception_n_real/a": 10.0,
        "fid_test_inception_n_fake/a": 10.0,
    }
    assert "±" not in kid_text_of(m, "kid_test_inception_mean/a")
    (line,) = per_class_notes(m, "test")
    assert "± 0.0000" not in line and "no spread" in line
