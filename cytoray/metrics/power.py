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


def paired_t_power(
    n_splits: int, sd_diff: float, delta: float = 0.05, alpha: float = 0.05
) -> float:
    """Power of the two-sided paired t-test over `n_splits` splits (noncentral t, module doc)."""
    if n_splits < 2:
        return float("nan")
    if sd_diff == 0:
        return 1.0  # no spread: any nonzero mean difference is certain
    df = n_splits - 1
    nc = delta * math.sqrt(n_splits) / sd_diff
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


def splits_needed(
    sd_diff: float, delta: float = 0.05, alpha: float = 0.05, power: float = 0.8
) -> int | None:
    """Smallest number of splits (>= 2) whose paired t-test reaches `power`; None beyond MAX_SPLITS."""
    _check(delta, alpha, power)
    if not np.isfinite(sd_diff) or sd_diff < 0:
        raise CytorayError(
            f"sd_diff={sd_diff}: the SD of per-split paired differences must be finite and >= 0"
        )
    if sd_diff == 0:
        return 2
    # The normal approximation is a lower bound (t has heavier tails); step up from just below it.
    z = (stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * sd_diff / delta
    n = max(2, int(z * z))
    if n > MAX_SPLITS:
        return None
    while paired_t_power(n, sd_diff, delta, alpha) < power:
        n += 1
        if n > MAX_SPLITS:
            return None
    while n > 2 and paired_t_power(n - 1, sd_diff, delta, alpha) >= power:
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
) -> dict:
    """What the observed spread says about detecting `delta`: a dict and a sentence for a table.

    diffs: per-split paired differences (policy − baseline, fractions); or give `sd_diff` and
    `n_splits` directly (e.g. a pooled SD). baseline_score: the baseline's mean score (for the
    test-image count). n_test: test images per split in this study, quoted when given.
    Returns {"delta", "alpha", "power", "metric", "sd_diff", "n_splits", "power_now",
    "splits_needed", "baseline_score", "test_images_needed", "n_test", "method_splits",
    "method_images", "min_detectable_effect" (the delta reached with `power` now), "statement"}; quantities
    that cannot be computed are None.
    """
    _check(delta, alpha, power)
    if diffs is not None:
        d = np.asarray(diffs, dtype=np.float64).ravel()
        d = d[np.isfinite(d)]
        n_splits = int(d.size)
        sd_diff = float(np.std(d, ddof=1)) if d.size >= 2 else None
    have_sd = sd_diff is not None and n_splits is not None and n_splits >= 2
    need_k = splits_needed(sd_diff, delta, alpha, power) if have_sd else None
    now = paired_t_power(n_splits, sd_diff, delta, alpha) if have_sd else None
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
        "method_splits": "paired t-test, noncentral t",
        "method_images": "normal approximation, two independent proportions (balanced test set; "
        "an upper bound for a paired McNemar test)",
    }
    out["min_detectable_effect"] = (
        min_detectable_effect(n_splits, sd_diff, alpha, power) if have_sd else None
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
        k_text = f"about {k} splits" if k is not None else f"more than {MAX_SPLITS:,} splits"
        parts.append(
            f"{k_text} are needed at the observed spread (SD of paired differences "
            f"{100 * p['sd_diff']:.1f} points over {p['n_splits']} splits, power now "
            f"{100 * p['power_now']:.0f}%; paired t-test, noncentral t)"
        )
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
    n_splits: int | None, sd_diff: float | None, alpha: float = 0.05, power: float = 0.8
) -> float | None:
    """Smallest true paired difference (a fraction) the paired t-test over `n_splits` splits detects with
    `power` at the observed SD of paired differences: the root of power(K, sd, delta) = power (module doc).
    None without a spread (fewer than 2 splits); 0 when every split moved by the same amount."""
    if n_splits is None or n_splits < 2 or sd_diff is None or not math.isfinite(sd_diff):
        return None
    if sd_diff == 0:
        return 0.0
    gap = lambda d: paired_t_power(n_splits, sd_diff, d, alpha) - power  # noqa: E731 (increasing in d, < 0 at 0)
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
    Returns {"policy", "baseline", "diff", "low", "high", "p_holm", "n", "sd_diff", "mde", "effect", "call", "sentence"}.
    """
    d, lo, hi = test["mean_diff"], test["ci_low"], test["ci_high"]
    p = test.get("p_holm", test.get("p_value", float("nan")))
    n = test.get("n")
    sd = (test.get("power") or {}).get("sd_diff")
    if (
        sd is None and n and n >= 2 and math.isfinite(hi - lo)
    ):  # summaries from before: the SD back from the interval
        sd = (hi - lo) / 2 * math.sqrt(n) / stats.t.ppf(0.975, n - 1)
    mde = min_detectable_effect(n, sd, alpha, power)
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
        f"points (SD of paired differences {_pts(sd, False)} over {n} splits)"
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
