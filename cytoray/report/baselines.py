"""Report sections of the augmentation-baselines study. It opens with the verdict: one sentence per
policy against orig (paired difference, 95% interval, Holm-adjusted p, the smallest difference the
study could detect; "no effect" only when the interval excludes the difference that matters, the
study's `effect`), and the paired figure (each policy's difference from orig, its interval, one dot
per split). Then SynCGAN Tables 2 and 3 as in the paper (rows: classifiers, columns: policies),
mean ± 95% CI over splits; the per-split scores; FID/KID per policy.

Bars of each policy's own mean and interval are not drawn: the policies share their splits, so
unpaired intervals (which pass 100% on three splits) hide what the paired differences show.

Everything is recomputed from the cells' child runs with the same `summarize` the study used,
so a table here and the study's table.md agree to the digit.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..metrics import names
from . import figures, realism
from .common import fmt, run_images, split_protocol
from .html import Page
from .store import Recorded

TABLE2 = ("orig", "trad", "syncgan", "trad+syncgan")  # real, traditional and SynCGAN augmentation
# synthetic-only and the vanilla-GAN control (orig for reference)
TABLE3 = (
    "orig",
    "syncgan-only",
    "gan",
    "orig+gan",
)
# the prefixes of the per-class names (`<prefix>/<class>`, `<prefix>_floor/<class>`)
FID, KID = names.FID_TEST.rsplit("/", 1)[0], names.KID_TEST.rsplit("/", 1)[0]


def cell_rows(rec: Recorded, metric: str) -> list[dict]:
    """One row per finished cell (classifier, policy, split, repeat); a resumed study's duplicate keeps the newest."""
    rows: dict[tuple, dict] = {}
    for run in rec.children:
        t, m = run.data.tags, run.data.metrics
        if f"test_{metric}" not in m or not {"classifier", "policy", "split"} <= set(t):
            continue
        key = (t["classifier"], t["policy"], int(t["split"]), int(t.get("repeat", 0)))
        rows[key] = {
            "classifier": key[0],
            "policy": key[1],
            "split": key[2],
            "repeat": key[3],
            metric: m[f"test_{metric}"],
            "n_test": int(m["n_test"]) if "n_test" in m else None,
            "n_train": int(m["n_train"]) if "n_train" in m else None,
            "metrics": m,
        }
    return list(rows.values())


def _cell(summary: dict, clf: str, pol: str, baseline: str) -> str:
    ci = summary["cells"].get(f"{clf}|{pol}")
    if ci is None:
        return "—"
    hw = ci.get("half_width", float("nan"))
    text = f"{100 * ci['mean']:.1f}" + (
        f" ± {100 * hw:.1f}" if ci.get("n", 0) > 1 and math.isfinite(hw) else ""
    )
    t = summary["tests"].get(f"{clf}|{pol}") if pol != baseline else None
    if t is not None:
        p = t["p_holm"]
        ptxt = (
            "p=n/a"
            if not math.isfinite(p)
            else "p<0.001"
            if p < 0.001
            else f"p={p:.3f}"
            if p < 0.01
            else f"p={p:.2f}"
        )
        text += f" ({100 * t['mean_diff']:+.1f}, {ptxt})"
    return text


def build(rec: Recorded, page: Page, tmp: Path) -> None:
    from ..metrics.classification import interval_text, summarize

    metric = rec.param("metric", "balanced_accuracy")
    rows = cell_rows(rec, metric)
    if not rows:
        page.p(f"No finished cell recorded test_{metric}; nothing to tabulate.")
        return
    classifiers = list(
        dict.fromkeys(r["classifier"] for r in sorted(rows, key=lambda r: r["classifier"]))
    )
    recorded = [p.strip(" '\"") for p in (rec.param("policies", "[]").strip("[]").split(","))]
    policies = [p for p in recorded if any(r["policy"] == p for r in rows)] or sorted(
        {r["policy"] for r in rows}
    )
    effect = float(rec.param("effect", "0.05"))
    summary = summarize(
        [{k: v for k, v in r.items() if k != "metrics"} for r in rows],
        metric=metric,
        baseline="orig",
        delta=effect,
        # a study from before the key: corrected where its rows carry n_train (they do not)
        correction=rec.param("correction", "nadeau_bengio"),
    )
    splits = sorted({r["split"] for r in rows})
    repeats = len({r["repeat"] for r in rows})
    n_test = sorted({r["n_test"] for r in rows if r["n_test"] is not None})
    proto = (
        f"Split protocol: {split_protocol(rec, len(splits))}; {repeats} classifier "
        f"seed(s) per split; ratio {rec.param('ratio', '?')} synthetic:real per class; "
        f"test images per split: {', '.join(map(str, n_test)) or '?'}. Cells: test "
        f"{metric} in %, mean ± 95% t-interval half-width over {len(splits)} splits × "
        f"{repeats} repeats; (Δ, p): paired t-test against orig on the same splits, Δ in "
        f"points, p Holm-adjusted per classifier over its {len(policies) - 1} comparisons. "
        f"Intervals, tests and power: {interval_text(summary)}."
    )
    power = [
        f"Power ({c}): {summary['power'][c]['statement']}"
        for c in classifiers
        if c in summary.get("power", {})
    ]
    verdict_section(page, summary, rows, classifiers, policies, metric, effect, proto)
    # 1. Tables 2 and 3 (and any other policy the study ran), laid out as in the paper.
    rest = ["orig", *[p for p in policies if p not in TABLE2 and p not in TABLE3]]
    for title, cols in (
        ("Table 2 — real, traditional and SynCGAN augmentation", TABLE2),
        ("Table 3 — synthetic only and the vanilla-GAN control", TABLE3),
        ("Other policies", rest),
    ):
        cols = [p for p in cols if p in policies]
        if len(cols) < 2 and not (title.startswith("Table 2") and cols):
            continue
        page.h2(title)
        page.table(
            ["classifier", *cols],
            [[c, *(_cell(summary, c, p, "orig") for p in cols)] for c in classifiers],
            proto + (" " + " ".join(power) if power else ""),
        )
    # 2. Per-split scores (what the intervals summarise).
    page.table(
        ["classifier", "policy", *(f"split {k}" for k in splits)],
        [
            [
                c,
                p,
                *(
                    fmt(
                        _mean(
                            [
                                r[metric]
                                for r in rows
                                if (r["classifier"], r["policy"], r["split"]) == (c, p, k)
                            ]
                        ),
                        3,
                    )
                    for k in splits
                ),
            ]
            for c in classifiers
            for p in policies
        ],
        f"Test {metric} per split (mean over repeats). {proto}",
        left=2,
    )
    fid_section(rec, page, rows, policies, tmp, splits)
    realism.baselines_section(rec, page, tmp)  # per generator: P/R/D/C, copying, CAS


def paired_points(
    rows: list[dict], metric: str, clf: str, policy: str, baseline: str = "orig"
) -> list[float]:
    """The per-split (× repeat) paired differences policy − baseline that the test and its interval summarise."""
    base = {
        (r["split"], r["repeat"]): r[metric]
        for r in rows
        if (r["classifier"], r["policy"]) == (clf, baseline)
    }
    return [
        r[metric] - base[(r["split"], r["repeat"])]
        for r in sorted(rows, key=lambda r: (r["split"], r["repeat"]))
        if (r["classifier"], r["policy"]) == (clf, policy) and (r["split"], r["repeat"]) in base
    ]


def verdict_section(
    page: Page,
    summary: dict,
    rows: list[dict],
    classifiers: list[str],
    policies: list[str],
    metric: str,
    effect: float,
    proto: str,
) -> None:
    """The verdict sentences (metrics/power.py) and the paired figure, first in the report."""
    from ..metrics.classification import interval_text
    from ..metrics.power import verdicts

    by = {c: verdicts(summary, c, policies, effect) for c in classifiers}
    if not any(by.values()):
        page.p(
            "No policy has a paired test against orig (it "
            "needs at least 2 shared splits): no verdict."
        )
        return
    page.h2("Verdict: each policy against orig")
    many = len(classifiers) > 1
    for c in classifiers:
        for v in by[c]:
            page.p((f"{c}: " if many else "") + v["sentence"])
    pts = round(100 * effect, 1)
    page.p(
        f"The difference that matters is {pts:g} points (the "
        'study\'s `effect`): "no effect" is said only when the '
        "95% interval of the paired difference lies inside "
        f"±{pts:g} points; an interval that holds 0 and ±{pts:g} "
        "is inconclusive, however large its p-value. "
        "Intervals are paired t-intervals over the same splits "
        f"(unadjusted for multiplicity; {interval_text(summary)}); p-values are Holm-adjusted "
        "per classifier."
    )
    panels = {
        c: [
            {
                "policy": v["policy"],
                "diff": v["diff"],
                "low": v["low"],
                "high": v["high"],
                "points": paired_points(rows, metric, c, v["policy"]),
                "note": f"{v['call']}, p={v['p_holm']:.2g}"
                + (f", MDE {100 * v['mde']:.1f}" if v["mde"] is not None else ""),
            }
            for v in by[c]
        ]
        for c in classifiers
        if by[c]
    }
    fig = figures.paired_differences(
        panels,
        effect,
        f"difference in test {metric} from orig (points)",
        f"Paired differences from orig, test {metric}",
    )
    page.figure(
        fig,
        "paired_differences",
        f"Each policy's test {metric} minus orig's on the same split: diamond, the mean; line, its "
        f"95% paired t-interval (unclipped); dots, one per split (× repeat); green band, ±{pts:g} "
        "points, the difference that matters. Right: the verdict, the Holm-adjusted p and the "
        f"minimum detectable effect (MDE, points, 80% power at the observed spread). {proto}",
    )


def _mean(v: list[float]) -> float | None:
    return sum(v) / len(v) if v else None


def fid_section(
    rec: Recorded, page: Page, rows: list[dict], policies: list[str], tmp: Path, splits: list[int]
) -> None:
    """FID/KID of the synthetic images each policy trains on, against each split's real test images."""
    from ..metrics.classification import mean_ci

    per: dict[str, dict[int, dict]] = {}
    for r in rows:  # one figure per (policy, split): the generator was scored once per split
        if f"{FID}/all" in r["metrics"]:
            per.setdefault(r["policy"], {}).setdefault(r["split"], r["metrics"])
    if not per:
        return
    classes = sorted(
        {
            k.split("/", 1)[1]
            for m in next(iter(per.values())).values()
            for k in m
            if k.startswith(f"{FID}/")
        }
        - {"all"}
    )
    groups = [*classes, "all"]
    shown = [p for p in policies if p in per]
    table, values = [], {}
    for p in shown:
        by = per[p]
        fid = {
            g: mean_ci([m[f"{FID}/{g}"] for m in by.values() if f"{FID}/{g}" in m]) for g in groups
        }
        kid = (
            mean_ci([m[f"{KID}/all"] for m in by.values() if f"{KID}/all" in m])
            if any(f"{KID}/all" in m for m in by.values())
            else None
        )
        floor = [m[f"{FID}_floor/all"] for m in by.values() if f"{FID}_floor/all" in m]
        values.update({(g, p): (fid[g]["mean"], fid[g]["half_width"]) for g in groups})
        table.append(
            [
                p,
                *(_ci(fid[g]) for g in groups),
                _ci(kid, 4) if kid else "—",
                fmt(_mean(floor), 3),
                str(len(by)),
            ]
        )
    n_fake = sorted(
        {
            int(m[f"{FID}_n_fake/all"])
            for by in per.values()
            for m in by.values()
            if f"{FID}_n_fake/all" in m
        }
    )
    cap = (
        f"Synthetic images of the policy's generator (n={', '.join(map(str, n_fake)) or '?'} "
        "pooled) against the real test images of each split (InceptionV3 pool features, "
        "each image to 299 px), mean ± 95% t-interval over splits. Policies without "
        "a generator (orig, trad) train on real images only and have no figure. "
        "Floor: real-vs-real FID of two halves of the same test images, what these "
        f"sample sizes allow. Split protocol: {split_protocol(rec, len(splits))}."
    )
    page.h2("FID / KID per policy (test split)")
    page.table(
        ["policy", *(f"FID {g}" for g in groups), "KID all", "floor FID all", "splits"], table, cap
    )
    fig = figures.grouped_bars(
        groups,
        shown,
        values,
        "FID (lower is better)",
        "FID of each policy's synthetic images, per class",
    )
    page.figure(fig, "fid_per_policy", cap)
    for path, img in run_images(
        rec, rec.parent, "figures", tmp, "real_vs_synthetic_"
    ):  # figures/<generator>/...png
        g = Path(path).parent.name
        page.image(
            img,
            f"{g}, split 0: real validation images against its synthetic ones ({img.stem}).",
            name=f"{g}_{img.name}",
        )


def _ci(ci: dict | None, digits: int = 1) -> str:
    if ci is None:
        return "—"
    hw = ci.get("half_width", float("nan"))
    return f"{ci['mean']:.{digits}f}" + (f" ± {hw:.{digits}f}" if math.isfinite(hw) else "")
