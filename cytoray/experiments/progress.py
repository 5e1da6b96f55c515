"""One console line per trial start and end: what a person watching a study wants to know.

Tune's own reporter prints a wide box table every few seconds; a study of 4 trials of several
minutes each needs two lines per trial instead:

    [trial 2/4] start  ratio=2 lam=50 smoothing=0.1 flip_rate=0.05
    [trial 2/4] done   val_balanced_accuracy 0.812, fid_val_inception/all 143.2 in 1:05 (elapsed 2:20, ETA ~2:10)

The driver passes Tune `verbose=0` and this callback. It runs in the driver (Tune pickles it
with the experiment state, so it holds only plain values and a picklable `describe`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from ray.tune import Callback

from ..metrics import names
from ..progress import fmt_seconds


def _figure(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class TrialProgress(Callback):
    """`describe(config) -> (name, params, tags)` names a trial (the same name as its MLflow run);
    `metrics` are the figures shown when it ends (the searcher's objectives first)."""

    def __init__(
        self, describe: Callable, metrics: list[str], max_concurrent: int = 1, stream=None
    ) -> None:
        # The objectives, then validation FID where a trial reports it (ratio trials search on a
        # classifier metric but a person also wants to see how faithful that trial's generator was).
        self.metrics = list(dict.fromkeys([*metrics, names.FID_VAL]))
        self.describe, self.concurrent = describe, max(1, int(max_concurrent))
        self.stream = stream
        self.total: int | None = None
        self.t0 = time.time()
        self.started: dict[str, float] = {}
        # trials that ended here (Tune sets a trial's status after the hook)
        self.ended: set[str] = set()
        self.durations: list[float] = []

    def __getstate__(self):
        return {
            **self.__dict__,
            "stream": None,
        }  # a stream does not pickle; stderr again after a restore

    # -- formatting ---------------------------------------------------------------
    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)

    def _tag(self, trials, trial) -> str:
        k = next(
            (i + 1 for i, t in enumerate(trials) if t is trial or t.trial_id == trial.trial_id),
            len(trials),
        )
        return f"[trial {k}/{self.total or len(trials)}]"

    def _name(self, trial) -> str:
        try:
            name = self.describe(trial.config)[0]
        except Exception:  # a name is cosmetic: never let it stop a study
            name = trial.trial_id
        return name if len(name) <= 120 else name[:117] + "..."

    def _eta(self, trials) -> str:
        """Mean duration of the trials finished here × those left, over the trials run at once,
        less what the running ones have already spent."""
        if not self.durations:
            return "ETA after the first trial"
        # + restored ones
        done = len(self.ended | {t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR")})
        left = max(0, (self.total or len(trials)) - done)
        now = time.time()
        running = sum(
            now - s
            for tid, s in self.started.items()
            if any(t.trial_id == tid and t.status == "RUNNING" for t in trials)
        )
        mean = sum(self.durations) / len(self.durations)
        eta = max(0.0, (mean * left - running) / self.concurrent)
        return "nothing left" if left == 0 else f"ETA ~{fmt_seconds(eta)}"

    # -- Tune hooks -----------------------------------------------------------------
    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        self.total = total_num_samples
        self.t0 = time.time()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started[trial.trial_id] = time.time()
        self._print(f"{self._tag(trials, trial)} start  {self._name(trial)}")

    def _end(self, trials, trial, what: str) -> None:
        now = time.time()
        took = now - self.started.pop(trial.trial_id, now)
        self.ended.add(trial.trial_id)
        if took > 0:
            self.durations.append(took)
        last = trial.last_result or {}
        figs = ", ".join(f"{m} {_figure(last[m])}" for m in self.metrics if m in last)
        self._print(
            f"{self._tag(trials, trial)} {what}{'  ' + figs if figs else ''} in "
            f"{fmt_seconds(took)} (elapsed {fmt_seconds(now - self.t0)}, {self._eta(trials)})"
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        # A trial without its final report was stopped by the scheduler (ASHA) after an epoch.
        stopped = last.get(names.FINAL) != 1 and "epoch" in last
        self._end(
            trials,
            trial,
            f"stopped by ASHA after epoch {int(last['epoch']) + 1}:" if stopped else "done  ",
        )

    def on_trial_error(self, iteration, trials, trial, **info):
        where = getattr(trial, "error_file", None) or getattr(trial, "path", "")
        self._end(trials, trial, f"FAILED (see {where})")
