"""Registry protocol: the champion is decided on the validation metric under one protocol; test
figures are recorded, never compared; smoke and under-budget runs never take the alias."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def registry(tmp_path, monkeypatch):
    import mlflow

    from cytoray.classify.bundle import write_classifier_bundle
    from cytoray.nets.classifiers import build_classifier
    from cytoray.tracking.mlflow_utils import setup
    from cytoray.tracking.registry import register

    monkeypatch.chdir(tmp_path)
    setup("registry-test", f"sqlite:///{tmp_path / 'm.db'}")
    bundle = write_classifier_bundle(
        tmp_path / "clf",
        build_classifier("smallcnn", 2, 32).state_dict(),
        name="smallcnn",
        class_names=["benign", "malignant"],
        input_size=32,
        params={},
    )

    def reg(val: float, test: float, protocol: str = "split:a", **kw) -> tuple[str, bool]:
        with mlflow.start_run():
            return register(
                "clf",
                bundle,
                score=val,
                protocol=protocol,
                metric="val_balanced_accuracy",
                kind="classifier",
                recorded={"balanced_accuracy": test},
                **kw,
            )

    return reg


def _champion():
    from mlflow import MlflowClient

    return MlflowClient().get_model_version_by_alias("clf", "champion")


def test_champion_is_chosen_on_validation_and_test_is_only_recorded(registry):
    assert registry(0.70, 0.60) == ("1", True)
    assert registry(0.65, 0.95) == ("2", False)  # a better TEST figure does not move the champion
    assert registry(0.80, 0.50) == ("3", True)  # a better validation figure does
    champ = _champion()
    assert str(champ.version) == "3" and champ.tags["cytoray.metric"] == "val_balanced_accuracy"
    assert float(champ.tags["cytoray.test.balanced_accuracy"]) == 0.5  # recorded beside it
    assert registry(0.99, 0.99, protocol="split:b") == ("4", False)  # another split: not comparable


def test_smoke_and_under_budget_runs_never_take_the_alias(registry):
    assert registry(0.99, 0.99, ineligible="a --smoke-test run") == ("1", False)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        _champion()  # no alias at all: the only version is a smoke run
    assert MlflowClient().get_model_version("clf", "1").tags["cytoray.eligible"] == "false"
    assert registry(0.50, 0.50) == ("2", True)
    assert registry(0.99, 0.99, ineligible="below the budget for a champion (2 < 5 epochs)") == (
        "3",
        False,
    )
    assert str(_champion().version) == "2"


def test_a_test_metric_is_never_a_selection_metric(registry):
    from cytoray.tracking.registry import register

    with pytest.raises(ValueError, match="never on the test split"):
        register("clf", ".", score=1.0, protocol="p", metric="test_balanced_accuracy")


def test_a_champion_chosen_on_test_by_an_older_cytoray_is_replaced(registry):
    from mlflow import MlflowClient

    assert registry(0.6, 0.6) == ("1", True)
    client = MlflowClient()
    client.set_model_version_tag(
        "clf", "1", "cytoray.metric", "test_balanced_accuracy"
    )  # as the old registry recorded it
    assert registry(0.1, 0.1) == ("2", True)


def test_artifacts_go_beside_the_sqlite_database_not_the_working_directory(tmp_path, monkeypatch):
    import mlflow

    from cytoray.tracking.mlflow_utils import setup

    store, cwd = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir(), cwd.mkdir()
    monkeypatch.chdir(cwd)
    setup("where-artifacts-go", f"sqlite:///{store / 'm.db'}")
    (tmp_path / "a.txt").write_text("x")
    with mlflow.start_run():
        mlflow.log_artifact(str(tmp_path / "a.txt"))
    assert list((store / "mlartifacts").rglob("a.txt")) and not (cwd / "mlruns").exists()


def test_registered_models_load_as_code_with_nothing_pickled(registry, tmp_path):
    """Loading a registered model executes a file of cytoray (models-from-code), never unpickles bytes."""
    import mlflow
    import numpy as np

    registry(0.5, 0.5)
    local = Path(
        mlflow.artifacts.download_artifacts("models:/clf/1", dst_path=str(tmp_path / "dl"))
    )
    assert not list(local.rglob("*.pkl")) and list(local.rglob("classifier.py"))
    model = mlflow.pyfunc.load_model("models:/clf/1")
    prob = np.asarray(model.predict(np.zeros((3, 32, 32, 3), np.uint8)))
    assert prob.shape == (3, 2) and np.allclose(prob.sum(1), 1, atol=1e-5)
