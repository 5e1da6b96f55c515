"""The corrected resampled t-test (Nadeau & Bengio 2003; metrics/power.py's module doc): random splits of
ONE set share their images, so the plain paired t-test over them is too sure of itself. Checked on
constructed scores against formulas computed here, and by simulation: under no true difference, the
plain test over 20 overlapping splits rejects far more often than 5%, the corrected one does not."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from cytoray.errors import CytorayError
from cytoray.metrics.classification import mean_ci, paired_test, summarize
from cytoray.metrics.power import (
    min_detectable_effect,
    paired_t_power,
    power_statement,
    reachable,
    splits_needed,
    verdicts,
)

ORIG = [0.70, 0.72, 0.68, 0.71, 0.69, 0.74]
DIFF = [0.06, -0.02, 0.09, 0.01, 0.04, 0.08]


def _rows(n_train=90, n_test=30):
    rows = []
    for k, (o, d) in enumerate(zip(ORIG, DIFF)):
        for pol, s in (("orig", o), ("trad", o + d)):
            row = {"classifier": "r18", "policy": pol, "split": k, "balanced_accuracy": s}
            if n_test is not None:
                row["n_test"] = n_test
            if n_train is not None:
                row["n_train"] = n_train
            rows.append(row)
    return rows


def test_corrected_interval_and_p_match_the_formula():
    d = np.array(DIFF)
    n, r = d.size, 30 / 90
    se = d.std(ddof=1) * math.sqrt(1 / n + r)
    half = stats.t.ppf(0.975, n - 1) * se
    p = 2 * stats.t.sf(abs(d.mean()) / se, n - 1)
    t = paired_test(np.add(ORIG, DIFF), ORIG, test_train=r)
    assert t["ci_low"] == pytest.approx(d.mean() - half) and t["ci_high"] == pytest.approx(
        d.mean() + half
    )
    assert t["p_value"] == pytest.approx(p) and "corrected" in t["test"]
    plain = paired_test(np.add(ORIG, DIFF), ORIG)
    assert plain["p_value"] == pytest.approx(stats.ttest_rel(np.add(ORIG, DIFF), ORIG).pvalue)
    # the same mean, an interval sqrt((1/6 + 1/3) / (1/6)) = sqrt(3) times as wide, a larger p
    assert t["mean_diff"] == pytest.approx(plain["mean_diff"])
    assert t["ci_high"] - t["ci_low"] == pytest.approx(
        math.sqrt(3) * (plain["ci_high"] - plain["ci_low"])
    )
    assert t["p_value"] > plain["p_value"]
    ci = mean_ci(ORIG, test_train=r)
    assert ci["half_width"] == pytest.approx(
        stats.t.ppf(0.975, n - 1) * np.std(ORIG, ddof=1) * math.sqrt(1 / n + r)
    )


def test_summarize_corrects_with_the_rows_sizes_and_says_so():
    s = summarize(_rows())
    assert s["correction"]["method"] == "nadeau_bengio"
    assert s["correction"]["test_train"] == pytest.approx(1 / 3)
    t = s["tests"]["r18|trad"]
    assert t["p_value"] == pytest.approx(
        paired_test(np.add(ORIG, DIFF), ORIG, test_train=1 / 3)["p_value"]
    )
    assert s["power"]["r18"]["test_train"] == pytest.approx(1 / 3)
    (v,) = verdicts(s, "r18", ["orig", "trad"])
    assert v["low"] == pytest.approx(t["ci_low"]) and "share their images" in v["sentence"]
    assert v["mde"] == pytest.approx(
        min_detectable_effect(6, np.std(DIFF, ddof=1), test_train=1 / 3)
    )
    # asked for the plain t, or rows without the sizes: the plain t, and the summary says why
    for rows, kw in ((_rows(), {"correction": "none"}), (_rows(n_train=None), {})):
        s0 = summarize(rows, **kw)
        assert s0["correction"]["method"] == "none" and s0["correction"]["test_train"] == 0
        assert s0["tests"]["r18|trad"]["p_value"] == pytest.approx(
            stats.ttest_rel(np.add(ORIG, DIFF), ORIG).pvalue
        )
    assert "n_train" in summarize(_rows(n_train=None))["correction"]["why"]
    with pytest.raises(CytorayError, match="correction='bonferroni'"):
        summarize(_rows(), correction="bonferroni")


def test_no_number_of_overlapping_splits_beats_the_floor():
    sd, r = 0.10, 1 / 3
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    # the floor: z sd sqrt(r) = 16.2 points
    assert not reachable(sd, 0.05, test_train=r) and reachable(sd, 0.17, test_train=r)
    assert splits_needed(sd, 0.05, test_train=r) is None
    p = power_statement([0.1, -0.05, 0.2, 0.0, -0.1, 0.05], 0.77, test_train=r)
    assert p["reachable"] is False and "no number of splits" in p["statement"]
    assert p["mde_limit"] == pytest.approx(z * p["sd_diff"] * math.sqrt(r))
    # above the floor: the smallest K that reaches 80% power, more than independent splits need
    k = splits_needed(sd, 0.20, test_train=r)
    assert (
        paired_t_power(k, sd, 0.20, test_train=r)
        >= 0.8
        > paired_t_power(k - 1, sd, 0.20, test_train=r)
    )
    assert k > splits_needed(sd, 0.20)
    # a small overlap costs little: the plain answer is the limit r -> 0
    assert splits_needed(0.05, 0.05, test_train=1e-9) == splits_needed(0.05, 0.05)


def test_plain_t_over_overlapping_splits_is_too_sure_and_the_corrected_test_is_not():
    """No true difference: 150 images drawn from a population where each image's paired outcome (the
    policy right and orig wrong, the reverse, or both alike) has mean 0; 20 random 90/30/30 splits score
    their 30 test images, plus training noise. Over 400 simulated sets the plain t, which sees only the
    splits' spread and not the set's own luck, rejects at 5% far more often than 5%."""
    rng = np.random.default_rng(0)
    n_img, n_test, n_train, k, reps = 150, 30, 90, 20, 400
    rej_plain = rej_corr = 0
    for _ in range(reps):
        # each set is a sample of a population with no difference; the set's own mean is not 0
        d = rng.choice([-1.0, 0.0, 1.0], size=n_img, p=[0.125, 0.75, 0.125])
        diffs = np.array(
            [d[rng.permutation(n_img)[:n_test]].mean() + rng.normal(0, 0.03) for _ in range(k)]
        )
        zeros = np.zeros(k)
        rej_plain += paired_test(diffs, zeros)["p_value"] < 0.05
        rej_corr += paired_test(diffs, zeros, test_train=n_test / n_train)["p_value"] < 0.05
    assert rej_plain / reps > 0.2  # ~5x the nominal 5%
    assert rej_corr / reps <= 0.06
