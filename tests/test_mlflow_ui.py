"""The MLflow UI checked as a person would: `mlflow server` on 127.0.0.1 against a study's store,
opened in headless Chromium (Debian's `chromium`, which `make test` installs when missing, driven
by Playwright). Screenshots are saved in the test's temp dir: look at them.

The store is written by the studies' own writers (tests/report_store.py), with the study report
logged to the parent run, as at the end of a real study.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from report_store import RATIO_TRIALS, ratio_store
from servers import HOST, _stop_tree, _tail, free_port

EXPERIMENT = "syncgan_ratio"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The flags this machine needs (no sandbox as root, no GPU, nothing that phones home), each run a fresh profile.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# the first page load compiles MLflow's JS bundle in a cold browser on 2 busy cores
TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """(base URL, experiment id, {run name: run id}, parent id, screenshot folder) of a served study store."""
    import requests

    from cytoray.report import build_report

    tmp = tmp_path_factory.mktemp("mlflow-ui")
    uri, parent = ratio_store(tmp, EXPERIMENT)
    build_report(EXPERIMENT, tmp / "report", uri, log=True)
    port, log = free_port(), tmp / "mlflow-server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    # GenAI job workers: unused here, slow to start on 2 cores
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        uri,
    ]
    with open(log, "ab") as f:
        proc = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, cwd=tmp, env=env, start_new_session=True
        )
    base = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"mlflow server exited:\n{_tail(log)}"
            try:
                if requests.get(f"{base}/health", timeout=3).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, (
                f"mlflow server did not answer in 120 s:\n{_tail(log)}"
            )
            time.sleep(0.3)
        exp = requests.get(
            f"{base}/api/2.0/mlflow/experiments/get-by-name",
            params={"experiment_name": EXPERIMENT},
            timeout=30,
        ).json()
        eid = exp["experiment"]["experiment_id"]
        runs = requests.post(
            f"{base}/api/2.0/mlflow/runs/search", json={"experiment_ids": [eid]}, timeout=30
        ).json()["runs"]
        names = {r["info"]["run_name"]: r["info"]["run_id"] for r in runs}
        shots = tmp / "screenshots"
        shots.mkdir()
        yield base, eid, names, parent, shots, runs
    finally:
        _stop_tree(proc, "mlflow server")


@pytest.fixture(scope="module")
def page(ui):
    if not Path(CHROMIUM).is_file():  # an error, never a skip: CI must run this
        pytest.fail(
            f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium (apt-get install chromium chromium-driver)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # Playwright's own browser download cannot run here; it drives Debian's Chromium. A fresh
        # temporary profile each run (launch() makes one), so nothing from an earlier visit is kept.
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        pg = browser.new_page(viewport={"width": 1800, "height": 1000})
        pg.set_default_timeout(TIMEOUT_MS)
        yield pg
        browser.close()


def close_assistant(pg) -> None:
    """MLflow 3's assistant side panel opens by default and covers a third of the page."""
    close = pg.get_by_role("button", name="Close")
    if close.count():
        close.first.click()


def test_experiment_page_lists_the_parent_and_every_trial(ui, page):
    base, eid, names, parent, shots, _ = ui
    # MLflow 3 opens on its GenAI view unless told: "Model training" (the switch at the top left) shows the runs table.
    page.goto(f"{base}/#/experiments/{eid}?workflowType=machine_learning")
    row = page.locator("[role=row]", has_text=EXPERIMENT).first
    row.wait_for()
    close_assistant(page)
    page.screenshot(path=str(shots / "experiment_collapsed.png"))
    row.locator("button").last.click()  # the parent's expander: its trials are nested under it
    trials = [n for n in names if n != EXPERIMENT]
    for name in trials:
        page.get_by_text(name, exact=True).first.wait_for()
    page.screenshot(path=str(shots / "experiment.png"))
    body = page.inner_text("body")
    assert f"{len(names)} matching runs" in body
    assert len(trials) == len(RATIO_TRIALS)


def test_compare_view_lines_up_settings_metrics_and_tags(ui, page):
    base, eid, names, parent, shots, _ = ui
    trials = [rid for n, rid in names.items() if n != EXPERIMENT]
    page.goto(
        f"{base}/#/compare-runs?runs={json.dumps(trials)}&experiments={json.dumps([eid])}&workflowType=machine_learning"
    )
    page.get_by_text(f"Comparing {len(trials)} Runs").wait_for()
    close_assistant(page)
    page.get_by_text("val_balanced_accuracy", exact=True).first.wait_for()
    page.screenshot(path=str(shots / "compare.png"))
    page.get_by_text(
        "fid_val_inception/all", exact=True
    ).last.scroll_into_view_if_needed()  # the metrics table, lower down
    page.screenshot(path=str(shots / "compare_metrics.png"))
    # Each trial's real-vs-synthetic grids are root artefacts, so the view offers them as common to every trial.
    for c in ("benign", "malignant"):
        assert (
            page.locator(
                f"[data-testid=artifact-tree-node][artifact-name='real_vs_synthetic_{c}.png']"
            ).count()
            == 1
        )
    body = page.inner_text("body")
    # The searched settings, the selection metric, validation FID and the variant tags, one column per trial.
    for key in (
        "ratio",
        "generator.cgan.lam",
        "val_balanced_accuracy",
        "fid_val_inception/all",
        "variant",
        "policy",
        "generator",
    ):
        assert re.search(rf"(^|\n){re.escape(key)}(\t|\n)", body), f"{key} not in the compare view"
    assert body.count("orig+syncgan") >= len(trials)  # the variant/policy tag of every trial


def test_parent_run_page_shows_the_description_and_the_report(ui, page):
    base, eid, names, parent, shots, _ = ui
    page.goto(f"{base}/#/experiments/{eid}/runs/{parent}?workflowType=machine_learning")
    page.get_by_text(
        "4 trials (test store)"
    ).first.wait_for()  # the description set by set_parent_summary
    close_assistant(page)
    page.screenshot(path=str(shots / "parent_run.png"), full_page=True)
    page.goto(
        f"{base}/#/experiments/{eid}/runs/{parent}/artifacts/report/figures/pareto.png?workflowType=machine_learning"
    )
    img = page.locator(
        "img[src^='blob:']"
    ).first  # the figure, fetched from the server's artefact store
    img.wait_for()
    assert img.evaluate("i => i.complete && i.naturalWidth") > 300
    page.screenshot(path=str(shots / "parent_report_figure.png"))
    body = page.inner_text("body")
    assert all(
        f in body
        for f in ("report.html", "pareto.png", "learning_curves_best.png", "metric_vs_settings.png")
    )


def test_trial_run_shows_its_real_vs_synthetic_images(ui, page):
    base, eid, names, parent, shots, _ = ui
    best = names["ratio=1 lam=10"]
    page.goto(
        f"{base}/#/experiments/{eid}/runs/{best}/artifacts/real_vs_synthetic_malignant.png?workflowType=machine_learning"
    )
    img = page.locator("img[src^='blob:']").first
    img.wait_for()
    assert img.evaluate("i => i.complete && i.naturalWidth") > 300
    page.screenshot(path=str(shots / "trial_grid.png"))


def test_every_run_names_its_variant(ui):
    _, _, _, parent, _, runs = ui
    for r in runs:
        tags = {t["key"]: t["value"] for t in r["data"].get("tags", [])}
        assert {"variant", "policy", "generator"} <= set(tags), (
            r["info"]["run_name"],
            sorted(tags),
        )
        if r["info"]["run_id"] == parent:
            assert tags["cytoray.kind"] == "ratio" and tags["mlflow.note.content"]
