"""A trial's objective averaged over K seeded splits (`tune.splits`).

One split's validation set holds 30-40 images on a small dataset, so one image moves balanced
accuracy by ~3 points, and a search that scores each trial on it chases that noise. With
`tune.splits: K` a trial scores its configuration on K seeded splits (seeds data.split_seed ..
+K-1; split 0 is the split a one-split study uses), one after another inside the trial (the
simplest honest order: no split waits on another trial's resources, and the stage cache serves a
generator trained on a split to every trial that shares its settings and that split).

After each split the trial reports the running mean over the splits scored so far, with its
spread (`<metric>_sd`, sample SD) and every split's value (`<metric>/split<j>`). Every trial
scores the same splits in the same order, so ASHA (whose time unit is then one scored split)
compares trials on the mean of the same splits, and Optuna is told the mean. A report carries
`final: 1` only when all K splits are in: a trial stopped or killed part way is never counted as
whole. Finished splits are kept as JSON (`tune_state.SplitResults`) so a restarted trial does
not score them twice.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..metrics import names
from .tune_state import SplitResults

# besides every val_* classifier metric
SPREAD_KEYS = (
    names.FID_VAL,
    "filter_rejected_share",
)


def _number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def has_spread(key: str) -> bool:
    return (key.startswith("val_") and "/" not in key) or key in SPREAD_KEYS


def jsonable(result: dict) -> dict:
    """A split's report as plain JSON values (numbers as float, mappings such as the run's tags
    and params as mappings, the rest as text)."""
    return {
        k: float(v)
        if _number(v)
        else jsonable(v)
        if isinstance(v, dict)
        else v
        if isinstance(v, (str, int, type(None)))
        else str(v)
        for k, v in result.items()
    }


def combine(results: list[dict], spread: Callable[[str], bool] = has_spread) -> dict:
    """The mean over splits of every number all splits report; for the selection metrics also the
    sample SD (`_sd`, 0 for one split) and each split's value (`/split<j>`). Text values (figure
    folders, bundles, tags) are split 0's. `splits_scored`: how many splits the mean covers."""
    out = dict(results[0])
    for k in results[0]:
        vals = [r.get(k) for r in results]
        if all(_number(v) for v in vals):
            out[k] = float(np.mean(vals))
            if spread(k):
                out[f"{k}_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
                out.update({f"{k}/split{j}": float(v) for j, v in enumerate(vals)})
    out[names.SPLITS_SCORED] = len(results)
    return out


def score_splits(
    splits: list,
    score: Callable[[int, object], dict],
    store: SplitResults,
    report: Callable[[dict], None],
) -> dict:
    """Score `splits` (each with a `key`: its manifest hash) in order with `score(j, split)` (a split
    the store holds for this config and this split's key is reused, not rescored), report the running mean after each split; the last
    report (all splits in) carries `final: 1`, every earlier one `final: 0`. Returns the last report."""
    results, agg = [], {}
    for j, sp in enumerate(splits):
        r = store.get(j, sp.key)
        if r is None:
            r = jsonable(score(j, sp))
            store.put(j, sp.key, r)
        results.append(r)
        agg = {
            **combine(results),
            names.FINAL: int(len(results) == len(splits)),
            "splits_total": len(splits),
        }
        report(agg)
    return agg
