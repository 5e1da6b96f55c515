"""`cytoray turing score`: the answers joined with the key, per reader and pooled.

Per reader: real-vs-synthetic accuracy with its exact (Clopper-Pearson) 95% interval and the
two-sided exact binomial p-value against chance (0.5; the set is half real by construction);
sensitivity and specificity with SYNTHETIC AS THE POSITIVE class (sensitivity = synthetic images
called synthetic, specificity = real images called real); class accuracy on real and on synthetic
images separately (a generator can fool the eye and still draw the wrong class). Across readers:
Cohen's kappa (two readers) or Fleiss' kappa (three or more) on the real/synthetic calls of the
images every reader answered, and the synthetic images most often taken for real. The pooled figures count
every answer of every reader as one trial: answers of one reader (or on one image) are not
independent, so the pooled interval is narrower than the truth; the per-reader ones are exact.

Metric names (MLflow, `--log`): `turing_accuracy`, `turing_accuracy_ci_low/high`, `turing_p_value`,
`turing_sensitivity`, `turing_specificity`, `turing_class_accuracy_real/synthetic`, `turing_kappa`,
`turing_readers`, `turing_answers` (pooled) and the same with `/<reader>` per reader.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from ..errors import CytorayError
from . import ANSWERS, key_path

METRIC_PREFIX = "turing_"
ARTIFACT_DIR = "turing"


# ----------------------------------------------------------------------------- statistics


def binomial(k: int, n: int) -> dict:
    """k successes of n: rate, exact 95% interval (Clopper-Pearson), two-sided exact p vs 0.5."""
    from scipy.stats import binomtest

    if n == 0:
        return {
            "k": 0,
            "n": 0,
            "rate": math.nan,
            "ci_low": math.nan,
            "ci_high": math.nan,
            "p_value": math.nan,
        }
    t = binomtest(k, n, 0.5, alternative="two-sided")
    ci = t.proportion_ci(confidence_level=0.95, method="exact")
    return {
        "k": k,
        "n": n,
        "rate": k / n,
        "ci_low": float(ci.low),
        "ci_high": float(ci.high),
        "p_value": float(t.pvalue),
    }


def _rate(k: int, n: int) -> float:
    return k / n if n else math.nan


def cohen_kappa(a: list, b: list) -> float:
    """Cohen's kappa of two raters' labels of the same items (nan when chance agreement is 1)."""
    cats = sorted(set(a) | set(b))
    a, b = np.array(a), np.array(b)
    po = float(np.mean(a == b))
    pe = float(sum(np.mean(a == c) * np.mean(b == c) for c in cats))
    return math.nan if pe >= 1 else (po - pe) / (1 - pe)


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa of an [items, categories] table of rater counts (the same number of raters per item)."""
    counts = np.asarray(counts, dtype=float)
    m = counts.sum(1)[0]
    if len(counts) == 0 or m < 2:
        return math.nan
    p_item = (np.sum(counts**2, 1) - m) / (m * (m - 1))
    p_cat = counts.sum(0) / counts.sum()
    pe = float(np.sum(p_cat**2))
    return math.nan if pe >= 1 else (float(p_item.mean()) - pe) / (1 - pe)


# ----------------------------------------------------------------------------- scoring


def reader_scores(answers: list[dict], key: dict) -> dict:
    """One reader's (or the pooled) figures from answers [{image, source, class, confidence}]."""
    truth = [key[a["image"]] for a in answers]
    right = [a["source"] == t["source"] for a, t in zip(answers, truth)]
    syn = [(a, t) for a, t in zip(answers, truth) if t["source"] == "synthetic"]
    real = [(a, t) for a, t in zip(answers, truth) if t["source"] == "real"]
    b = binomial(sum(right), len(right))
    out = {
        "answers": len(answers),
        "correct": int(sum(right)),
        "accuracy": b["rate"],
        "accuracy_ci_low": b["ci_low"],
        "accuracy_ci_high": b["ci_high"],
        "accuracy_p_value": b["p_value"],
    }
    out["sensitivity"] = _rate(sum(a["source"] == "synthetic" for a, _ in syn), len(syn))
    out["specificity"] = _rate(sum(a["source"] == "real" for a, _ in real), len(real))
    out["class_accuracy_real"] = _rate(sum(a["class"] == t["class"] for a, t in real), len(real))
    out["class_accuracy_synthetic"] = _rate(sum(a["class"] == t["class"] for a, t in syn), len(syn))
    out["mean_confidence"] = (
        float(np.mean([a["confidence"] for a in answers])) if answers else math.nan
    )
    return out


def load_answers(reading_dir: Path, key: dict) -> dict[str, list[dict]]:
    """{reader: answers of images in the key}, from `answers/<reader>.json`."""
    out = {}
    for f in sorted((reading_dir / ANSWERS).glob("*.json")):
        try:
            items = json.loads(f.read_text())["answers"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CytorayError(
                f"{f}: unreadable answers file ({e}); move it aside to score the other readers"
            ) from None
        out[f.stem] = [a for a in items if a.get("image") in key]
    return out


def agreement(by_reader: dict[str, list[dict]], images: list[str]) -> dict:
    """Kappa on the real/synthetic calls of the images every reader answered."""
    calls = {r: {a["image"]: a["source"] for a in ans} for r, ans in by_reader.items()}
    readers = sorted(r for r in calls if calls[r])
    if len(readers) < 2:
        return {"method": None, "kappa": math.nan, "images": 0, "readers": len(readers)}
    common = [i for i in images if all(i in calls[r] for r in readers)]
    if len(readers) == 2:
        a, b = readers
        k = (
            cohen_kappa([calls[a][i] for i in common], [calls[b][i] for i in common])
            if common
            else math.nan
        )
        return {"method": "cohen", "kappa": k, "images": len(common), "readers": 2}
    table = np.array(
        [[sum(calls[r][i] == s for r in readers) for s in ("real", "synthetic")] for i in common]
    )
    return {
        "method": "fleiss",
        "kappa": fleiss_kappa(table) if common else math.nan,
        "images": len(common),
        "readers": len(readers),
    }


def score(reading_dir: str | Path, key_file: str | Path | None = None) -> dict:
    reading_dir = Path(reading_dir).resolve()
    key_file = Path(key_file) if key_file else key_path(reading_dir)
    try:
        meta = json.loads(key_file.read_text())
        key = meta["images"]
    except FileNotFoundError:
        raise CytorayError(
            f"{key_file}: no key for {reading_dir}; `cytoray turing "
            "build` writes it beside the set (pass --key if it was moved)"
        ) from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CytorayError(f"{key_file}: not a reading-set key ({e})") from None
    by_reader = load_answers(reading_dir, key)
    if not any(by_reader.values()):
        raise CytorayError(
            f"{reading_dir / ANSWERS}: no answers yet; readers answer with "
            f"`cytoray turing serve {reading_dir} --reader NAME`"
        )
    pooled = [a for ans in by_reader.values() for a in ans]
    seen: dict[str, list[str]] = {}
    for a in pooled:
        seen.setdefault(a["image"], []).append(a["source"])
    taken = sorted(
        (
            {
                "image": i,
                "class": key[i]["class"],
                "origin": key[i].get("origin"),
                "taken_for_real": c.count("real"),
                "readers": len(c),
            }
            for i, c in seen.items()
            if key[i]["source"] == "synthetic" and "real" in c
        ),
        key=lambda r: (-r["taken_for_real"] / r["readers"], -r["readers"], r["image"]),
    )
    return {
        "reading_set": str(reading_dir),
        "key": str(key_file),
        "generator": meta.get("generator"),
        "run_id": meta.get("run_id"),
        "images": len(key),
        "positive": "synthetic",
        "readers": {
            r: {**reader_scores(ans, key), "complete": len(ans) == len(key)}
            for r, ans in by_reader.items()
            if ans
        },
        "pooled": {
            **reader_scores(pooled, key),
            "readers": sum(1 for a in by_reader.values() if a),
        },
        "agreement": agreement(by_reader, list(key)),
        "taken_for_real": taken[
            :10
        ],  # the synthetic images that fooled readers most often (the generator's best)
    }


# ----------------------------------------------------------------------------- output


def _metric_suffix(reader: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\- ]", "_", reader)


METRICS = {
    "accuracy": "accuracy",
    "accuracy_ci_low": "accuracy_ci_low",
    "accuracy_ci_high": "accuracy_ci_high",
    "p_value": "accuracy_p_value",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "class_accuracy_real": "class_accuracy_real",
    "class_accuracy_synthetic": "class_accuracy_synthetic",
}  # metric: field


def metrics(s: dict) -> dict[str, float]:
    """The MLflow metrics of a scoring (finite values only)."""
    out = {f"{METRIC_PREFIX}{k}": s["pooled"][f] for k, f in METRICS.items()}
    out[f"{METRIC_PREFIX}readers"], out[f"{METRIC_PREFIX}answers"] = (
        s["pooled"]["readers"],
        s["pooled"]["answers"],
    )
    out[f"{METRIC_PREFIX}kappa"] = s["agreement"]["kappa"]
    for r, v in s["readers"].items():
        out.update({f"{METRIC_PREFIX}{k}/{_metric_suffix(r)}": v[f] for k, f in METRICS.items()})
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def _pct(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.0f}%"


def _p(x: float) -> str:
    return "n/a" if not math.isfinite(x) else "<0.001" if x < 0.001 else f"{x:.3f}"


def rows(s: dict) -> list[list[str]]:
    """Table rows: reader, answers, accuracy [95% CI], p, sensitivity, specificity, class acc real/synthetic."""
    out = []
    for name, v in [*s["readers"].items(), ("pooled", s["pooled"])]:
        out.append(
            [
                name,
                str(v["answers"]),
                f"{_pct(v['accuracy'])} [{_pct(v['accuracy_ci_low'])}, "
                f"{_pct(v['accuracy_ci_high'])}]",
                _p(v["accuracy_p_value"]),
                _pct(v["sensitivity"]),
                _pct(v["specificity"]),
                _pct(v["class_accuracy_real"]),
                _pct(v["class_accuracy_synthetic"]),
            ]
        )
    return out


HEADER = [
    "reader",
    "answers",
    "real/synthetic accuracy [95% CI]",
    "p vs chance",
    "sensitivity",
    "specificity",
    "class acc. (real)",
    "class acc. (synthetic)",
]


def text(s: dict) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows(s))) for i, h in enumerate(HEADER)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [HEADER, *rows(s)]]
    ag = s["agreement"]
    lines.append(
        f"agreement: {ag['method']} kappa {ag['kappa']:.2f} on {ag['images']} images"
        if ag["method"]
        else "agreement: one reader (kappa needs two)"
    )
    lines.append(
        "synthetic is the positive class: sensitivity = synthetic "
        "called synthetic, specificity = real called real"
    )
    for t in s["taken_for_real"][:5]:
        lines.append(
            f"synthetic, taken for real by {t['taken_for_real']}/{t['readers']}: "
            f"{t['image']} ({t['class']}, {t['origin']})"
        )
    if not s["taken_for_real"]:
        lines.append("no synthetic image was taken for real")
    return "\n".join(lines)


def html(s: dict) -> str:
    from html import escape

    cell = lambda r, tag="td": "<tr>" + "".join(f"<{tag}>{escape(c)}</{tag}>" for c in r) + "</tr>"  # noqa: E731
    ag = s["agreement"]
    agreed = (
        f"{ag['method']} kappa {ag['kappa']:.2f} on {ag['images']} images"
        if ag["method"]
        else "one reader (kappa needs two)"
    )
    taken = [
        [t["image"], t["class"], str(t["origin"]), f"{t['taken_for_real']}/{t['readers']}"]
        for t in s["taken_for_real"]
    ]
    return (
        "<!doctype html><meta charset=utf-8><title>Visual Turing "
        f"test</title><style>body{{font:14px sans-serif;margin:24px}}"
        f"td,th{{border:1px solid #ccc;padding:3px 8px}}table{{border-collapse:collapse}}</style>"
        "<h1>Visual Turing test</h1><p>generator "
        f"{escape(str(s['generator']))}, {s['images']} images (half real, half "
        f"synthetic), reading set {escape(s['reading_set'])}</p><table>{cell(HEADER, 'th')}{''.join(cell(r) for r in rows(s))}"
        "</table><p>95% intervals exact (Clopper-Pearson); p: "
        "two-sided exact binomial test against 0.5. Synthetic is the "
        "positive class. The pooled row counts every answer as "
        "one trial (answers are not independent: its interval is "
        f"too narrow).</p><p>Agreement: {agreed}.</p>"
        "<h2>Synthetic images most often taken for "
        f"real</h2><table>{cell(['image', 'class', 'sample', 'taken for real'], 'th')}"
        f"{''.join(cell(r) for r in taken) or cell(['none', '', '', ''])}</table>"
    )


def log(s: dict, run_id: str, tracking_uri: str | None = None) -> None:
    """Metrics and turing/{scores.json,turing.html} on `run_id` (a finished run takes them too)."""
    import tempfile

    import mlflow

    from ..tracking.mlflow_utils import store_uri
    from ..tracking.mlflow_utils import tracking_uri as default_uri

    mlflow.set_tracking_uri(store_uri(default_uri(tracking_uri)))
    client = mlflow.MlflowClient()
    try:
        client.get_run(run_id)
    except Exception as e:  # noqa: BLE001 — named in the user's words
        raise CytorayError(
            f"--log {run_id}: no such run at {mlflow.get_tracking_uri()} "
            f"({str(e).splitlines()[0][:160]})"
        ) from None
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics(s).items()])
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "scores.json").write_text(json.dumps(s, indent=2, default=str))
        (Path(d) / "turing.html").write_text(html(s))
        client.log_artifacts(run_id, d, ARTIFACT_DIR)


def score_from_args(a) -> int:
    s = score(a.dir, a.key)
    if a.html:
        from ..io import write_text

        write_text(a.html, html(s))
    if a.log is not None:
        run_id = a.log or s["run_id"]
        if not run_id:
            raise CytorayError(
                f"--log: the key of {a.dir} records no MLflow run "
                "(a local bundle); pass the run id: --log RUN_ID"
            )
        log(s, run_id, a.tracking_uri)
    print(json.dumps(s, indent=2, default=str) if a.json else text(s))
    if a.log is not None:
        print(f"logged to MLflow run {run_id}")
    return 0
