"""A quiet, informative console: Ray/MLflow/Optuna messages that are not the user's concern are
stopped where they start (a logger's level, a library's own switch, a Ray setting), never by redirecting
stderr; `--verbose` brings Ray's own output back.

What each rule removes (as seen on a `make run` console) and why it is not the user's concern:

| source | message | rule |
| --- | --- | --- |
| Ray Train V2 controller (C++ core worker, per job, in red) | `E ... core_worker.cc ... 'PreemptionWatcher' ... max_restarts > 0` | no preemption watcher on a local cluster (`RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0`): one machine has no spot nodes to watch; kept on a cluster (`--address`) |
| Ray, ray.init | `Token authentication is enabled for this Ray cluster ...` | logger `ray._private.authentication.authentication_token_setup` at ERROR |
| Tune's output engine | the "Configuration for experiment" box, TensorBoard hint, status tables | Tune's legacy engine at verbose=0 prints none of them (`RAY_AIR_NEW_OUTPUT=0`, `tune_verbosity()`); `TrialProgress` prints one line per trial instead |
| Ray workers (log_to_driver) | every worker's stdout/stderr, prefixed `(pid=...)` | studies: off (`worker_output=False`); their errors still reach the driver as trial errors |
| MLflow, new sqlite store | INFO `Creating initial MLflow database tables...` | logger `mlflow.store.db.utils` at WARNING |
| Optuna | INFO `A new study created in memory with name: optuna` | `optuna.logging.set_verbosity(WARNING)` |
| Tune, per slow result | WARNING `The process_trial_result operation took 0.695 s, which may be a performance bottleneck` | threshold 5 s instead of 0.5 s (`TUNE_WARN_THRESHOLD_S`): trials report once an epoch, and a busy laptop's half-second MLflow write is not a bottleneck |

Not here, because no filter can reach it: MLflow's `Add type hints to the predict method` UserWarning
is raised inside `filter_user_warnings_once`, which puts its own filter first; it goes at its
source (a `model_input: pd.DataFrame` hint on the registered models' `predict`, which is what
pyfunc passes and turns MLflow's schema inference off, as now).

Library use (tests, notebooks) is unchanged until a command calls `configure`.
"""

from __future__ import annotations

import logging
import os
import sys

from . import process_env

_STATE = {"configured": False, "verbose": False, "worker_output": True}

# (logger, level) pairs: informational lines at start-up that say nothing a user acts on.
LOGGER_LEVELS = (
    ("ray._private.authentication.authentication_token_setup", logging.ERROR),
    ("mlflow.store.db.utils", logging.WARNING),
)


def configure(verbose: bool = False, worker_output: bool | None = None) -> None:
    """Called once by a command (study scripts, `cytoray`). `worker_output` (default: `verbose`)
    streams Ray workers' output to this console; `cytoray train` keeps it, its epochs are its progress."""
    verbose = verbose or os.environ.get("CYTORAY_VERBOSE", "0") == "1"
    _STATE.update(
        configured=True,
        verbose=verbose,
        worker_output=verbose if worker_output is None else worker_output,
    )
    if verbose:
        return
    for name, level in LOGGER_LEVELS:
        logging.getLogger(name).setLevel(level)
    try:  # Optuna resets its own logger's level when it first logs: set it through its API
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:
        pass
    process_env.ensure("tune_quiet")  # Tune's legacy engine, warnings past 5 s; read at import ...
    # ... or, when a study script imported it already, set where it is read
    util = sys.modules.get("ray.tune.utils.util")
    if util is not None:
        util.warn_if_slow.DEFAULT_THRESHOLD = max(
            util.warn_if_slow.DEFAULT_THRESHOLD, float(os.environ["TUNE_WARN_THRESHOLD_S"])
        )


def verbose() -> bool:
    return _STATE["verbose"]


def tune_verbosity() -> int:
    """Tune's `RunConfig(verbose=...)`: 0 (silent; TrialProgress reports) unless --verbose."""
    return 1 if _STATE["verbose"] else 0


def ray_init_options(address: str | None) -> dict:
    """Keyword arguments for `ray.init` (and the environment its local cluster inherits).

    Unconfigured (library use): Ray's defaults as before (worker output on, WARNING)."""
    if not _STATE["configured"]:
        return {"log_to_driver": True, "logging_level": logging.WARNING}
    if not address:  # workers of a local cluster inherit this process's environment at ray.init
        process_env.ensure("ray_quiet")
    return {
        "log_to_driver": bool(_STATE["worker_output"]),
        "logging_level": logging.INFO if _STATE["verbose"] else logging.WARNING,
    }
