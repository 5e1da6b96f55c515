"""What a trial tells its MLflow run besides metrics: tags and params, in one nested report entry.

A trial's report (`tune.report`) is a flat mapping of metrics plus, under `RUN_INFO`, the strings
its child run should carry as MLflow tags and params:

    {"val_balanced_accuracy": 0.73, ..., "mlflow_run": {"tags": {"generator": "syncgan"},
                                                         "params": {"weights": "imagenet"}}}

The study logger (study_logger.py) sets them as tags and params; numbers elsewhere in the report
are metrics. `with_run_info` merges into a report that may already hold an entry (one part of a
trial adds tags, a later one params), so no part overwrites another's.
"""

from __future__ import annotations

from typing import Any

RUN_INFO = "mlflow_run"
MAX_PARAM = 500  # characters of a param value MLflow accepts (longer values are cut)


def with_run_info(
    report: dict, tags: dict[str, Any] | None = None, params: dict[str, Any] | None = None
) -> dict:
    """A copy of `report` whose run entry also holds `tags` and `params` (as strings)."""
    old = report.get(RUN_INFO) or {}
    entry = {
        "tags": {**old.get("tags", {}), **{k: str(v) for k, v in (tags or {}).items()}},
        "params": {
            **old.get("params", {}),
            **{k: str(v)[:MAX_PARAM] for k, v in (params or {}).items()},
        },
    }
    return {**report, RUN_INFO: entry}


def run_tags(report: dict) -> dict[str, str]:
    return dict((report.get(RUN_INFO) or {}).get("tags", {}))


def run_params(report: dict) -> dict[str, str]:
    return dict((report.get(RUN_INFO) or {}).get("params", {}))
