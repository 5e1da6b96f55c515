"""The quiet console: what `cytoray.quiet.configure` switches off, and the trial progress lines."""

from __future__ import annotations

import io
import json
import types

from conftest import run_python

from cytoray.experiments.progress import TrialProgress
from cytoray.progress import Progress, fmt_seconds, progress


def test_configure_quiets_at_the_source_and_verbose_keeps_everything(tmp_path):
    probe = """
import json, logging, os, sys
if sys.argv[1] == "q":
    import ray.tune.utils.util as u  # a study script imports ray.tune before its command line is parsed
from cytoray import quiet
quiet.configure(verbose=sys.argv[1] == "v")
opts = quiet.ray_init_options(None)
opts_cluster = quiet.ray_init_options("10.0.0.1:6379")
import optuna
print(json.dumps({"opts": opts, "cluster": opts_cluster, "tune": quiet.tune_verbosity(),
    "env": {k: os.environ.get(k) for k in ("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "RAY_AIR_NEW_OUTPUT", "TUNE_WARN_THRESHOLD_S")},
    "token": logging.getLogger("ray._private.authentication.authentication_token_setup").getEffectiveLevel(),
    "optuna": optuna.logging.get_verbosity(), "db": logging.getLogger("mlflow.store.db.utils").getEffectiveLevel(),
    "slow": sys.modules["ray.tune.utils.util"].warn_if_slow.DEFAULT_THRESHOLD if "ray.tune.utils.util" in sys.modules else None}))
"""
    env = {
        "CYTORAY_VERBOSE": "0",
        "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "",
        "RAY_AIR_NEW_OUTPUT": "",
        "TUNE_WARN_THRESHOLD_S": "",
    }
    env = {k: v for k, v in env.items() if v}  # the probe's environment must not carry them in
    quiet, verbose = (
        json.loads(run_python(["-c", probe, m], cwd=tmp_path, env=env).stdout.splitlines()[-1])
        for m in ("q", "v")
    )
    assert quiet["opts"] == {"log_to_driver": False, "logging_level": 30} and quiet["tune"] == 0
    assert quiet["env"] == {
        "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
        "RAY_AIR_NEW_OUTPUT": "0",
        "TUNE_WARN_THRESHOLD_S": "5",
    }
    assert (
        quiet["token"] == 40
        and quiet["optuna"] == 30
        and quiet["db"] == 30
        and quiet["slow"] == 5.0
    )
    assert (
        quiet["cluster"]["log_to_driver"] is False
    )  # on a cluster the watcher env is left alone, output still quiet
    assert verbose["opts"] == {"log_to_driver": True, "logging_level": 20} and verbose["tune"] == 1
    assert (
        verbose["env"]["RAY_AIR_NEW_OUTPUT"] is None and verbose["optuna"] == 20
    )  # Ray's and Optuna's own output back
    assert (
        verbose["env"]["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"
    )  # one machine has no node to be preempted either way


def test_library_use_keeps_ray_defaults():
    from cytoray import quiet

    if not quiet._STATE["configured"]:  # this test process never configured it
        assert quiet.ray_init_options(None) == {"log_to_driver": True, "logging_level": 30}


def _trial(tid: str, config: dict, last: dict | None = None, status: str = "RUNNING"):
    return types.SimpleNamespace(
        trial_id=tid,
        config=config,
        last_result=last or {},
        status=status,
        error_file="/x/error.txt",
    )


def test_trial_progress_prints_k_of_n_settings_figures_and_eta(monkeypatch):
    import cytoray.experiments.progress as mod

    now = [1000.0]
    monkeypatch.setattr(mod.time, "time", lambda: now[0])
    out = io.StringIO()
    cb = TrialProgress(
        lambda c: (" ".join(f"{k}={v}" for k, v in c.items()), {}, {}),
        ["val_balanced_accuracy"],
        stream=out,
    )
    cb.setup(total_num_samples=3)
    a, b, c = _trial("a", {"ratio": 1}), _trial("b", {"ratio": 2}), _trial("c", {"ratio": 4})
    trials = [a]
    cb.on_trial_start(0, trials, a)
    now[0] += 60
    a.last_result = {"val_balanced_accuracy": 0.8125, "fid_val_inception/all": 143.24, "final": 1}
    cb.on_trial_complete(0, trials, a)
    trials.append(b)
    cb.on_trial_start(0, trials, b)
    now[0] += 30
    b.last_result = {
        "val_balanced_accuracy": 0.5,
        "epoch": 2,
    }  # ASHA stopped it after its 3rd epoch
    cb.on_trial_complete(0, trials, b)
    trials.append(c)
    cb.on_trial_start(0, trials, c)
    now[0] += 5
    cb.on_trial_error(0, trials, c)
    lines = out.getvalue().splitlines()
    assert lines[0] == "[trial 1/3] start  ratio=1"
    assert (
        lines[1]
        == "[trial 1/3] done    val_balanced_accuracy 0.8125, fid_val_inception/all 143.2 in 1:00 (elapsed 1:00, ETA ~2:00)"
    )
    assert (
        lines[3]
        == "[trial 2/3] stopped by ASHA after epoch 3:  val_balanced_accuracy 0.5 in 0:30 (elapsed 1:30, ETA ~0:45)"
    )
    assert lines[5].startswith(
        "[trial 3/3] FAILED (see /x/error.txt) in 0:05 (elapsed 1:35, nothing left)"
    )


def test_progress_bar_on_a_terminal_and_in_a_log():
    log = io.StringIO()
    assert list(progress(range(20), desc="masks", stream=log, tty=False)) == list(range(20))
    lines = log.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1].startswith(
        "masks [########################] 20/20 (100%)"
    )  # one line per 10%
    term = io.StringIO()
    with Progress(4, "fid", stream=term, tty=True) as bar:
        for _ in range(4):
            bar.update()
    assert term.getvalue().startswith("\rfid [") and term.getvalue().endswith(
        "4/4 (100%), 0:00 elapsed\x1b[K\n"
    )
    assert fmt_seconds(59.6) == "1:00" and fmt_seconds(3725) == "1:02:05"
