"""What Ray Train's poll interval costs a small study: the smoke study at Ray's 2 s vs cytoray's 0.1 s.

    python benchmarks/report_poll.py [--rounds 1] [--data DIR] [extra --set KEY=VALUE ...]

Train V2's controller takes one report from each worker per poll and a worker's next report
waits for it, so an epoch shorter than the interval lasts the interval. cytoray sets
RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (0.1 s, process_env.py: POLL_INTERVAL_S) for its jobs; this runs
`studies/syncgan_ratio.py --smoke-test` (20 mask / 10 CGAN epochs a trial, caches off, same
seed, so both sides train the same trials) with the variable at 2.0 (Ray's default) and unset
(cytoray's), alternating, and prints wall and per-trial seconds and the ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cytoray.process_env import POLL_ENV as ENV
from cytoray.process_env import POLL_INTERVAL_S

ROOT = Path(__file__).resolve().parents[1]


def trial_seconds(table: str) -> list[float]:
    """The `trial_seconds` column of the study's trials.md table."""
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in table.splitlines()
        if line.startswith("|")
    ]
    col = rows[0].index("trial_seconds")
    return [float(r[col]) for r in rows[2:]]


def run(extra: list[str], poll: str | None) -> tuple[float, list[float]]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if poll is not None:
        env[ENV] = poll
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        cmd = [
            sys.executable,
            str(ROOT / "studies" / "syncgan_ratio.py"),
            "--smoke-test",
            "--no-cache",
            "--out",
            str(out / "study"),
            "--tracking-uri",
            f"sqlite:///{out / 'mlflow.db'}",
            "--set",
            "register=false",
            *extra,
        ]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            sys.exit(f"study failed (poll {poll or 'cytoray default'}):\n{r.stderr[-3000:]}")
        secs = trial_seconds((out / "study" / "trials.md").read_text())
    print(
        f"poll {poll + ' s (Ray default)' if poll else POLL_INTERVAL_S + ' s (cytoray)':<22} study {wall:6.1f} s, trials "
        + ", ".join(f"{s:.1f}" for s in secs)
        + " s",
        flush=True,
    )
    return wall, secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--rounds", type=int, default=1, help="pairs of runs (alternating, to cancel drift)"
    )
    ap.add_argument("--data", help="a real image folder (default: the embedded simulator)")
    ap.add_argument("--set", action="append", default=[])
    a = ap.parse_args()
    extra = (["--data", a.data] if a.data else []) + [x for s in a.set for x in ("--set", s)]
    fast, slow = [], []
    for _ in range(a.rounds):
        fast.append(run(extra, None))
        slow.append(run(extra, "2.0"))
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    fw, sw = mean([w for w, _ in fast]), mean([w for w, _ in slow])
    ft, st = mean([s for _, ts in fast for s in ts]), mean([s for _, ts in slow for s in ts])
    print(
        f"study: {fw:.1f} s at {POLL_INTERVAL_S} s vs {sw:.1f} s at 2 s: {fw / sw:.2f}x the time; "
        f"a trial: {ft:.1f} s vs {st:.1f} s: {ft / st:.2f}x"
    )


if __name__ == "__main__":
    main()
