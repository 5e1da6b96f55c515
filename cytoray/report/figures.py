"""The report's figures, each from recorded numbers only (matplotlib's object API, no pyplot:
building a report must not change a caller's plotting state or need a display).

Conventions a reader can rely on across figures: the best trial is a gold star, the worst a red
cross; trials ASHA stopped early are hollow (their figure is from an unfinished classifier);
error bars are 95% t-intervals over splits; every axis names the metric key as MLflow shows it.
"""

from __future__ import annotations

import math

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

BEST, WORST = (
    dict(marker="*", s=260, c="#e6a700", edgecolors="black", zorder=5),
    dict(marker="X", s=140, c="#c0392b", zorder=5),
)
PALETTE = [
    "#4c72b0",
    "#dd8452",
    "#55a868",
    "#c44e52",
    "#8172b3",
    "#937860",
    "#da8bc3",
    "#8c8c8c",
    "#ccb974",
    "#64b5cd",
]


def _log_scale(values: list[float]) -> bool:
    """A setting spread over more than a decade and a half (e.g. λ in 1..100) reads better on a log axis."""
    pos = [v for v in values if v > 0]
    return len(pos) == len(values) and len(pos) > 1 and max(pos) / min(pos) > 30


def _grid(n: int, ncols: int = 3, w: float = 4.2, h: float = 3.3) -> tuple[Figure, list]:
    cols = max(1, min(ncols, n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(w * cols, h * rows), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    return fig, axes


def settings_scatter(points: list[dict], settings: list[str], metric: str, title: str) -> Figure:
    """The metric against each searched setting. points: {"settings": {k: x}, "y", "status", "best", "worst"}."""
    fig, axes = _grid(len(settings))
    for ax, key in zip(axes, settings):
        pts = [p for p in points if p["settings"].get(key) is not None and p.get("y") is not None]
        for p in pts:
            x, y = p["settings"][key], p["y"]
            hollow = p["status"] != "finished"
            ax.scatter(
                [x],
                [y],
                s=46,
                facecolors="none" if hollow else PALETTE[0],
                edgecolors=PALETTE[0],
                zorder=3,
            )
            if p.get("best"):
                ax.scatter([x], [y], **BEST)
            elif p.get("worst"):
                ax.scatter([x], [y], **WORST)
        if _log_scale([p["settings"][key] for p in pts]):
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig


def pareto_front(points: list[tuple[float, float]], mode: str) -> list[int]:
    """Indices of the non-dominated points: FID (x) lower is better; the metric (y) by `mode`."""
    sign = 1 if mode == "max" else -1
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and sign * y2 >= sign * y) and (x2 < x or sign * y2 > sign * y)
            for j, (x2, y2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def pareto(points: list[dict], fid_key: str, metric: str, mode: str, title: str) -> Figure:
    """Validation FID against the validation metric, one dot per trial, the Pareto front joined."""
    fig = Figure(figsize=(6.4, 4.6), layout="constrained")
    ax = fig.add_subplot()
    pts = [p for p in points if p.get("x") is not None and p.get("y") is not None]
    for p in pts:
        hollow = p["status"] != "finished"
        ax.scatter(
            [p["x"]],
            [p["y"]],
            s=46,
            facecolors="none" if hollow else PALETTE[0],
            edgecolors=PALETTE[0],
            zorder=3,
        )
        if p.get("best"):
            ax.scatter([p["x"]], [p["y"]], **BEST, label="best (selection metric)")
        elif p.get("worst"):
            ax.scatter([p["x"]], [p["y"]], **WORST, label="worst")
    if any(p["status"] != "finished" for p in pts):
        ax.scatter(
            [], [], s=46, facecolors="none", edgecolors=PALETTE[0], label="stopped early (ASHA)"
        )
    done = [p for p in pts if p["status"] == "finished"]
    front = [done[i] for i in pareto_front([(p["x"], p["y"]) for p in done], mode)]
    if front:
        ax.plot(
            [p["x"] for p in front],
            [p["y"] for p in front],
            "-",
            c="#c0392b",
            alpha=0.6,
            lw=2,
            zorder=2,
            label=f"Pareto front ({len(front)} of {len(done)})",
        )
    ax.set_xlabel(f"{fid_key} (lower is better)")
    ax.set_ylabel(f"{metric} ({'higher' if mode == 'max' else 'lower'} is better)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title)
    return fig


def learning_curves(
    panels: dict[str, dict[str, list[tuple[int, float]]]], title: str, xlabel: str = "epoch"
) -> Figure:
    """One panel per group ({panel title: {series: [(epoch, value)]}})."""
    fig, axes = _grid(len(panels))
    for ax, (name, series) in zip(axes, panels.items()):
        for i, (label, pts) in enumerate(series.items()):
            ax.plot(
                [x for x, _ in pts],
                [y for _, y in pts],
                "-o",
                ms=3,
                c=PALETTE[i % len(PALETTE)],
                label=label,
            )
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig


def grouped_bars(
    groups: list[str],
    series: list[str],
    values: dict[tuple[str, str], tuple[float, float]],
    ylabel: str,
    title: str,
    notes: dict[tuple[str, str], str] | None = None,
    percent: bool = False,
) -> Figure:
    """Bars per group (e.g. a classifier), one per series (e.g. a policy), with ± half-width error bars
    (NaN: no interval, drawn without one); `notes` writes a mark above a bar (e.g. '*' for Holm p<0.05)."""
    fig = Figure(
        figsize=(max(6.0, 1.0 + 0.55 * len(groups) * len(series)), 4.4), layout="constrained"
    )
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(series))
    scale = 100.0 if percent else 1.0
    for i, s in enumerate(series):
        xs, ys, errs = [], [], []
        for g_i, g in enumerate(groups):
            if (g, s) in values:
                m, h = values[(g, s)]
                xs.append(g_i + (i - (len(series) - 1) / 2) * width)
                ys.append(m * scale)
                # NaN: no whisker at all
                errs.append(h * scale if h is not None and math.isfinite(h) else math.nan)
        ax.bar(
            xs,
            ys,
            width * 0.92,
            color=PALETTE[i % len(PALETTE)],
            label=s if len(s) <= 40 else s[:39] + "…",
        )
        if any(math.isfinite(e) for e in errs):
            ax.errorbar(xs, ys, yerr=errs, fmt="none", ecolor="black", capsize=3)
        for x, y, e, g in zip(
            xs,
            ys,
            [0.0 if not math.isfinite(e) else e for e in errs],
            [g for g in groups if (g, s) in values],
        ):
            mark = (notes or {}).get((g, s))
            if mark:
                ax.text(x, y + e, mark, ha="center", va="bottom", fontsize=11)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(4, len(series)), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.set_title(title)
    return fig


def method_intervals(
    labels: list[str],
    cells: list[dict],
    points: list[list[float]],
    xlabel: str,
    title: str,
    notes: list[str] | None = None,
    percent: bool = True,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Figure:
    """One horizontal bar per method, top to bottom in the given order: its mean with the 95% interval
    (`cells`: mean_ci dicts; no whisker where n = 1) cut at the metric's `bounds` (a t-interval over
    two splits can pass 100% Dice), each split's value as a dot, `notes` right of the bar."""
    scale = 100.0 if percent else 1.0
    fig = Figure(figsize=(8.0, 1.2 + 0.6 * len(labels)), layout="constrained")
    ax = fig.add_subplot()
    ys = list(range(len(labels)))[::-1]
    means = [c["mean"] * scale for c in cells]
    lo, hi = bounds
    cells = [{**c, "low": max(c["low"], lo), "high": min(c["high"], hi)} for c in cells]
    err = [
        [(c["mean"] - c["low"]) * scale for c in cells],
        [(c["high"] - c["mean"]) * scale for c in cells],
    ]
    ax.barh(ys, means, 0.6, color=[PALETTE[i % len(PALETTE)] for i in range(len(labels))])
    ax.errorbar(means, ys, xerr=err, fmt="none", ecolor="black", capsize=4, zorder=3)
    for y, pts in zip(ys, points):
        ax.scatter([v * scale for v in pts], [y] * len(pts), s=14, c="black", alpha=0.6, zorder=4)
    right = (
        max(max(c["high"] for c in cells), max((max(p) for p in points if p), default=0.0)) * scale
    )
    for y, note in zip(ys, notes or []):
        if note:
            ax.text(right * 1.02, y, note, va="center", fontsize=8)
    ax.set_xlim(0, right * (1.3 if notes else 1.08) or 1.0)
    ax.set_yticks(ys, labels)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title)
    return fig


def paired_differences(
    panels: dict[str, list[dict]], effect: float, xlabel: str, title: str, baseline: str = "orig"
) -> Figure:
    """Each policy's paired difference from `baseline`, one panel per classifier (rows top to bottom in
    the given order): the mean as a diamond, its 95% t-interval as a line (not clipped: the interval is
    the claim), one dot per split (the paired differences the interval summarises, so a policy lower on
    every split is seen to be), a line at 0 and a band at ±`effect`, the difference that matters.

    panels: classifier → rows {"policy", "diff", "low", "high", "points": [per-split differences],
    "note": text right of the row (e.g. 'p=0.09, inconclusive')}; all values are fractions, drawn in points.
    """
    n_rows = max([len(r) for r in panels.values()] + [1])
    fig = Figure(figsize=(8.5, 0.9 + len(panels) * (0.6 + 0.55 * n_rows)), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0] if panels else [fig.add_subplot()]
    finite = [
        v
        for rows in panels.values()
        for r in rows
        for v in (r["low"], r["high"], *r["points"])
        if math.isfinite(v)
    ]
    span = max([abs(v) for v in finite] + [effect]) * 100 * 1.12
    for ax, (clf, rows) in zip(axes, panels.items()):
        ys = list(range(len(rows)))[::-1]
        ax.axvspan(
            -100 * effect,
            100 * effect,
            color="#55a868",
            alpha=0.13,
            lw=0,
            label=f"±{100 * effect:g} points: the difference that matters",
        )
        ax.axvline(0, color="black", lw=0.9)
        for i, (y, r) in enumerate(zip(ys, rows)):
            colour = PALETTE[(i + 1) % len(PALETTE)]
            if math.isfinite(r["low"]) and math.isfinite(r["high"]):
                ax.plot(
                    [100 * r["low"], 100 * r["high"]],
                    [y, y],
                    color=colour,
                    lw=3,
                    solid_capstyle="butt",
                    zorder=3,
                )
            pts = [100 * v for v in r["points"]]
            jitter = [
                y + 0.18 + 0.06 * ((k % 3) - 1) for k in range(len(pts))
            ]  # just above the line, a little spread
            ax.scatter(
                pts,
                jitter,
                s=22,
                c=colour,
                edgecolors="black",
                linewidths=0.5,
                zorder=4,
                label="one split" if i == 0 else None,
            )
            ax.scatter(
                [100 * r["diff"]],
                [y],
                marker="D",
                s=46,
                c="white",
                edgecolors="black",
                zorder=5,
                label="mean, 95% interval" if i == 0 else None,
            )
            if r.get("note"):
                ax.text(span * 1.02, y, r["note"], va="center", fontsize=8)
        ax.set_yticks(ys, [r["policy"] for r in rows])
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_xlim(-span, span)
        ax.set_xlabel(xlabel)
        ax.set_title(f"{clf}: difference from {baseline}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.08), ncols=3, frameon=False)
    fig.suptitle(title)
    return fig
