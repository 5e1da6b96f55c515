"""How many splits, or test images, a study would need to detect a given difference.

Split from `classification.py` (which re-exports these names and calls them from `summarize`).
None of the anchor codebases tells its users this; with 150 images it is the first question a
reviewer asks: "could this study have seen a 5-point difference at all?"

Splits (the study's own test). The policies are compared by a paired t-test over K splits
(`paired_test`), so its power at K splits, for a true mean difference delta and a standard
deviation sd of the per-split paired differences, is the noncentral-t probability

    power(K) = P(T > t_c) + P(T < -t_c),  T ~ nct(df = K - 1, nc = delta * sqrt(K) / sd),
    t_c = t_{1 - alpha/2, K - 1}

(the formula of statsmodels' TTestPower for a one-sample / paired t-test, which cytoray does not
depend on). `splits_needed` is the smallest K >= 2 with power(K) >= the target, sd being the
observed SD of the paired differences: the spread includes training noise and test-set noise.

Overlapping splits (`test_train` = n_test / n_train > 0). cytoray's splits are K random 3:1:1
partitions of ONE set, so their training sets share most images and their test sets overlap:
the K differences are positively correlated, and the plain t-test above treats them as
independent, which makes its intervals too narrow and its p-values too small (Dietterich 1998;
Bouckaert & Frank 2004 measured type-I errors far above 5%). Nadeau & Bengio (2003) correct the
variance of the mean difference from sd^2 / K to

    sd^2 (1/K + n_test/n_train)

(the corrected resampled t-test; scikit-learn's model-comparison example and Weka use it), so
nc = delta / (sd sqrt(1/K + n_test/n_train)). The second term does not shrink with K: on a
3:1:1 split (n_test/n_train = 1/3) no number of splits brings the standard error under
0.58 sd, so a difference under (z_{1-alpha/2} + z_power) sd sqrt(n_test/n_train) (1.6 sd at
alpha 0.05 and 80% power) is out of reach of ANY number of splits of that set: `splits_needed`
says so (None; `reachable` is False), and only more images can bring it in. `resampled_factor`
is the factor.

Test images (one split on its own). With a balanced test set, balanced accuracy is accuracy, a
binomial proportion; the normal approximation for two independent proportions p1, p2 = p1 +
delta (Fleiss, no continuity correction) needs

    N = (z_{1 - alpha/2} sqrt(2 pbar (1 - pbar)) + z_{power} sqrt(p1 q1 + p2 q2))^2 / delta^2

test images, pbar = (p1 + p2) / 2. It treats the two classifiers' errors as independent; on the
same test images they are positively correlated, and McNemar's test on the discordant pairs
would need fewer (how many fewer needs the per-image predictions, which the study rows lack).
So N is an upper bound on what one split needs, not a promise. Above p1 = 1 - delta the
difference is taken downwards (p2 = p1 - delta), the only one that can exist.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from cytoray.errors import CytorayError

MAX_SPLITS = 100_000  # beyond this the answer is "not with this design", reported as None


def _check(delta: float, alpha: float, power: float) -> None:
    if not 0 < delta < 1:
        raise CytorayError(
            f"delta={delta}: the difference to detect is "
            "a fraction in (0, 1), e.g. 0.05 for 5 points"
        )
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise CytorayError(
            f"alpha={alpha}, power={power}: both must be in (0, 1), e.g. 0.05 and 0.8"
        )


def resampled_factor(n_splits: int, test_train: float = 0.0) -> float:
    """The variance of a mean over `n_splits` splits, in units of one split's variance: 1/K for
    independent splits, 1/K + n_test/n_train for random splits of one set (Nadeau & Bengio 2003;
    module doc). test_train = 0 is the plain t-test's 1/K."""
    if n_splits < 1:
        raise CytorayError(f"n_splits={n_splits}: a mean needs at least one split")
    if not math.isfinite(test_train) or test_train < 0:
        raise CytorayError(
            f"test_train={test_train}: n_test / n_train must be finite and >= 0 (0 = plain t)"
        )
    return 1.0 / n_splits + test_train


def paired_t_power(
    n_splits: int,
    sd_diff: float,
    delta: float = 0.05,
    alpha: float = 0.05,
    test_train: float = 0.0,
) -> float:
    """Power of the two-sided paired t-test over `n_splits` splits (noncentral t, module doc);
    `test_train` > 0: the Nadeau–Bengio corrected test of overlapping splits."""
    if n_splits < 2:
        return float("nan")
    if sd_diff == 0:
        return 1.0  # no spread: any nonzero mean difference is certain
    df = n_splits - 1
    nc = delta / (sd_diff * math.sqrt(resampled_factor(n_splits, test_train)))
    t_c = stats.t.ppf(1 - alpha / 2, df)
    upper, lower = stats.nct.sf(t_c, df, nc), stats.nct.cdf(-t_c, df, nc)
    # scipy's nct returns NaN deep in a tail (lower tail at nc ~ 40: < 1e-40); such a tail is 0.
    return float(
        min(
            1.0,
            np.nan_to_num(upper, nan=1.0 - stats.nct.cdf(t_c, df, nc))
            + np.nan_to_num(lower, nan=0.0),
        )
    )


def mde_floor(
    sd_diff: float, alpha: float = 0.05, power: float = 0.8, test_train: float = 0.0
) -> float:
    """The smallest difference infinitely many overlapping splits detect with `power`:
    (z_{1-alpha/2} + z_power) sd sqrt(test_train), the corrected test's limit as K grows (module
    doc); 0 for independent splits."""
    return float(
        (stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * sd_diff * math.sqrt(test_train)
    )


def reachable(
    sd_diff: float,
    delta: float = 0.05,
    alpha: float = 0.05,
    power: float = 0.8,
    test_train: float = 0.0,
) -> bool:
    """Whether some number of splits detects `delta` with `power`: always for independent splits;
    for overlapping ones (test_train > 0) only while delta exceeds `mde_floor`."""
    if sd_diff == 0 or test_train == 0:
        return True
    return bool(delta > mde_floor(sd_diff, alpha, power, test_train))


def splits_needed(
    sd_diff: float,
    delta: float = 0.05,
    alpha: float = 0.05,
    power: float = 0.8,
    test_train: float = 0.0,
) -> int | None:
    """Smallest number of splits (>= 2) whose paired t-test reaches `power`; None beyond MAX_SPLITS,
    or when no number of overlapping splits can (`reachable`)."""
    _check(delta, alpha, power)
    if not np.isfinite(sd_diff) or sd_diff < 0:
        raise CytorayError(
            f"sd_diff={sd_diff}: the SD of per-split paired differences must be finite and >= 0"
        )
    if sd_diff == 0:
        return 2
    if not reachable(sd_diff, delta, alpha, power, test_train):
        return None
    # The normal approximation is a lower bound (t has heavier tails); step up from just below it:
    # 1/K + r <= (delta / (z sd))^2.
    z = (stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * sd_diff / delta
    room = 1.0 / (z * z) - test_train
    n = max(2, int(1.0 / room)) if room > 1.0 / MAX_SPLITS else MAX_SPLITS + 1
    if n > MAX_SPLITS:
        return None
    while paired_t_power(n, sd_diff, delta, alpha, test_train) < power:
        n += 1
        if n > MAX_SPLITS:
            return None
    while n > 2 and paired_t_power(n - 1, sd_diff, delta, alpha, test_train) >= power:
        n -= 1
    return n


def images_needed(
    p_baseline: float, delta: float = 0.05, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Test images for one split to detect `delta` in (balanced) accuracy from `p_baseline` (module doc)."""
    _check(delta, alpha, power)
    if not 0 <= p_baseline <= 1:
        raise CytorayError(f"p_baseline={p_baseline}: a score in [0, 1]")
    p1 = p_baseline
    p2 = p1 + delta if p1 + delta <= 1 else p1 - delta
    pbar = (p1 + p2) / 2
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    n = (
        za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    ) ** 2 / delta**2
    # 1e-9: a result that is an integer up to round-off stays that integer
    return max(1, math.ceil(n - 1e-9))


def power_statement(
    diffs=None,
    baseline_score: float | None = None,
    *,
    n_test: int | None = None,
    metric: str = "balanced_accuracy",
    delta: float = 0.05,
    alpha: float = 0.05,
    power: float = 0.8,
    sd_diff: float | None = None,
    n_splits: int | None = None,
    test_train: float = 0.0,
) -> dict:
    """What the observed spread says about detecting `delta`: a dict and a sentence for a table.

    diffs: per-split paired differences (policy − baseline, fractions); or give `sd_diff` and
    `n_splits` directly (e.g. a pooled SD). baseline_score: the baseline's mean score (for the
    test-image count). n_test: test images per split in this study, quoted when given.
    test_train: n_test / n_train of overlapping splits of one set, > 0 for the Nadeau–Bengio
    corrected test (module doc); 0 for the plain paired t-test of independent splits.
    Returns {"delta", "alpha", "power", "metric", "sd_diff", "n_splits", "power_now",
    "splits_needed", "baseline_score", "test_images_needed", "n_test", "method_splits",
    "method_images", "min_detectable_effect" (the delta reached with `power` now), "test_train",
    "reachable" (some number of splits detects `delta`), "mde_limit" (what infinitely many
    overlapping splits would detect: 0 for independent ones), "statement"}; quantities that
    cannot be computed are None.
    """
    _check(delta, alpha, power)
    if diffs is not None:
        d = np.asarray(diffs, dtype=np.float64).ravel()
        d = d[np.isfinite(d)]
        n_splits = int(d.size)
        sd_diff = float(np.std(d, ddof=1)) if d.size >= 2 else None
    have_sd = sd_diff is not None and n_splits is not None and n_splits >= 2
    need_k = splits_needed(sd_diff, delta, alpha, power, test_train) if have_sd else None
    now = paired_t_power(n_splits, sd_diff, delta, alpha, test_train) if have_sd else None
    need_n = (
        images_needed(baseline_score, delta, alpha, power) if baseline_score is not None else None
    )
    out = {
        "delta": delta,
        "alpha": alpha,
        "power": power,
        "metric": metric,
        "sd_diff": sd_diff,
        "n_splits": n_splits,
        "power_now": now,
        "splits_needed": need_k,
        "baseline_score": baseline_score,
        "test_images_needed": need_n,
        "n_test": n_test,
        "method_splits": "paired t-test, noncentral t"
        + (
            f", Nadeau–Bengio corrected variance (1/K + n_test/n_train = 1/K + {test_train:.3g})"
            if test_train
            else ""
        ),
        "test_train": test_train,
        "reachable": reachable(sd_diff, delta, alpha, power, test_train) if have_sd else None,
        "mde_limit": mde_floor(sd_diff, alpha, power, test_train) if have_sd else None,
        "method_images": "normal approximation, two independent proportions (balanced test set; "
        "an upper bound for a paired McNemar test)",
    }
    out["min_detectable_effect"] = (
        min_detectable_effect(n_splits, sd_diff, alpha, power, test_train) if have_sd else None
    )
    out["statement"] = _sentence(out)
    return out


def _sentence(p: dict) -> str:
    pts = round(100 * p["delta"], 1)
    head = (
        f"To detect a {pts:g}-point difference in {p['metric']} with {100 * p['power']:.0f}% power "
        f"(two-sided α = {p['alpha']:g})"
    )
    parts = []
    if p["sd_diff"] is not None:
        k = p["splits_needed"]
        r = p.get("test_train") or 0.0
        test = "paired t-test, noncentral t" + (
            f", corrected for the splits' overlap (n_test/n_train {r:.2f}, Nadeau–Bengio)"
            if r
            else ""
        )
        spread = (
            f"SD of paired differences {100 * p['sd_diff']:.1f} points over {p['n_splits']} "
            f"splits, power now {100 * p['power_now']:.0f}%; {test}"
        )
        if p.get("reachable") is False:
            parts.append(
                "no number of splits of this set suffices at the observed spread: the splits share "
                "their images, so even infinitely many detect only "
                f"{100 * p['mde_limit']:.1f} points ({spread}); more images are needed"
            )
        else:
            k_text = f"about {k} splits" if k is not None else f"more than {MAX_SPLITS:,} splits"
            parts.append(f"{k_text} are needed at the observed spread ({spread})")
    elif p["n_splits"] is not None:
        parts.append(
            f"the number of splits cannot be estimated from {p['n_splits']} split(s) (no spread)"
        )
    if p["test_images_needed"] is not None:
        used = f"; this study: {p['n_test']}" if p["n_test"] else ""
        parts.append(
            f"about {p['test_images_needed']:,} test images per split at a "
            f"{100 * p['baseline_score']:.1f}% baseline (normal approximation, two independent "
            f"proportions{used})"
        )
    if not parts:
        return head + ": no estimate (needs per-split differences or a baseline score)."
    return head + ", " + ", or ".join(parts) + "."


# ----------------------------------------------------------------------------- the verdict


def min_detectable_effect(
    n_splits: int | None,
    sd_diff: float | None,
    alpha: float = 0.05,
    power: float = 0.8,
    test_train: float = 0.0,
) -> float | None:
    """Smallest true paired difference (a fraction) the paired t-test over `n_splits` splits detects with
    `power` at the observed SD of paired differences: the root of power(K, sd, delta) = power (module doc;
    `test_train` > 0: the corrected test of overlapping splits).
    None without a spread (fewer than 2 splits); 0 when every split moved by the same amount."""
    if n_splits is None or n_splits < 2 or sd_diff is None or not math.isfinite(sd_diff):
        return None
    if sd_diff == 0:
        return 0.0
    gap = lambda d: paired_t_power(n_splits, sd_diff, d, alpha, test_train) - power  # noqa: E731 (increasing in d, < 0 at 0)
    hi = sd_diff
    while gap(hi) < 0:
        hi *= 2.0
    from scipy.optimize import brentq

    return float(brentq(gap, 0.0, hi, xtol=1e-6))


def _pts(x: float, sign: bool = True) -> str:
    v = round(100 * x, 1) + 0.0  # no "-0.0"
    return f"{v:+.1f}".replace("-", "−") if sign else f"{v:.1f}"


def verdict(
    policy: str,
    test: dict,
    *,
    baseline: str = "orig",
    effect: float = 0.05,
    alpha: float = 0.05,
    power: float = 0.8,
    metric: str = "balanced_accuracy",
) -> dict:
    """One sentence a reviewer can read: `policy` against `baseline` from a `summarize` test dict
    (mean_diff, ci_low, ci_high, p_holm, n, power.sd_diff).

    The call: "higher" / "lower" when the Holm-adjusted p is below `alpha` (and the interval, unadjusted,
    excludes 0); "no effect" only when the 95% interval lies inside ±`effect`, the difference that matters,
    so that a difference of that size is excluded; "inconclusive" otherwise, which is what a wide
    interval around 0 is: absence of evidence, not evidence of absence. Beside it, the smallest
    difference this design could detect with `power` at its observed spread (`min_detectable_effect`).
    Returns {"policy", "baseline", "diff", "low", "high", "p_holm", "n", "sd_diff", "mde", "test_train",
    "effect", "call", "sentence"}.
    """
    d, lo, hi = test["mean_diff"], test["ci_low"], test["ci_high"]
    p = test.get("p_holm", test.get("p_value", float("nan")))
    n = test.get("n")
    sd = (test.get("power") or {}).get("sd_diff")
    r = test.get("test_train") or 0.0  # the corrected test of overlapping splits (module doc)
    if (
        sd is None and n and n >= 2 and math.isfinite(hi - lo)
    ):  # summaries from before: the SD back from the interval
        sd = (hi - lo) / 2 / math.sqrt(resampled_factor(n, r)) / stats.t.ppf(0.975, n - 1)
    mde = min_detectable_effect(n, sd, alpha, power, r)
    e = _pts(effect, sign=False)
    if math.isfinite(p) and p < alpha and (lo > 0 or hi < 0):
        call = "higher" if d > 0 else "lower"
        why = f"{call} than {baseline}"
    elif math.isfinite(lo) and -effect < lo and hi < effect:
        call, why = (
            "no effect",
            f"no effect: the interval excludes differences of ±{e} points or more",
        )
    else:
        call = "inconclusive"
        if lo > 0 or hi < 0:
            why = (
                "inconclusive: the interval (unadjusted) excludes 0, but the Holm-adjusted "
                f"p is not below {alpha:g} once every policy's comparison is counted"
            )
        else:
            side = "±" if lo <= -effect and hi >= effect else "+" if hi >= effect else "−"
            why = f"inconclusive: the interval holds both 0 and a difference of {side}{e} points"
    p_txt = (
        "n/a"
        if not math.isfinite(p)
        else "< 0.001"
        if p < 0.001
        else f"= {p:.3f}"
        if p < 0.01
        else f"= {p:.2f}"
    )
    mde_txt = (
        "the smallest difference this study could detect cannot be estimated (fewer than 2 splits)"
        if mde is None
        else f"the smallest difference this study could detect with {100 * power:.0f}% power is {_pts(mde, False)} "
        f"points (SD of paired differences {_pts(sd, False)} over {n} splits"
        + (
            f"; the splits share their images, so no number of them detects under "
            f"{_pts(mde_floor(sd, alpha, power, r), False)}"
            " points"
            if r and sd
            else ""
        )
        + ")"
    )
    sentence = (
        f"{policy} vs {baseline}: {_pts(d)} points of {metric} (95% CI {_pts(lo)} to {_pts(hi)}), "
        f"Holm-adjusted p {p_txt}; {mde_txt}. Verdict: {why}."
    )
    return {
        "policy": policy,
        "baseline": baseline,
        "diff": d,
        "low": lo,
        "high": hi,
        "p_holm": p,
        "n": n,
        "sd_diff": sd,
        "mde": mde,
        "test_train": r,
        "effect": effect,
        "call": call,
        "sentence": sentence,
    }


def verdicts(summary: dict, classifier: str, policies, effect: float = 0.05) -> list[dict]:
    """`verdict` of every policy of `classifier` with a paired test in a `summarize` output, in `policies`' order."""
    base = summary.get("baseline", "orig")
    out = []
    for pol in policies:
        t = summary["tests"].get(f"{classifier}|{pol}")
        if pol != base and t is not None:
            out.append(
                verdict(
                    pol,
                    t,
                    baseline=base,
                    effect=effect,
                    metric=summary.get("metric", "balanced_accuracy"),
                )
            )
    return out
