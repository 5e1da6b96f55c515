"""Every environment variable cytoray sets in its own process, in one table.

Ray, Ray Tune and MLflow read some settings only from the environment, and some of them only at a
given moment (Tune when it is imported or when a Tuner starts, a local Ray cluster's processes when
`ray.init` starts them). Each group below is applied, by `ensure(group)`, right before what reads
it. Nothing else in the package sets a lasting value (training/runner.py's `_loopback_only` sets
one for the span of a `ray.init` and restores it). A value the user has set wins, except where a
setting is `forced` (the reason says why). `tests/test_process_env.py` keeps it that way.
"""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class Setting:
    value: str
    why: str
    forced: bool = False  # set even when the user set it (cytoray's correctness depends on it)


POLL_ENV, POLL_INTERVAL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1"
PREEMPTION_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
DASHBOARD_ENV = "RAY_API_SERVER_ADDRESS"

GROUPS: dict[str, dict[str, Setting]] = {
    # Before `ray.init` (training/runner.py: init_ray): a local cluster's processes inherit them.
    "ray": {
        "RAY_TRAIN_ENABLE_PRINT_PATCH": Setting(
            "0",
            "Train V2 reroutes worker print() through logging and tees "
            "it to stdout: every progress line reached the console "
            "twice; Ray Train propagates this switch to its workers",
        ),
    },
    # Before `ray.init` of a local cluster, when a
    # command configured quiet output (cytoray/quiet.py).
    "ray_quiet": {
        PREEMPTION_ENV: Setting(
            "0",
            "the Train V2 controller's preemption watcher logs a red core_worker error per "
            "job; one machine has no spot nodes to watch (kept on a cluster: --address)",
        ),
    },
    # Before a TorchTrainer is built in this process (training/runner.py: _fit).
    "train": {
        POLL_ENV: Setting(
            POLL_INTERVAL_S,
            "Ray Train V2's controller takes one report from each worker per poll (2 s by default) "
            "and a worker's next report waits for it: every epoch shorter than the poll lasted the "
            "poll (a smoke trial 2:44 at 2 s, 1:01 at 0.1 s; benchmarks/report_poll.py). A poll "
            "is a small actor call; a worker too busy to answer one is asked again next time "
            "(declared dead only after minutes)",
        ),
    },
    # Before a Tuner starts (experiments/driver.py: _tune).
    "tune": {
        "TUNE_GLOBAL_CHECKPOINT_S": Setting(
            "2",
            "the experiment state is saved often, so a SIGKILL loses little and --resume goes on",
        ),
        "TUNE_DISABLE_SIGINT_HANDLER": Setting(
            "1",
            "Tune's own SIGINT handler ends the trials and returns as if the search had finished "
            "(the final test would then run on a cut-short search); without it Ctrl-C stops the "
            "study at once and --resume continues from the state saved every 2 s",
            forced=True,
        ),
    },
    # When a command configures quiet output (cytoray/quiet.py: configure), before Tune is imported.
    "tune_quiet": {
        "RAY_AIR_NEW_OUTPUT": Setting("0", "Tune's legacy output engine is silent at verbose=0"),
        "TUNE_WARN_THRESHOLD_S": Setting(
            "5",
            "Tune warns of a 'performance bottleneck' past 0.5 s; trials report once an epoch and "
            "a busy laptop's half-second MLflow write is not one (read when ray.tune is imported)",
        ),
    },
    # Before MLflow downloads artefacts (the report, a registry pull).
    "mlflow": {
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": Setting(
            "false", "a progress bar per downloaded file is noise in logs"
        ),
    },
    # Before an MLflow client talks to a server (tracking/mlflow_utils.py).
    "mlflow_http": {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": Setting(
            "3",
            "MLflow's own retries default to 7 with backoff 2 (~250 s of silence per call, even on "
            "a refused connection); tracking_call does the long, visible, bounded waiting instead",
        ),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": Setting("1", "with the 3 retries above"),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": Setting(
            "30", "with the retries above: each call retries briefly"
        ),
    },
}


def ensure(group: str) -> None:
    """Apply one group of settings to this process's environment (idempotent)."""
    for name, s in GROUPS[group].items():
        if s.forced:
            os.environ[name] = s.value
        else:
            os.environ.setdefault(name, s.value)


def value(name: str) -> str:
    """The value cytoray sets for `name` (the table's, not necessarily the environment's)."""
    for settings in GROUPS.values():
        if name in settings:
            return settings[name].value
    raise KeyError(name)


def set_dashboard(port: int) -> None:
    """Name this process's local Ray dashboard for its cluster's processes (training/runner.py).

    Ray Train's placement-group cleaner asks the state API whether its controller still lives,
    finding the cluster by auto-detection; with a second local cluster on the machine (another
    study, a `cytoray train`) it asked the wrong one, heard "dead" and removed the running job's
    placement group. The local cluster's own dashboard, named in the environment its processes
    inherit, is the answer it gets instead. Always set: it names this cluster, not a preference."""
    os.environ[DASHBOARD_ENV] = f"http://127.0.0.1:{port}"
