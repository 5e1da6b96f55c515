"""The study's one MLflow writer: a Ray Tune callback that runs in the driver.

Study = parent run, trial = child run. Trials only report through Ray; this callback writes.
Child runs are found by tag (`cytoray.trial_id`), so a resumed study reuses its parent and
never duplicates a trial's child run. Works with sqlite and with a tracking server alike.

What the MLflow UI shows without clicking into a run: every run carries `variant`, `policy` and
`generator` tags where they apply (the study's `describe` and the tags trials report, run_info.py), metric keys
are the same across variants, a trial's real-vs-synthetic grids are root artefacts (so "compare
runs" shows them side by side, one column per variant),
and the parent's description (`mlflow.note.content`) summarises the study.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ray.tune import Callback

from .run_info import run_params, run_tags

PARENT_TAG, TRIAL_TAG, STUDY_TAG = "cytoray.study_dir", "cytoray.trial_id", "cytoray.study"
RESULT_TAG, KIND_TAG, NOTE_TAG = "cytoray.result", "cytoray.kind", "mlflow.note.content"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
# a trial's report key and its per-stage history file
FIGURES, HISTORY = (
    "figures",
    "generator_history.json",
)
# Tune's bookkeeping, and epoch_start (a wall-clock
# timestamp for benchmarks, not a figure to compare).
SKIP = {
    "done",
    "training_iteration",
    "trial_id",
    "date",
    "timestamp",
    "time_this_iter_s",
    "time_total_s",
    "pid",
    "hostname",
    "node_ip",
    "time_since_restore",
    "iterations_since_restore",
    "checkpoint_dir_name",
    "config",
    "epoch_start",
}


def set_parent_summary(client, run_id: str, tags: dict, description: str) -> None:
    """The parent run's tags (kind, variant, generator, ...) and its description, which the UI
    shows on the run page and in the run table's Description column."""
    for k, v in tags.items():
        client.set_tag(run_id, k, str(v))
    client.set_tag(run_id, NOTE_TAG, description)


def result_child(
    client, experiment_id: str, parent_id: str, key: str, name: str, tags: dict
) -> str:
    """A child run holding one variant's final figures (e.g. one row of the histology→cytology
    table), found again by `key` on a resumed study so it is never duplicated."""
    found = client.search_runs(
        [experiment_id],
        f"tags.`{RESULT_TAG}` = '{key}' and tags.`mlflow.parentRunId` = '{parent_id}'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(
        experiment_id,
        run_name=name,
        tags={
            **{k: str(v) for k, v in tags.items()},
            RESULT_TAG: key,
            "mlflow.parentRunId": parent_id,
        },
    )
    return run.info.run_id


def log_history_file(client, run_id: str, path: Path) -> None:
    """Per-epoch training history {stage label: [{epoch, metric: value}]} as `gen/<label>/<metric>`
    with step = epoch: the generator's learning curves, beside the classifier's per-epoch reports."""
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    hist = json.loads(Path(path).read_text())
    metrics = [
        Metric(f"gen/{label}/{k}", float(v), ts, int(row["epoch"]))
        for label, rows in hist.items()
        for row in rows
        for k, v in row.items()
        if k not in ("epoch", "epoch_start") and isinstance(v, (int, float))
    ]
    for i in range(0, len(metrics), 1000):  # MLflow caps a batch at 1000 metrics
        client.log_batch(run_id, metrics=metrics[i : i + 1000])


def find_or_create_parent(
    client, experiment_id: str, study: str, study_dir: str, resume: bool
) -> str:
    """The study's parent run: reused on resume (matched by study name and output folder)."""
    # MLflow 3's UI opens an experiment it cannot classify on its GenAI trace overview; a study is
    # model training, so its experiment opens on the runs table (unless someone chose otherwise).
    if EXPERIMENT_KIND_TAG not in client.get_experiment(experiment_id).tags:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, "custom_model_development")
    if resume:
        # Matched here, not in the filter string: MLflow's
        # filter has no escape for a quote ("it's").
        token = None
        while True:
            page = client.search_runs(
                [experiment_id],
                f"tags.`{STUDY_TAG}` LIKE '%'",
                max_results=1000,
                order_by=["attributes.start_time DESC"],
                page_token=token,
            )
            for r in page:
                if r.data.tags.get(PARENT_TAG) == study_dir and r.data.tags.get(STUDY_TAG) == study:
                    client.update_run(r.info.run_id, status="RUNNING")
                    return r.info.run_id
            token = page.token
            if not token:
                break
    run = client.create_run(
        experiment_id, run_name=study, tags={PARENT_TAG: study_dir, STUDY_TAG: study}
    )
    return run.info.run_id


class MlflowStudyCallback(Callback):
    """Holds only strings and a picklable `describe` (Tune pickles it with the experiment state).

    `describe(trial_config) -> (run name, params, tags)` names a trial's child run. A trial's
    final report may carry tags and params (run_info.py: e.g. the classifier's `weights`), which
    become the child run's tags and params.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_id: str, describe) -> None:
        self.uri, self.exp, self.parent, self.describe = (
            tracking_uri,
            experiment_id,
            parent_id,
            describe,
        )
        self.children: dict[str, str] = {}
        self._client = None

    def __getstate__(self):
        return {**self.__dict__, "_client": None}

    @property
    def client(self):
        if self._client is None:
            from .mlflow_utils import RetryingClient

            self._client = RetryingClient(self.uri)  # a server restart mid-study loses nothing
        return self._client

    # -- child runs -------------------------------------------------------------
    def child(self, trial) -> str:
        tid = trial.trial_id
        if tid in self.children:
            return self.children[tid]
        found = self.client.search_runs(
            [self.exp],
            f"tags.`{TRIAL_TAG}` = '{tid}' and tags.`mlflow.parentRunId` = '{self.parent}'",
            max_results=1,
        )
        if found:
            rid = found[0].info.run_id
        else:
            name, params, tags = self.describe(trial.config)
            run = self.client.create_run(
                self.exp,
                run_name=name,
                tags={**tags, TRIAL_TAG: tid, "mlflow.parentRunId": self.parent},
            )
            rid = run.info.run_id
            for k, v in params.items():
                self.client.log_param(rid, k, v)
        self.children[tid] = rid
        return rid

    def _log(self, rid: str, result: dict) -> None:
        from mlflow.entities import Metric

        ts, step = int(time.time() * 1000), int(result.get("training_iteration", 0))
        metrics = [
            Metric(k, float(v), ts, step)
            for k, v in result.items()
            if k not in SKIP and isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        if metrics:
            self.client.log_batch(rid, metrics=metrics)

    # -- Tune hooks -------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info):
        # created now, so the run's start time and duration in the UI are the trial's
        self.child(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._log(self.child(trial), result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        rid = self.child(trial)
        last = trial.last_result or {}
        self._files(rid, last)
        for key in ("bundle", "classifier_dir"):
            if last.get(key):
                self.client.set_tag(rid, f"cytoray.{key}", last[key])
        grids = Path(last.get("bundle", "/nonexistent")) / "grids"
        for png in sorted(grids.rglob("*.png"))[-12:]:  # the last grids of each stage
            self.client.log_artifact(rid, str(png), artifact_path=f"samples/{png.parent.name}")
        self.client.set_terminated(rid, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        rid = self.child(trial)
        self._files(rid, trial.last_result or {})
        self.client.set_terminated(rid, "FAILED")

    def _files(self, rid: str, last: dict) -> None:
        """params/tags a trial reported, its figures (PNG) and its generator's learning curves."""
        for key, value in run_params(last).items():
            self.client.log_param(rid, key, value)
        for key, value in run_tags(last).items():
            self.client.set_tag(rid, key, value)
        figs = Path(last[FIGURES]) if last.get(FIGURES) else None
        if figs is None or not figs.is_dir():
            return
        for png in sorted(
            figs.glob("*.png")
        ):  # at the root: the UI's compare view shows root files side by side
            self.client.log_artifact(rid, str(png))
        if (figs / HISTORY).is_file():
            log_history_file(self.client, rid, figs / HISTORY)
