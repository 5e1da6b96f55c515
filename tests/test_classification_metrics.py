"""Classification metrics and study statistics against cases worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from cytoray.errors import CytorayError
from cytoray.metrics.classification import (
    bootstrap_ci,
    classification_metrics,
    format_cell,
    holm,
    images_needed,
    mean_ci,
    paired_t_power,
    paired_test,
    power_statement,
    results_table,
    splits_needed,
    summarize,
)

# ----------------------------------------------------------------------------- per-split metrics

# 5 images, 2 classes. P(1) = [.2, .7, .3, .8, .4] → predictions [0, 1, 0, 1, 0].
# Confusion [[2, 1], [1, 1]]; accuracy 3/5; recalls 2/3 and 1/2 → balanced 7/12;
# F1: class 0 = 2·2/(2·2+1+1) = 2/3, class 1 = 2/(2+1+1) = 1/2 → macro 7/12;
# AUC: positive 0.8 beats all 3 negatives, 0.4 beats 0.2 and 0.3 → 5/6.
Y5 = [0, 0, 0, 1, 1]
P5 = [0.2, 0.7, 0.3, 0.8, 0.4]


def test_hand_example_binary():
    m = classification_metrics(Y5, P5, class_names=["benign", "malignant"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["balanced_accuracy"] == pytest.approx(7 / 12)
    assert m["f1_macro"] == pytest.approx(7 / 12)
    assert m["roc_auc"] == pytest.approx(5 / 6)
    assert m["confusion"] == [[2, 1], [1, 1]]
    assert m["n"] == 5
    assert m["per_class"]["benign"]["recall"] == pytest.approx(2 / 3)
    assert m["per_class"]["malignant"]["support"] == 2
    json.dumps(m)  # JSON-able: plain ints/floats/lists


def test_two_column_probabilities_match_binary_scores():
    p = np.asarray(P5)
    two = classification_metrics(Y5, np.stack([1 - p, p], axis=1))
    one = classification_metrics(Y5, p)
    for k in ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "confusion"):
        assert two[k] == one[k]


def test_perfect_and_chance_predictions():
    y = [0, 1, 0, 1, 1, 0]
    perfect = classification_metrics(y, [0.1, 0.9, 0.2, 0.8, 0.7, 0.3])
    for k in ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc"):
        assert perfect[k] == 1.0
    assert perfect["confusion"] == [[3, 0], [0, 3]]
    # Constant 0.5: every image predicted class 0 (tie → class 0), ranking carries no information.
    chance = classification_metrics(y, [0.5] * 6)
    assert (
        chance["accuracy"] == 0.5
        and chance["balanced_accuracy"] == 0.5
        and chance["roc_auc"] == 0.5
    )
    assert chance["confusion"] == [[3, 0], [3, 0]]


def test_roc_auc_nan_with_one_class_and_stable_confusion_shape():
    m = classification_metrics([1, 1, 1], [0.9, 0.2, 0.6])
    assert math.isnan(m["roc_auc"])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["confusion"] == [[0, 0], [1, 2]]  # row for the absent class is still there


def test_multiclass_ovr_macro_over_present_classes():
    # Class 2 never occurs in y_true. OvR class 0: scores .6,.3 (pos) vs .2,.3 (neg) → (3 + ½ tie)/4;
    # class 1: .7,.4 vs .3,.5 → 3/4; macro over the two present classes = 0.8125.
    p = [[0.6, 0.3, 0.1], [0.3, 0.5, 0.2], [0.2, 0.7, 0.1], [0.3, 0.4, 0.3]]
    m = classification_metrics([0, 0, 1, 1], p)
    assert m["roc_auc"] == pytest.approx(0.8125)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert m["accuracy"] == pytest.approx(3 / 4)


def test_bad_inputs_raise():
    with pytest.raises(CytorayError, match="rows"):
        classification_metrics([0, 1, 1], [0.2, 0.8])
    with pytest.raises(CytorayError, match="outside"):
        classification_metrics([0, 2], [0.2, 0.8])
    with pytest.raises(CytorayError, match="class_names"):
        classification_metrics([0, 1], [0.2, 0.8], class_names=["a", "b", "c"])


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_perfect_and_binomial_width():
    y = np.array([0, 1] * 10)
    ci = bootstrap_ci(y, y.astype(float), n_boot=300)
    assert ci["estimate"] == ci["low"] == ci["high"] == 1.0
    # 100 images, 80 right: the percentile CI sits near 0.8 ± 1.96·√(0.8·0.2/100) = [0.72, 0.88].
    y = np.array([0, 1] * 50)
    p = np.where(np.arange(100) < 80, y, 1 - y).astype(float)
    a = bootstrap_ci(y, p, n_boot=1000, seed=3)
    assert a["estimate"] == pytest.approx(0.8)
    assert a["low"] == pytest.approx(0.72, abs=0.02) and a["high"] == pytest.approx(0.88, abs=0.02)
    assert bootstrap_ci(y, p, n_boot=1000, seed=3) == a  # seeded → reproducible
    with pytest.raises(CytorayError, match="unknown metric"):
        bootstrap_ci(y, p, metric="auc")


def test_bootstrap_auc_skips_one_class_resamples():
    ci = bootstrap_ci([0, 1, 1], [0.2, 0.9, 0.6], metric="roc_auc", n_boot=200)
    assert ci["n_undefined"] > 0  # a resample of 3 images often holds one class only
    assert ci["low"] == ci["high"] == 1.0


# ----------------------------------------------------------------------------- mean ± CI


def test_mean_ci_matches_t_formula():
    ci = mean_ci([1, 2, 3])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t_{0.975, 2} · sd / √n with sd = 1
    assert ci["mean"] == 2.0 and ci["sd"] == pytest.approx(1.0) and ci["n"] == 3
    assert ci["half_width"] == pytest.approx(half, rel=1e-9)
    assert (ci["low"], ci["high"]) == pytest.approx((2 - half, 2 + half))


def test_mean_ci_single_value_and_nan():
    ci = mean_ci([0.8])
    assert ci["low"] == ci["high"] == ci["mean"] == 0.8 and math.isnan(ci["half_width"])
    ci = mean_ci([1, float("nan"), 3])
    assert ci["n"] == 2 and ci["n_dropped"] == 1 and ci["mean"] == 2.0
    with pytest.raises(CytorayError):
        mean_ci([float("nan")])


# ----------------------------------------------------------------------------- paired test, Holm


def test_paired_test_identical_is_null():
    a = [0.7, 0.8, 0.75, 0.9]
    t = paired_test(a, a)
    assert t["mean_diff"] == 0.0 and t["p_value"] == 1.0 and t["p_wilcoxon"] == 1.0
    assert math.isnan(t["effect_size"]) and t["test"] == "paired t"


def test_paired_test_known_values():
    # diffs [.1, .2, .1, .2]: mean .15, sd √(.01/3); t = .15/(sd/2) on 3 df.
    t = paired_test([0.2, 0.4, 0.3, 0.5], [0.1, 0.2, 0.2, 0.3])
    sd = math.sqrt(0.01 / 3)
    assert t["mean_diff"] == pytest.approx(0.15)
    assert t["p_value"] == pytest.approx(2 * stats.t.sf(0.15 / (sd / 2), 3), rel=1e-6)
    assert t["effect_size"] == pytest.approx(0.15 / sd)
    j3 = math.gamma(1.5) / (
        math.sqrt(1.5) * math.gamma(1.0)
    )  # Hedges' J for 3 df ≈ 1 − 3/(4·3 − 1)
    assert t["hedges_gz"] == pytest.approx(0.15 / sd * j3)
    assert (t["ci_low"], t["ci_high"]) == pytest.approx(
        (mean_ci([0.1, 0.2, 0.1, 0.2])["low"], mean_ci([0.1, 0.2, 0.1, 0.2])["high"])
    )


def test_paired_test_detects_clear_shift():
    rng = np.random.default_rng(0)
    orig = rng.uniform(0.6, 0.8, 8)
    policy = orig + 0.1 + rng.normal(0, 0.01, 8)
    t = paired_test(policy, orig)
    assert t["p_value"] < 0.01 and t["mean_diff"] == pytest.approx(0.1, abs=0.02)
    assert t["effect_size"] > 3 and 0 < t["hedges_gz"] < t["effect_size"] and t["n"] == 8
    assert t["p_wilcoxon"] < 0.05
    w = paired_test(policy, orig, method="wilcoxon")
    assert w["test"] == "wilcoxon signed-rank" and w["p_value"] == t["p_wilcoxon"]
    assert paired_test(orig, policy)["mean_diff"] == pytest.approx(-t["mean_diff"])  # sign = a − b


def test_paired_test_rejects_unpaired_input():
    with pytest.raises(CytorayError, match="same >= 2 splits"):
        paired_test([0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(CytorayError, match="same >= 2 splits"):
        paired_test([0.1], [0.2])


def test_holm_known_example():
    adj = holm({"trad": 0.01, "syncgan": 0.04, "gan": 0.03})
    assert adj == pytest.approx({"trad": 0.03, "syncgan": 0.06, "gan": 0.06})
    adj = holm({"a": 0.5, "b": 0.6, "c": float("nan")})
    assert (
        adj["a"] == 1.0 and adj["b"] == 1.0 and math.isnan(adj["c"])
    )  # capped; NaN outside the family


def test_format_cell():
    assert format_cell({"mean": 0.8, "half_width": 0.041, "n": 5}) == "80.0 ± 4.1"
    assert format_cell({"mean": 0.8, "half_width": float("nan"), "n": 1}) == "80.0"
    assert (
        format_cell({"mean": 0.8, "half_width": 0.041, "n": 5}, pct=False, digits=2)
        == "0.80 ± 0.04"
    )


# ----------------------------------------------------------------------------- summaries


BASE = {"resnet": [0.70, 0.72, 0.68, 0.74, 0.66], "densenet": [0.80, 0.78, 0.82, 0.76, 0.84]}
JITTER = [0.01, -0.01, 0.0, 0.005, -0.005]  # sums to 0: the means below are exact
SHIFT = {"orig": 0.0, "trad": 0.02, "syncgan": 0.08}


def _results() -> list[dict]:
    rows = []
    for clf, base in BASE.items():
        for pol, shift in SHIFT.items():
            for s in range(5):
                noise = JITTER[(s + len(pol)) % 5] if pol != "orig" else 0.0
                rows.append(
                    {
                        "classifier": clf,
                        "policy": pol,
                        "split": s,
                        "repeat": 0,
                        "balanced_accuracy": base[s] + shift + noise,
                        "accuracy": 0.5,
                    }
                )
    rng = np.random.default_rng(1)
    return [rows[i] for i in rng.permutation(len(rows))]  # matching must not rely on row order


def test_summarize_means_tests_and_holm():
    s = summarize(_results())
    assert set(s["cells"]) == {f"{c}|{p}" for c in BASE for p in SHIFT}
    assert s["cells"]["resnet|orig"]["mean"] == pytest.approx(0.70)
    assert s["cells"]["resnet|syncgan"]["mean"] == pytest.approx(0.78)
    assert s["cells"]["densenet|trad"]["mean"] == pytest.approx(0.82)
    assert s["cells"]["densenet|trad"]["n"] == 5
    assert set(s["tests"]) == {f"{c}|{p}" for c in BASE for p in ("trad", "syncgan")}
    t = s["tests"]["resnet|syncgan"]
    assert t["mean_diff"] == pytest.approx(0.08) and t["n"] == 5 and t["p_value"] < 0.01
    fam = {p: s["tests"][f"resnet|{p}"]["p_value"] for p in ("trad", "syncgan")}
    for p, adj in holm(fam).items():
        assert s["tests"][f"resnet|{p}"]["p_holm"] == pytest.approx(adj)
    json.dumps(s)


def test_results_table_markdown_and_csv():
    s = summarize(_results())
    md, rows = results_table(
        s, ["resnet", "densenet"], ["orig", "trad", "syncgan"], "balanced_accuracy"
    )
    lines = md.splitlines()
    assert lines[0] == "| classifier | orig | trad | syncgan |"
    assert lines[1] == "|---|---|---|---|"
    resnet = [c.strip() for c in lines[2].strip("|").split("|")]
    assert resnet[0] == "resnet"
    assert resnet[1] == format_cell(s["cells"]["resnet|orig"]) and "(" not in resnet[1]
    assert resnet[3].startswith("78.0 ± ") and "(+8.0, p" in resnet[3]
    assert rows[0][:11] == [
        "classifier",
        "policy",
        "metric",
        "mean",
        "low",
        "high",
        "n",
        "mean_diff",
        "p_value",
        "p_holm",
        "effect_size",
    ]
    assert len(rows) == 1 + 6
    orig_row = next(r for r in rows if r[:2] == ["resnet", "orig"])
    assert float(orig_row[3]) == pytest.approx(0.70) and orig_row[7] == ""
    sync_row = next(r for r in rows if r[:2] == ["densenet", "syncgan"])
    assert float(sync_row[7]) == pytest.approx(0.08) and float(sync_row[9]) >= float(sync_row[8])


def test_summarize_input_errors_and_single_split():
    rows = _results()
    with pytest.raises(CytorayError, match="baseline"):
        summarize(rows, baseline="none")
    with pytest.raises(CytorayError, match="two rows"):
        summarize(rows + [rows[0]])
    with pytest.raises(CytorayError, match="lacks"):
        summarize([{"classifier": "a", "policy": "orig", "split": 0}])
    one = [r for r in rows if r["split"] == 0]  # a smoke test: one split, no test possible
    s = summarize(one)
    assert s["tests"] == {} and s["cells"]["resnet|orig"]["n"] == 1
    md, _ = results_table(s, ["resnet"], ["orig", "trad", "gan"], "balanced_accuracy")
    assert (
        md.splitlines()[2] == "| resnet | 70.0 | 71.5 | — |"
    )  # means only, no marker, missing cell dashed


def test_results_table_zero_difference_has_no_minus_sign():
    rows = [
        {"classifier": "r", "policy": p, "split": s, "balanced_accuracy": v}
        for s, (a, b) in enumerate(
            [(0.5, 0.5333333333333333), (0.7333333333333334, 0.7), (0.8333333333333334,) * 2]
        )
        for p, v in (("orig", a), ("gan", b))
    ]
    s = summarize(rows)  # the default study's gan column: per-split differences cancel
    assert -1e-12 < s["tests"]["r|gan"]["mean_diff"] < 0  # float rounding leaves a tiny negative
    md, _ = results_table(s, ["r"], ["orig", "gan"], "balanced_accuracy")
    assert "(+0.0, p=" in md and "-0.0" not in md


def test_results_table_says_when_an_interval_leaves_the_unit_range():
    tight = summarize(_results())
    md, _ = results_table(tight, ["resnet"], ["orig", "trad"], "balanced_accuracy")
    assert "unclipped" not in md
    wide = [
        {"classifier": "r", "policy": p, "split": s, "balanced_accuracy": v}
        for s, v in enumerate([0.5, 0.7333333333333334, 0.8333333333333334])
        for p in ("orig", "trad")
    ]
    s = summarize(wide)  # the default study's orig column: 68.9 ± 42.5 reaches 111%
    assert s["cells"]["r|orig"]["high"] > 1
    md, _ = results_table(s, ["r"], ["orig", "trad"], "balanced_accuracy")
    assert "68.9 ± 42.5" in md and "unclipped" in md


# ----------------------------------------------------------------------------- power


@pytest.mark.parametrize("d,n,achieved", [(0.2, 199, 0.8017), (0.5, 34, 0.8078), (0.8, 15, 0.8213)])
def test_splits_needed_matches_gpower(d, n, achieved):
    # G*Power 3 (Faul et al. 2007), "means: difference from constant / matched pairs", two-tailed
    # α = .05, power .80: effect size dz = d needs n pairs with the achieved power shown.
    assert splits_needed(sd_diff=1.0, delta=d) == n
    assert paired_t_power(n, 1.0, d) == pytest.approx(achieved, abs=1e-4)
    assert paired_t_power(n - 1, 1.0, d) < 0.8 <= paired_t_power(n, 1.0, d)  # the smallest such n


def test_paired_t_power_by_hand_and_by_simulation():
    # By hand with scipy's noncentral t: 8 splits, SD of differences 6 points, δ = 5 points.
    df, nc = 7, 0.05 * math.sqrt(8) / 0.06
    tc = stats.t.ppf(0.975, df)
    by_hand = stats.nct.sf(tc, df, nc) + stats.nct.cdf(-tc, df, nc)
    assert paired_t_power(8, 0.06, 0.05) == pytest.approx(by_hand, rel=1e-12)
    # Simulated paired t-tests (ttest_rel's own statistic) reject at that rate.
    rng = np.random.default_rng(0)
    diffs = rng.normal(0.05, 0.06, (20000, 8))
    t = diffs.mean(1) / (diffs.std(1, ddof=1) / math.sqrt(8))
    assert np.mean(np.abs(t) > tc) == pytest.approx(by_hand, abs=0.01)
    assert splits_needed(0.0) == 2 and math.isnan(paired_t_power(1, 0.06))  # one split: no t-test
    assert splits_needed(5.0, delta=0.01) is None  # beyond MAX_SPLITS: "not with this design"
    assert paired_t_power(5, 0.0004) == 1.0  # far tail: scipy's NaN is taken as 0, not propagated


def test_images_needed_two_proportions():
    # (1.96·√(2·.775·.225) + 0.8416·√(.75·.25 + .8·.2))² / .05² = 1093.4 → 1094 images.
    za, zb = stats.norm.ppf(0.975), stats.norm.ppf(0.8)
    by_hand = (
        za * math.sqrt(2 * 0.775 * 0.225) + zb * math.sqrt(0.75 * 0.25 + 0.8 * 0.2)
    ) ** 2 / 0.05**2
    assert images_needed(0.75) == math.ceil(by_hand) == 1094
    # A pooled two-proportion z-test on that many images per classifier rejects ~80% of the time.
    rng = np.random.default_rng(1)
    a, b = rng.binomial(1094, 0.75, 20000) / 1094, rng.binomial(1094, 0.80, 20000) / 1094
    pbar = (a + b) / 2
    z = (b - a) / np.sqrt(2 * pbar * (1 - pbar) / 1094)
    assert np.mean(np.abs(z) > za) == pytest.approx(0.8, abs=0.015)
    assert images_needed(0.98) == images_needed(
        0.93
    )  # near 100% the detectable change is downwards
    with pytest.raises(CytorayError, match="delta"):
        images_needed(0.7, delta=5)


def test_power_statement_and_table_line():
    p = power_statement([0.05, -0.02, 0.10, 0.0, 0.03], 0.72, n_test=30)
    sd = float(np.std([0.05, -0.02, 0.10, 0.0, 0.03], ddof=1))
    assert p["sd_diff"] == pytest.approx(sd) and p["n_splits"] == 5
    assert p["splits_needed"] == splits_needed(sd) and p["test_images_needed"] == images_needed(
        0.72
    )
    assert p["power_now"] == pytest.approx(paired_t_power(5, sd))
    assert p["statement"].startswith(
        "To detect a 5-point difference in balanced_accuracy with 80% power"
    )
    assert (
        f"about {p['splits_needed']} splits" in p["statement"]
        and "this study: 30" in p["statement"]
    )
    assert f"{p['test_images_needed']:,} test images per split" in p["statement"]
    one = power_statement([0.04], 0.72)
    assert one["splits_needed"] is None and "cannot be estimated from 1 split" in one["statement"]
    json.dumps(p)

    rows = [{**r, "n_test": 30} for r in _results()]
    s = summarize(rows)
    t = s["tests"]["resnet|syncgan"]["power"]

    def scores(policy):
        return [
            r["balanced_accuracy"]
            for r in sorted(rows, key=lambda r: r["split"])
            if (r["classifier"], r["policy"]) == ("resnet", policy)
        ]

    assert t["sd_diff"] == pytest.approx(
        float(np.std(np.subtract(scores("syncgan"), scores("orig")), ddof=1))
    )
    assert t["baseline_score"] == pytest.approx(0.70) and t["n_test"] == 30
    pooled = s["power"]["resnet"]  # trad and syncgan differences: same JITTER spread, pooled
    sds = [s["tests"][f"resnet|{pol}"]["power"]["sd_diff"] for pol in ("trad", "syncgan")]
    assert pooled["sd_diff"] == pytest.approx(math.sqrt(np.mean(np.square(sds))))
    md, _ = results_table(
        s, ["resnet", "densenet"], ["orig", "trad", "syncgan"], "balanced_accuracy"
    )
    assert f"Power (resnet): {pooled['statement']}" in md.splitlines()
    assert s["power"]["densenet"]["statement"] in md
    single = summarize(
        [r for r in rows if r["split"] == 0]
    )  # one split: no spread, test images still stated
    assert single["power"]["resnet"]["splits_needed"] is None
    assert single["power"]["resnet"]["test_images_needed"] == images_needed(0.70)
    auc = summarize([{**r, "roc_auc": r["balanced_accuracy"]} for r in rows], metric="roc_auc")
    assert auc["power"]["resnet"]["test_images_needed"] is None  # no binomial count for AUC
