"""Report section: why a generator scores as it does. Per class, KID with its real-vs-real floor,
precision / recall / density / coverage with theirs (realism, diversity), the memorised share
beside held-out real images' (copying), CAS where a classifier trained on the generator's images
alone, and the closest synthetic/training pairs side by side (`memorisation_<class>.png`, which
the study logged as artefacts). Built from recorded metrics only (`metrics.realism` names)."""

from __future__ import annotations

from pathlib import Path

from ..metrics import names as metric_names
from ..metrics.realism import PRDC, names
from .common import fmt, run_images
from .html import Page
from .store import Recorded

CAS = "cas_test_balanced_accuracy"


def classes_of(m: dict, split: str) -> list[str]:
    cs = sorted(
        {
            k.split("/", 1)[1]
            for k in m
            if k.startswith(metric_names.realism("precision", split, ""))
        }
        - {metric_names.ALL}
    )
    return [*cs, "all"] if cs else []


def _with_floor(m: dict, key: str, floor: str, digits: int = 3) -> str:
    v = m.get(key)
    if v is None:
        return "—"
    return f"{v:.{digits}f}" + (f" ({m[floor]:.{digits}f})" if floor in m else "")


def table(page: Page, m: dict, split: str, who: str, cas: str | None = None) -> bool:
    """The per-class table of one generator's recorded metrics `m`; False when it recorded none."""
    cs = classes_of(m, split)
    if not cs:
        return False
    n = names(split)
    rows = []
    for c in cs:
        g = {k: t.format(c=c) for k, t in n.items()}
        kid = _with_floor(
            m, metric_names.kid(split, c), metric_names.kid(split, c, "floor_mean"), 4
        )
        row = [
            c,
            fmt(m.get(metric_names.fid(split, c, "n_real"))),
            fmt(m.get(metric_names.fid(split, c, "n_fake"))),
            kid,
        ]
        row += [_with_floor(m, g[x], g[f"{x}_floor"]) for x in PRDC]
        row += [fmt(m.get(g["k"])), _with_floor(m, g["memorised"], g["memorised_floor"])]
        rows.append(row)
    head = [
        "class",
        "n real",
        "n synth.",
        "KID (floor)",
        *(f"{x} (real-vs-real)" for x in PRDC),
        "k",
        "memorised share (held-out real)",
    ]
    page.h2(f"Realism, diversity and copying: {who}")
    page.table(
        head,
        rows,
        f"{who}, {split} split. In brackets, what real images score at the same sizes: "
        "KID between two halves of the real set; precision/recall/density/coverage of "
        "held-out real (training) images drawn at the synthetic set's size (or of one "
        "half of the real set against the other); the memorised share of the real images "
        "themselves. Precision (synthetic inside the real manifold) reads realism, "
        "recall and coverage (real inside / covered by the synthetic one) variety, "
        "density ~1 for a set drawn like the real one (Kynkäänniemi et al. 2019; Naeem "
        "et al. 2020), all on the FID/KID Inception features with k nearest neighbours. "
        "Memorised: nearer to a training image than the 5th percentile of training images' "
        "distances to each other (held-out real images score ~5-8%: the value in brackets)."
        + (f" {cas}" if cas else ""),
    )
    return True


def pairs(page: Page, imgs: list[tuple[str, Path]], who: str, prefix: str) -> None:
    for path, img in imgs:
        page.image(
            img,
            f"{who}: the closest synthetic images to any training image (top row) above "
            f"their nearest training image (Inception distance in the title), {path}.",
            name=f"{prefix}_{Path(path).name}",
        )


def trial_section(rec: Recorded, page: Page, run, who: str, tmp: Path) -> None:
    """A ratio/stabiliser study's chosen trial: its validation figures, CAS when it trained on synthetic images only."""
    m = run.data.metrics
    cas = (
        "CAS (classifier trained on synthetic images only, validation "
        f"balanced accuracy): {m['cas_val_balanced_accuracy']:.3f}."
        if "cas_val_balanced_accuracy" in m
        else None
    )
    if CAS in rec.metrics:
        cas = (cas or "") + f" CAS on the test split (chosen trial, once): {rec.metrics[CAS]:.3f}."
    if table(page, m, "val", who, cas):
        pairs(page, run_images(rec, run, "", tmp, "memorisation_"), who, "memorisation_best")


def baselines_section(rec: Recorded, page: Page, tmp: Path) -> None:
    """Each generator of a baselines study: split 0's test figures (a cell of any policy drawing on
    it carries them), CAS = test balanced accuracy of its `<generator>-only` cells, mean over splits."""
    by_gen: dict[str, dict] = {}
    cas: dict[str, list[float]] = {}
    for run in sorted(rec.children, key=lambda r: int(r.data.tags.get("split", 0))):
        g, m = run.data.tags.get("generator", "none"), run.data.metrics
        if g == "none" or "+" in g:
            continue
        if classes_of(m, "test"):
            by_gen.setdefault(g, m)
        if CAS in m:
            cas.setdefault(g, []).append(m[CAS])
    figs = run_images(rec, rec.parent, "figures", tmp, "memorisation_")
    for g, m in sorted(by_gen.items()):
        c = cas.get(g)
        note = (
            (
                f"CAS ({g}-only cells: classifier trained on its images alone, test balanced "
                f"accuracy on real images): {sum(c) / len(c):.3f}, mean of {len(c)} cell(s)."
            )
            if c
            else None
        )
        if table(page, m, "test", f"generator {g} (split 0)", note):
            pairs(
                page,
                [(p, i) for p, i in figs if Path(p).parent.name == g],
                f"generator {g} (split 0)",
                g,
            )
