"""What a study recorded in MLflow, read back: the parent run, its child runs, histories, artefacts.

The report is built from this alone (never from the study's output folder), so it can be made
for a study that ran on a cluster last month, from its tracking server.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from .. import process_env
from ..errors import CytorayError
from ..tracking.study_logger import KIND_TAG, PARENT_TAG, RESULT_TAG, STUDY_TAG, TRIAL_TAG

KINDS = ("ratio", "stabilisers", "baselines", "histo_to_cyto", "segmentation")


@dataclasses.dataclass
class Recorded:
    uri: str
    client: object  # MlflowClient
    experiment: object  # mlflow.entities.Experiment
    parent: object  # mlflow.entities.Run
    children: list  # trial runs (Tune trials / baselines cells), oldest first
    results: list  # result runs (one per variant of a final table, e.g. histology→cytology rows)
    kind: str

    # -- parent run -----------------------------------------------------------------
    @property
    def params(self) -> dict[str, str]:
        return self.parent.data.params

    @property
    def metrics(self) -> dict[str, float]:
        return self.parent.data.metrics

    def param(self, key: str, default: str | None = None) -> str | None:
        return self.params.get(key, default)

    # -- any run --------------------------------------------------------------------
    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of a metric, in step order (one value per step: the last one logged)."""
        by_step = {
            m.step: m.value
            for m in sorted(self.client.get_metric_history(run_id, key), key=lambda m: m.timestamp)
        }
        return sorted((s, v) for s, v in by_step.items() if v is not None and math.isfinite(v))

    def artifacts(self, run_id: str, path: str = "", suffix: str = ".png") -> list[str]:
        """Artefact paths under `path` (recursively) ending in `suffix`."""
        out, todo = [], [path]
        while todo:
            for f in self.client.list_artifacts(run_id, todo.pop() or None):
                if f.is_dir:
                    todo.append(f.path)
                elif f.path.endswith(suffix):
                    out.append(f.path)
        return sorted(out)

    def download(self, run_id: str, path: str, dst: Path) -> Path:
        dst.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run_id, path, str(dst)))


def _check_sqlite(uri: str) -> None:
    """A sqlite store must exist to be read: MLflow would quietly create an empty database."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :].split("?")[0]).expanduser()
        if not db.is_file():
            raise CytorayError(
                f"no MLflow store at {db}; pass the --tracking-uri "
                "the study wrote to (e.g. sqlite:///runs/mlflow.db)"
            )


def _all_runs(client, exp_id: str, query: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [exp_id],
            query,
            max_results=1000,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def kind_of(parent) -> str:
    """The study kind: the parent's `cytoray.kind` tag, or (for studies recorded before that tag)
    what its params show: baselines have `policies`, histology→cytology `variants`, the ratio and
    stabiliser studies an `objective`."""
    tag = parent.data.tags.get(KIND_TAG)
    if tag in KINDS:
        return tag
    p = parent.data.params
    if "policies" in p:
        return "baselines"
    if "variants" in p:
        return "histo_to_cyto"
    if "objective" in p:
        return "stabilisers" if p["objective"] == "fidelity" else "ratio"
    raise CytorayError(
        f"run {parent.info.run_id} ({parent.info.run_name}) is not a cytoray study's parent run "
        "(no cytoray.kind tag, no policies/variants/objective params)"
    )


def load(experiment: str, tracking_uri: str | None = None, run_id: str | None = None) -> Recorded:
    """The study's newest parent run in `experiment` (or `run_id`) and its child runs."""
    from mlflow import MlflowClient

    from ..tracking.mlflow_utils import tracking_uri as resolve

    process_env.ensure("mlflow")  # no progress bar per downloaded grid
    uri = resolve(tracking_uri)
    _check_sqlite(uri)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise CytorayError(
            f"no experiment {experiment!r} in the MLflow store "
            f"{uri} (it has: {', '.join(names) or 'none'})"
        )
    if run_id:
        try:
            parent = client.get_run(run_id)
        except Exception as e:  # MLflow: RESOURCE_DOES_NOT_EXIST (or a malformed id)
            if (
                "RESOURCE_DOES_NOT_EXIST" not in f"{getattr(e, 'error_code', '')} {e}"
                and "INVALID_PARAMETER" not in str(e)
            ):
                raise
            raise CytorayError(
                f"--run-id {run_id}: no such run in the MLflow store {uri}; leave it out for the "
                f"newest study in {experiment!r}, or copy the parent run's id from the MLflow UI"
            ) from None
        if parent.info.experiment_id != exp.experiment_id:
            raise CytorayError(f"run {run_id} is not in experiment {experiment!r} ({uri})")
    else:
        parents = [
            r
            for r in _all_runs(client, exp.experiment_id, f"tags.`{STUDY_TAG}` != ''")
            if "mlflow.parentRunId" not in r.data.tags and r.info.lifecycle_stage == "active"
        ]
        if not parents:
            raise CytorayError(f"experiment {experiment!r} in {uri} holds no cytoray study run")
        parent = parents[-1]  # the newest study; an older one by --run-id
    runs = _all_runs(
        client, exp.experiment_id, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    children = [r for r in runs if TRIAL_TAG in r.data.tags]
    results = [r for r in runs if RESULT_TAG in r.data.tags]
    return Recorded(uri, client, exp, parent, children, results, kind_of(parent))


def study_dir(rec: Recorded) -> str:
    return rec.parent.data.tags.get(PARENT_TAG, "")
