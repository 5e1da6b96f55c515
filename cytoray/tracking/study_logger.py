"""The study's one MLflow writer: a Ray Tune callback that runs in the driver.

Study = parent run, trial = child run. Trials only report through Ray; this callback writes.
Child runs are found by tag (`cytoray.trial_id`), so a resumed study reuses its parent and
never duplicates a trial's child run. Works with sqlite and with a tracking server alike.
"""

from __future__ import annotations

import time
from pathlib import Path

from ray.tune import Callback

PARENT_TAG, TRIAL_TAG, STUDY_TAG = "cytoray.study_dir", "cytoray.trial_id", "cytoray.study"
SKIP = {"done", "training_iteration", "trial_id", "date", "timestamp", "time_this_iter_s", "time_total_s", "pid",
        "hostname", "node_ip", "time_since_restore", "iterations_since_restore", "checkpoint_dir_name", "config"}  # fmt: skip


def find_or_create_parent(client, experiment_id: str, study: str, study_dir: str, resume: bool) -> str:
    """The study's parent run: reused on resume (matched by study name and output folder)."""
    if resume:
        runs = client.search_runs([experiment_id], f"tags.`{PARENT_TAG}` = '{study_dir}' and tags.`{STUDY_TAG}` = '{study}'",
                                  max_results=1, order_by=["attributes.start_time DESC"])  # fmt: skip
        if runs:
            client.update_run(runs[0].info.run_id, status="RUNNING")
            return runs[0].info.run_id
    run = client.create_run(experiment_id, run_name=study, tags={PARENT_TAG: study_dir, STUDY_TAG: study})
    return run.info.run_id


class MlflowStudyCallback(Callback):
    """Holds only strings and a picklable `describe` (Tune pickles it with the experiment state).

    `describe(trial_config) -> (run name, params, tags)` names a trial's child run. A trial's
    final report may carry `param.<key>` and `tag.<key>` strings (e.g. the classifier's
    `weights`), which become the child run's params and tags.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_id: str, describe) -> None:
        self.uri, self.exp, self.parent, self.describe = tracking_uri, experiment_id, parent_id, describe
        self.children: dict[str, str] = {}
        self._client = None

    def __getstate__(self):
        return {**self.__dict__, "_client": None}

    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    # -- child runs -------------------------------------------------------------
    def child(self, trial) -> str:
        tid = trial.trial_id
        if tid in self.children:
            return self.children[tid]
        found = self.client.search_runs([self.exp], f"tags.`{TRIAL_TAG}` = '{tid}' and tags.`mlflow.parentRunId` = '{self.parent}'",
                                        max_results=1)  # fmt: skip
        if found:
            rid = found[0].info.run_id
        else:
            name, params, tags = self.describe(trial.config)
            run = self.client.create_run(self.exp, run_name=name,
                                         tags={**tags, TRIAL_TAG: tid, "mlflow.parentRunId": self.parent})  # fmt: skip
            rid = run.info.run_id
            for k, v in params.items():
                self.client.log_param(rid, k, v)
        self.children[tid] = rid
        return rid

    def _log(self, rid: str, result: dict) -> None:
        from mlflow.entities import Metric

        ts, step = int(time.time() * 1000), int(result.get("training_iteration", 0))
        metrics = [Metric(k, float(v), ts, step) for k, v in result.items()
                   if k not in SKIP and isinstance(v, (int, float)) and not isinstance(v, bool)]  # fmt: skip
        if metrics:
            self.client.log_batch(rid, metrics=metrics)

    # -- Tune hooks -------------------------------------------------------------
    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._log(self.child(trial), result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        rid = self.child(trial)
        last = trial.last_result or {}
        for key, value in last.items():
            if key.startswith("param."):
                self.client.log_param(rid, key[len("param."):], str(value)[:500])
            elif key.startswith("tag."):
                self.client.set_tag(rid, key[len("tag."):], str(value))
        for key in ("bundle", "classifier_dir"):
            if last.get(key):
                self.client.set_tag(rid, f"cytoray.{key}", last[key])
        grids = Path(last.get("bundle", "/nonexistent")) / "grids"
        for png in sorted(grids.rglob("*.png"))[-12:]:  # the last grids of each stage
            self.client.log_artifact(rid, str(png), artifact_path=f"samples/{png.parent.name}")
        self.client.set_terminated(rid, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.client.set_terminated(self.child(trial), "FAILED")
