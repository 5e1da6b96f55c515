"""The default study (`make run`: studies/syncgan_ratio.py, no arguments) at an earlier commit and now.

    python benchmarks/study_before_after.py --before 1ce1960 [--rounds 1] [--set KEY=VALUE ...]

Runs the same default study (same config, same seeded Optuna, same budgets) from a temporary
`git worktree` of REV and from this checkout, alternating (before, after, before, after, ... with
--rounds), each in a fresh folder and a fresh Ray. Prints each run's wall time, its Ray Train job
count (one `TorchTrainer` run folder each), the trials it ran (so a reader sees both ran the same
trials), and the after/before ratio of the mean wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(root: Path, sets: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as d:
        cmd = [
            sys.executable,
            str(root / "studies/syncgan_ratio.py"),
            "--out",
            f"{d}/study",
            "--tracking-uri",
            f"sqlite:///{d}/m.db",
            *[x for s in sets for x in ("--set", s)],
        ]
        t0 = time.perf_counter()
        r = subprocess.run(
            cmd, cwd=d, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True
        )
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            sys.exit(f"study at {root} failed:\n{r.stderr[-3000:]}")
        ray_dir = Path(d, "study", "cache", "ray")
        jobs = sum(1 for p in ray_dir.iterdir() if p.is_dir()) if ray_dir.is_dir() else 0
        trials = []
        for p in Path(d, "study", "tune").rglob("params.json"):
            trials.append(json.loads(p.read_text()))
        return {
            "wall": wall,
            "jobs": jobs,
            "trials": sorted(json.dumps(t, sort_keys=True) for t in trials),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="git revision of the 'before' code")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        help="study config override for the 'after' run (e.g. a smaller budget)",
    )
    ap.add_argument(
        "--set-before",
        action="append",
        default=[],
        help="the same override in the before commit's key names",
    )
    a = ap.parse_args()
    res: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as wt:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", wt, a.before],
            check=True,
            capture_output=True,
        )
        try:
            for k in range(a.rounds):
                for side, root, sets in (
                    ("before", Path(wt), a.set_before),
                    ("after", ROOT, a.set),
                ):
                    r = run(root, sets)
                    res[side].append(r)
                    print(
                        f"round {k + 1} {side:<6}: {r['wall']:7.1f} s, {r['jobs']} Ray Train jobs, {len(r['trials'])} trials",
                        flush=True,
                    )
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", wt], capture_output=True
            )
    for side in res:
        print(f"{side} trials: " + "; ".join(res[side][0]["trials"]))
    mean = {s: sum(r["wall"] for r in v) / len(v) for s, v in res.items()}
    print(
        f"mean wall time: before {mean['before']:.1f} s, after {mean['after']:.1f} s; after/before {mean['after'] / mean['before']:.2f}"
    )


if __name__ == "__main__":
    main()
