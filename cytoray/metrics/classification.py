"""Classification metrics with the statistics a reviewer asks for.

One split with 30 test images moves accuracy by 3.3 points per image, so a single number
says little. cytoray runs K seeded stratified splits (and repeats) per (classifier, policy)
cell and reports:

- per split: accuracy, balanced accuracy, macro F1, ROC AUC, confusion matrix
  (`classification_metrics`), optionally with a percentile bootstrap over test images
  (`bootstrap_ci`);
- per cell: mean ± 95% t-interval over splits (`mean_ci`, `format_cell`), by default with
  Nadeau & Bengio's variance 1/K + n_test/n_train, because K random splits of one set share
  their images and the plain t-interval would be too narrow (metrics/power.py's module doc);
- per policy: a paired test against the baseline (`orig`) on the same splits, with effect
  size, Holm-adjusted over the policies of one classifier (`paired_test`, `holm`,
  `summarize`, `results_table`);
- per classifier: how many splits, or test images per split, would detect a 5-point
  difference with 80% power at the observed spread (`power.power_statement`).

Scores are fractions in [0, 1]; tables print them in percent. Every returned dict holds
plain Python numbers (NaN where a quantity is undefined) so it can go to JSON and MLflow.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import special, stats
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)
from sklearn.preprocessing import label_binarize

from cytoray.errors import CytorayError

from .power import (  # noqa: F401 (re-exported)
    images_needed,
    paired_t_power,
    power_statement,
    resampled_factor,
    splits_needed,
)

# ----------------------------------------------------------------------------- inputs


def _prob_matrix(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return (labels [N] int, probabilities [N, C]); [N] means P(class 1)."""
    y = np.asarray(y_true)
    p = np.asarray(y_prob, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise CytorayError(
            f"y_true must be a non-empty 1-D array of class indices, got shape {y.shape}"
        )
    if p.ndim == 1:  # binary scores: expand so that both cases share one code path
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[0] != y.size or p.shape[1] < 2:
        raise CytorayError(
            f"y_prob must be [N] or [N, C>=2] with N={y.size} rows, got shape {np.shape(y_prob)}"
        )
    if not np.all(np.isfinite(p)):
        raise CytorayError(
            "y_prob contains NaN or inf; check the classifier's outputs before scoring"
        )
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise CytorayError("y_true must hold integer class indices 0..C-1")
        y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise CytorayError(
            f"y_true has labels outside 0..{p.shape[1] - 1} (y_prob has {p.shape[1]} columns)"
        )
    return y, p


def _predict(p: np.ndarray) -> np.ndarray:
    # argmax: for binary [N] input a tie at 0.5 goes to class 0, same as argmax of [1-p, p]
    return np.argmax(p, axis=1)


# ----------------------------------------------------------------------------- per-split metrics


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Binary: AUC of P(1). Multiclass: one-vs-rest macro AUC over the classes present in y.

    Fewer than two classes in y → NaN (a ranking needs positives and negatives). A class
    absent from a small test split has no one-vs-rest AUC, so the macro average runs over
    the present classes (the indicator form of roc_auc_score does exactly that).
    """
    present = np.unique(y)
    if present.size < 2:
        return float("nan")
    if p.shape[1] == 2:
        return float(roc_auc_score(y, p[:, 1]))
    indicator = label_binarize(y, classes=np.arange(p.shape[1]))[:, present]
    return float(roc_auc_score(indicator, p[:, present], average="macro"))


def _balanced_accuracy(y: np.ndarray, p: np.ndarray) -> float:
    with warnings.catch_warnings():
        # "y_pred contains classes not in y_true" is routine in tiny splits; the score
        # (mean recall over the classes in y_true) is still defined.
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y, _predict(p)))


def _f1_macro(y: np.ndarray, p: np.ndarray) -> float:
    # Labels = classes seen in y_true or y_pred: a class absent from both has no F1 and
    # is left out of the mean instead of counting as 0.
    return float(f1_score(y, _predict(p), average="macro", zero_division=0))


_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda y, p: float(accuracy_score(y, _predict(p))),
    "balanced_accuracy": _balanced_accuracy,
    "f1_macro": _f1_macro,
    "roc_auc": _roc_auc,
}
SCORES = tuple(_METRICS)  # the scalar scores every study reports and may select on


def classification_metrics(y_true, y_prob, class_names: Sequence[str] | None = None) -> dict:
    """Scores of one test split.

    Returns {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "confusion", "n",
    "per_class"} (+ "class_names" when given). "confusion"[i][j] counts true class i
    predicted as j, with labels fixed to range(C) so the shape never depends on the split.
    "per_class" maps each class name (or index) to precision / recall / f1 / support.
    """
    y, p = _prob_matrix(y_true, y_prob)
    n_classes = p.shape[1]
    names = (
        [str(i) for i in range(n_classes)] if class_names is None else [str(c) for c in class_names]
    )
    if len(names) != n_classes:
        raise CytorayError(f"class_names has {len(names)} names but y_prob has {n_classes} classes")
    labels = list(range(n_classes))
    out: dict = {name: fn(y, p) for name, fn in _METRICS.items()}
    out["confusion"] = confusion_matrix(y, _predict(p), labels=labels).astype(int).tolist()
    out["n"] = int(y.size)
    # NaN, not 0, where a class was never predicted / never present: "undefined" ≠ "wrong"
    prec, rec, f1, support = precision_recall_fscore_support(
        y, _predict(p), labels=labels, zero_division=np.nan
    )
    out["per_class"] = {
        names[k]: {
            "precision": float(prec[k]),
            "recall": float(rec[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
        }
        for k in labels
    }
    if class_names is not None:
        out["class_names"] = names
    return out


def bootstrap_ci(
    y_true,
    y_prob,
    metric: str = "accuracy",
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """Percentile bootstrap CI of one metric over the test images of a single split.

    This is the uncertainty from the finite test set only (not from training or the split);
    across splits use `mean_ci`. Resamples where the metric is undefined (ROC AUC on a
    resample with one class) are left out and counted in "n_undefined".
    """
    if metric not in _METRICS:
        raise CytorayError(
            f"unknown metric {metric!r} for bootstrap_ci; choose one of {sorted(_METRICS)}"
        )
    y, p = _prob_matrix(y_true, y_prob)
    fn = _METRICS[metric]

    def statistic(idx: np.ndarray) -> float:
        idx = np.asarray(idx, dtype=np.intp)
        return fn(y[idx], p[idx])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one-class resamples would warn thousands of times
        # Resample image indices, so labels and probabilities stay paired.
        res = stats.bootstrap(
            (np.arange(y.size),),
            statistic,
            n_resamples=n_boot,
            vectorized=False,
            method="percentile",
            confidence_level=confidence,
            rng=np.random.default_rng(seed),
        )
    dist = np.asarray(res.bootstrap_distribution, dtype=np.float64)
    n_undefined = int(np.isnan(dist).sum())
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if 0 < n_undefined < dist.size:  # scipy's percentile is NaN as soon as one resample is
        alpha = (1.0 - confidence) / 2.0
        low, high = (float(v) for v in np.nanpercentile(dist, [100 * alpha, 100 * (1 - alpha)]))
    return {
        "metric": metric,
        "estimate": fn(y, p),
        "low": low,
        "high": high,
        "confidence": confidence,
        "n": int(y.size),
        "n_boot": int(n_boot),
        "n_undefined": n_undefined,
    }


# ----------------------------------------------------------------------------- across splits


def mean_ci(values, confidence: float = 0.95, test_train: float = 0.0) -> dict:
    """Mean and two-sided t-interval over per-split scores.

    test_train > 0 (n_test / n_train): the splits are random partitions of one set, and the
    interval is Nadeau & Bengio's corrected one, sd sqrt(1/n + test_train) instead of sd / sqrt(n)
    (metrics/power.py's module doc); 0: independent splits, the plain t-interval.
    NaN scores (an undefined AUC) are dropped and counted in "n_dropped"; "n" is the count
    used. n == 1 → low = high = mean and half_width = sd = NaN (no spread to estimate).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    finite = v[np.isfinite(v)]
    n = int(finite.size)
    if n == 0:
        raise CytorayError(
            "mean_ci needs at least one finite score; every split's value was missing or NaN"
        )
    mean = float(np.mean(finite))
    if n == 1:
        return {
            "mean": mean,
            "low": mean,
            "high": mean,
            "half_width": float("nan"),
            "sd": float("nan"),
            "n": 1,
            "n_dropped": int(v.size - n),
            "test_train": test_train,
        }
    sd = float(np.std(finite, ddof=1))
    se = sd * math.sqrt(resampled_factor(n, test_train))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df=n - 1) * se)
    return {
        "mean": mean,
        "low": mean - half,
        "high": mean + half,
        "half_width": half,
        "sd": sd,
        "n": n,
        "n_dropped": int(v.size - n),
        "test_train": test_train,
    }


def paired_test(a, b, method: str = "auto", test_train: float = 0.0) -> dict:
    """Paired comparison of a policy (a) with the baseline (b) over the same splits.

    test_train > 0 (n_test / n_train of random splits of one set): the corrected resampled
    t-test of Nadeau & Bengio (2003), t = mean / (sd sqrt(1/n + test_train)) on n - 1 degrees of
    freedom, and its interval (metrics/power.py's module doc); 0: the plain paired t-test.

    Differences are a − b, so a positive "mean_diff" / effect means the policy scores higher.
    "auto" is the paired t-test: with 5–10 splits a normality pre-test has no power, so
    choosing the test from the data would only add a hidden comparison; the Wilcoxon
    signed-rank p is reported beside it ("p_wilcoxon") as a check that needs no normality
    (with n splits its smallest two-sided p is 2/2^n: 0.0625 for 5, so it cannot confirm
    a t-test p below that on few splits).
    Pairs with a NaN on either side are dropped ("n_dropped").
    """
    if method not in ("auto", "t", "wilcoxon"):
        raise CytorayError(
            f"unknown paired-test method {method!r}; choose 'auto', 't' or 'wilcoxon'"
        )
    x, z = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.size != z.size:
        raise CytorayError(
            "a paired test needs the same >= 2 splits for "
            f"both policies; got {x.size} vs {z.size} scores"
        )
    keep = np.isfinite(x) & np.isfinite(z)
    x, z = x[keep], z[keep]
    n = int(x.size)
    if n < 2:
        raise CytorayError(
            f"a paired test needs the same >= 2 splits for both policies; got {n} usable pair(s)"
        )
    diff = x - z
    ci = mean_ci(diff, test_train=test_train)
    sd = ci["sd"]
    if np.all(diff == 0):  # t is 0/0: no evidence of any difference
        p_t = 1.0
    elif test_train == 0:
        p_t = float(stats.ttest_rel(x, z).pvalue)
    elif sd == 0:  # every split moved by the same nonzero amount
        p_t = 0.0
    else:
        t_stat = ci["mean"] / (sd * math.sqrt(resampled_factor(n, test_train)))
        p_t = float(2 * stats.t.sf(abs(t_stat), df=n - 1))
    with warnings.catch_warnings():
        # zeros/ties switch scipy to the normal approximation, with a warning
        warnings.simplefilter("ignore")
        p_w = float(stats.wilcoxon(x, z, zero_method="zsplit").pvalue)
    d_z = ci["mean"] / sd if sd > 0 else float("nan")
    df = n - 1
    # Exact small-sample correction J(df) = Γ(df/2) / (√(df/2) Γ((df−1)/2)) (Hedges 1981);
    # with 5 splits it shrinks d_z by ~20%, which matters for the sizes reported here.
    j = (
        math.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / math.sqrt(df / 2)
        if df > 1
        else 0.0
    )
    use_w = method == "wilcoxon"
    return {
        "mean_diff": ci["mean"],
        "ci_low": ci["low"],
        "ci_high": ci["high"],
        "p_value": p_w if use_w else p_t,
        "test": "wilcoxon signed-rank"
        if use_w
        else "paired t, Nadeau–Bengio corrected"
        if test_train
        else "paired t",
        "test_train": test_train,
        "p_t": p_t,
        "p_wilcoxon": p_w,
        "effect_size": float(d_z),
        "hedges_gz": float(d_z * j),
        "n": n,
        "n_dropped": int(keep.size - n),
    }


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    Written out because scipy has no Holm and statsmodels is not a dependency. NaN p-values
    are not part of the family and stay NaN.
    """
    keys = [k for k, p in p_values.items() if p is not None and np.isfinite(p)]
    m = len(keys)
    out = {k: float("nan") for k in p_values}
    running = 0.0
    for rank, k in enumerate(sorted(keys, key=lambda k: p_values[k])):
        running = max(running, min(1.0, (m - rank) * float(p_values[k])))  # monotone step-down
        out[k] = running
    return out


# ----------------------------------------------------------------------------- study summaries


def format_cell(ci: dict, pct: bool = True, digits: int = 1) -> str:
    """'80.0 ± 4.1' (percent by default); a single split (no interval) prints the mean only."""
    scale = 100.0 if pct else 1.0
    mean = f"{ci['mean'] * scale:.{digits}f}"
    hw = ci.get("half_width", float("nan"))
    if ci.get("n", 0) <= 1 or not np.isfinite(hw):
        return mean
    return f"{mean} ± {hw * scale:.{digits}f}"


def _cell_key(classifier: str, policy: str) -> str:
    for name in (classifier, policy):
        if "|" in name:
            raise CytorayError(
                f"name {name!r} contains '|', which cytoray uses "
                "to join classifier and policy keys; rename it"
            )
    return f"{classifier}|{policy}"


def summarize(
    results: list[dict],
    metric: str = "balanced_accuracy",
    baseline: str = "orig",
    *,
    delta: float = 0.05,
    power: float = 0.8,
    correction: str = "nadeau_bengio",
) -> dict:
    """Per-cell mean ± CI, paired tests of every policy against `baseline`, and power.

    results: rows {"classifier", "policy", "split", "repeat" (optional, default 0), metric: score,
    "n_test", "n_train" (optional: test and training images of that split)}.
    correction: "nadeau_bengio" (default): the splits are random partitions of one set, so every
    interval, test and power figure uses the corrected variance 1/K + n_test/n_train (metrics/
    power.py's module doc), with the rows' median n_test and n_train; rows without both get the
    plain t (nothing to correct with), and summary["correction"] says which was used and why.
    "none": the plain t-test of independent splits. Policy and baseline are matched on
    (split, repeat); cells with fewer than two matched splits (a smoke test) get no test rather
    than an error. Holm runs per classifier over its policy-vs-baseline comparisons. Keys are
    "classifier|policy" so the dict is JSON-able. Each test carries "power" (`power_statement`
    of its own paired differences) and summary["power"][classifier] states it for the pooled
    SD of that classifier's paired differences (what `results_table` prints).
    """
    if correction not in CORRECTIONS:
        raise CytorayError(
            f"correction={correction!r}: choose one of {', '.join(CORRECTIONS)} "
            "(nadeau_bengio for random splits of one set, none for independent test sets)"
        )
    scores: dict[tuple[str, str], dict[tuple, float]] = {}
    n_test: list[int] = []
    n_train: list[int] = []
    for i, row in enumerate(results):
        missing = [k for k in ("classifier", "policy", "split", metric) if k not in row]
        if missing:
            raise CytorayError(
                f"results row {i} lacks {missing}; every row "
                f"needs classifier, policy, split and {metric!r}"
            )
        cell = scores.setdefault((str(row["classifier"]), str(row["policy"])), {})
        unit = (row["split"], row.get("repeat", 0))
        if unit in cell:
            raise CytorayError(
                f"results hold two rows for {row['classifier']}/{row['policy']} "
                f"split={unit[0]} repeat={unit[1]}; drop the duplicate"
            )
        cell[unit] = float(row[metric])
        if row.get("n_test") is not None:
            n_test.append(int(row["n_test"]))
        if row.get("n_train") is not None:
            n_train.append(int(row["n_train"]))
    if scores and baseline not in {pol for _, pol in scores}:
        raise CytorayError(
            f"baseline policy {baseline!r} is not in the results; "
            f"policies are {sorted({p for _, p in scores})}"
        )

    corr = _correction(correction, results, n_test, n_train)
    r = corr["test_train"]
    cells = {
        _cell_key(c, p): mean_ci(list(v.values()), test_train=r) for (c, p), v in scores.items()
    }
    tests: dict[str, dict] = {}
    powers: dict[str, dict] = {}
    # Test-image counts use a binomial proportion: meaningful for (balanced) accuracy only.
    p_kw = {
        "metric": metric,
        "delta": delta,
        "power": power,
        "n_test": int(np.median(n_test)) if n_test else None,
        "test_train": r,
    }
    for clf in dict.fromkeys(c for c, _ in scores):  # first-seen order
        base = scores.get((clf, baseline))
        if base is None:
            continue
        base_mean = (
            cells[_cell_key(clf, baseline)]["mean"]
            if metric in ("accuracy", "balanced_accuracy")
            else None
        )
        family: dict[str, dict] = {}
        diffs: list[np.ndarray] = []
        for (c, pol), v in scores.items():
            if c != clf or pol == baseline:
                continue
            units = [u for u in v if u in base]  # same splits in the same order for both sides
            if len(units) >= 2:
                a, b = [v[u] for u in units], [base[u] for u in units]
                family[_cell_key(c, pol)] = t = paired_test(a, b, test_train=r)
                d = np.subtract(a, b)
                d = d[np.isfinite(d)]
                t["power"] = power_statement(d, base_mean, **p_kw)
                diffs.append(d)
        adjusted = holm({k: t["p_value"] for k, t in family.items()})
        for k, t in family.items():
            t["p_holm"] = adjusted[k]
        tests.update(family)
        # Pooled SD of the paired differences (variances weighted by their degrees of freedom).
        dfs = [d.size - 1 for d in diffs if d.size >= 2]
        if dfs:
            pooled = math.sqrt(
                sum((d.size - 1) * np.var(d, ddof=1) for d in diffs if d.size >= 2) / sum(dfs)
            )
            powers[clf] = power_statement(
                None, base_mean, sd_diff=pooled, n_splits=max(dfs) + 1, **p_kw
            )
        else:
            powers[clf] = power_statement(None, base_mean, n_splits=len(base), **p_kw)
    return {
        "metric": metric,
        "baseline": baseline,
        "cells": cells,
        "tests": tests,
        "power": powers,
        "correction": corr,
    }


CORRECTIONS = ("nadeau_bengio", "none")


def interval_text(summary: dict) -> str:
    """Which t-interval a summary used, for a table's header (`summarize`'s "correction")."""
    c = summary.get("correction") or {"method": "none", "why": "a summary from before corrections"}
    if c["method"] == "nadeau_bengio":
        return f"corrected for overlapping splits ({c['why']})"
    return f"plain t ({c['why']})"


def _correction(method: str, results: list[dict], n_test: list[int], n_train: list[int]) -> dict:
    """Which interval `summarize` uses: {"method", "test_train", "why"}."""
    if method == "none":
        return {
            "method": "none",
            "test_train": 0.0,
            "why": "asked for the plain t (correction: none)",
        }
    if not results:
        return {"method": "none", "test_train": 0.0, "why": "no rows"}
    if len(n_test) < len(results) or len(n_train) < len(results) or min(n_train, default=0) < 1:
        return {
            "method": "none",
            "test_train": 0.0,
            "why": "the rows lack n_test / n_train (a study recorded before cytoray kept them), "
            "so these intervals are too narrow if the splits share images",
        }
    r = float(np.median(n_test)) / float(np.median(n_train))
    return {
        "method": "nadeau_bengio",
        "test_train": r,
        "why": f"random splits of one set: variance 1/K + n_test/n_train "
        f"({int(np.median(n_test))}/{int(np.median(n_train))} = {r:.3f}), Nadeau & Bengio 2003",
    }


def _p_text(p: float) -> str:
    if not np.isfinite(p):
        return "p=n/a"
    if p < 0.001:
        return "p<0.001"
    return f"p={p:.3f}" if p < 0.01 else f"p={p:.2f}"


def _num(v) -> str:
    return "" if v is None else f"{float(v):.6g}"


def results_table(
    summary: dict, classifiers: Sequence[str], policies: Sequence[str], metric: str
) -> tuple[str, list[list[str]]]:
    """Markdown table (rows = classifiers, columns = policies) and CSV rows of a `summarize` output.

    A cell reads "mean ± CI half-width" in percent; a non-baseline cell with a test adds
    "(Δ in points, Holm-adjusted p)", e.g. "86.7 ± 3.2 (+6.1, p=0.02)". Missing cells print "—".
    """
    baseline = summary.get("baseline", "orig")
    cells, tests = summary["cells"], summary["tests"]
    lines = ["| classifier | " + " | ".join(policies) + " |", "|---|" + "---|" * len(policies)]
    header = [
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
        "hedges_gz",
        "p_wilcoxon",
    ]
    csv_rows: list[list[str]] = [header]
    for clf in classifiers:
        row = [clf]
        for pol in policies:
            key = _cell_key(clf, pol)
            ci = cells.get(key)
            if ci is None:
                row.append("—")
                continue
            text = format_cell(ci)
            t = tests.get(key) if pol != baseline else None
            if t is not None:
                text += f" ({round(100 * t['mean_diff'], 1) + 0.0:+.1f}, {_p_text(t['p_holm'])})"
            row.append(text)
            t = t or {}
            csv_rows.append(
                [
                    clf,
                    pol,
                    metric,
                    _num(ci["mean"]),
                    _num(ci["low"]),
                    _num(ci["high"]),
                    str(ci["n"]),
                    _num(t.get("mean_diff")),
                    _num(t.get("p_value")),
                    _num(t.get("p_holm")),
                    _num(t.get("effect_size")),
                    _num(t.get("hedges_gz")),
                    _num(t.get("p_wilcoxon")),
                ]
            )
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        f"{metric} in %: mean ± 95% t-interval half-width over splits; (Δ, p) = paired t-test "
        f"against {baseline} on the same splits, Δ in points, p Holm-adjusted per classifier."
    )
    if any(c.get("low", 0) < 0 or c.get("high", 1) > 1 for c in cells.values()):
        lines.append(
            "Some intervals pass 0 or 100%: t-intervals over few splits are wide "
            "and left unclipped; more splits (data.n_splits) or repeats narrow them"
            + (
                ", down to the floor that the splits' shared images leave (a larger set lowers it)."
                if (summary.get("correction") or {}).get("method") == "nadeau_bengio"
                else "."
            )
        )
    for (
        clf
    ) in classifiers:  # what this design could have detected (summaries from before power had none)
        if clf in summary.get("power", {}):
            lines.append(f"Power ({clf}): {summary['power'][clf]['statement']}")
    return "\n".join(lines), csv_rows
