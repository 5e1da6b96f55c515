"""What the stage cache saves: the same seeded study run without and with the cache.

    python benchmarks/stage_cache.py [--samples 4] [extra --set KEY=VALUE ...]

Runs `studies/syncgan_ratio.py` twice in fresh folders with the same seed (Optuna TPE, one
trial at a time, so both runs propose the same trials): once with `--no-cache` (every trial
retrains its mask GANs, CGAN and classifier) and once with the cache (trials that share
generator settings reuse the trained stages; real-image Inception features are computed once
per split). Prints both wall times, the ratio, and how many trials reused their generator.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(out: Path, extra: list[str], cache: bool) -> float:
    cmd = [
        sys.executable,
        str(ROOT / "studies" / "syncgan_ratio.py"),
        "--out",
        str(out / "study"),
        "--tracking-uri",
        f"sqlite:///{out / 'mlflow.db'}",
        *extra,
    ] + ([] if cache else ["--no-cache"])
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=out, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"study failed ({'cache' if cache else 'no cache'}):\n{r.stderr[-3000:]}")
    table = (out / "study" / "trials.md").read_text()
    best = json.loads((out / "study" / "best.json").read_text())
    print(
        f"--- {'with cache' if cache else 'without cache'}: {dt:.0f}s, best test balanced accuracy {best['test']['balanced_accuracy']:.3f}\n{table}"
    )
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--set", action="append", default=[])
    a = ap.parse_args()
    extra = ["--set", f"tune.num_samples={a.samples}", "--set", "tune.asha=false"] + [
        x for s in a.set for x in ("--set", s)
    ]
    with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
        t_off = run(Path(d1), extra, cache=False)
        t_on = run(Path(d2), extra, cache=True)
    print(
        f"without cache {t_off:.0f}s, with cache {t_on:.0f}s: the cache saves {t_off - t_on:.0f}s ({t_on / t_off:.2f}x the time)"
    )


if __name__ == "__main__":
    main()
