"""Precision / recall / density / coverage and memorisation (cytoray.metrics.realism) on feature
sets whose answers are known by construction, then `cytoray fid --realism` on tiny folders
through the real offline Inception."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cytoray.data.simulate import simulate
from cytoray.errors import DataError
from cytoray.metrics import realism as R


def gauss(n: int, seed: int, d: int = 16, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, scale, (n, d))


def test_identical_sets_score_one():
    x = gauss(120, 0)
    p = R.prdc(x, x.copy())
    assert p["precision"] == 1.0 and p["recall"] == 1.0 and p["coverage"] == 1.0 and p["k"] == R.K
    # Each real ball strictly holds its own copy and its k-1 nearer neighbours' copies: density is exactly 1.
    assert p["density"] == pytest.approx(1.0)


def test_far_apart_sets_score_zero():
    x = gauss(80, 1)
    p = R.prdc(x, gauss(60, 2) + 1000.0)
    assert all(p[m] == 0.0 for m in R.PRDC)


def test_realism_and_diversity_are_told_apart():
    real = gauss(300, 3, d=8)
    fresh = R.prdc(real, gauss(300, 4, d=8))
    collapsed = R.prdc(
        real, gauss(300, 5, d=8, scale=0.2)
    )  # realistic but no variety (mode collapse)
    spread = R.prdc(real, gauss(300, 6, d=8, scale=3.0))  # varied but mostly off the real manifold
    assert (
        0.8 < fresh["density"] < 1.2
        and min(fresh[m] for m in ("precision", "recall", "coverage")) > 0.85
    )
    assert (
        collapsed["precision"] > 0.95 and collapsed["recall"] < 0.1 and collapsed["density"] > 1.5
    )  # crowds the mode
    assert collapsed["coverage"] < fresh["coverage"] - 0.3
    assert (
        spread["precision"] < 0.2
        and spread["recall"] > 0.95
        and spread["density"] < 0.2
        and spread["coverage"] < 0.2
    )


def test_k_is_stated_and_lowered_for_tiny_sets():
    x, y = gauss(30, 7), gauss(30, 8)
    assert R.prdc(x, y, k=3)["k"] == 3
    assert R.prdc(x[:4], y, k=5)["k"] == 3  # n - 1 of the smaller set
    # Larger k: larger balls, so precision and recall can only grow.
    small, big = R.prdc(x, y, k=1), R.prdc(x, y, k=10)
    assert big["precision"] >= small["precision"] and big["recall"] >= small["recall"]
    with pytest.raises(DataError, match="k=0"):
        R.prdc(x, y, k=0)
    with pytest.raises(DataError, match="width"):
        R.prdc(x, gauss(30, 9, d=8))
    with pytest.raises(DataError, match="synthetic"):
        R.prdc(x, y[:1])


def test_memorisation_copy_of_train_is_one_and_pairs_point_back():
    train = gauss(200, 10)
    perm = np.random.default_rng(0).permutation(200)[:50]
    m = R.memorisation(train[perm], train, pairs=5)
    assert m["share"] == 1.0 and m["threshold"] > 0 and m["percentile"] == R.PERCENTILE
    np.testing.assert_array_equal(m["nearest"], perm)
    assert len(m["pairs"]) == 5 and all(perm[i] == j and d < 1e-6 for i, j, d in m["pairs"])


def test_memorisation_fresh_draws_score_near_the_percentile():
    train = gauss(400, 11)
    for q in (5.0, 20.0):
        share = R.memorisation(gauss(4000, 12), train, percentile=q)["share"]
        assert abs(share - q / 100) < 0.35 * q / 100 + 0.01, (q, share)
    # Half copies, half fresh: about half plus the fresh half's ~5%.
    mixed = np.concatenate([train[:100], gauss(100, 13)])
    m = R.memorisation(mixed, train)
    assert 0.5 <= m["share"] < 0.6 and [i for i, _, _ in m["pairs"]] == sorted(
        i for i, _, _ in m["pairs"]
    )
    assert all(i < 100 for i, _, _ in m["pairs"])  # the closest pairs are the copies
    with pytest.raises(DataError, match="percentile"):
        R.memorisation(mixed, train, percentile=0)


def test_per_class_names_floors_and_flag():
    real = {"a": gauss(20, 20), "b": gauss(20, 21) + 3}
    train = {"a": gauss(60, 22), "b": gauss(60, 23) + 3}
    fake = {"a": train["a"][:30], "b": gauss(30, 24) + 3}  # class a copies its training images
    out, pairs = R.per_class(real, fake, "val", train)
    n = R.names("val")
    for c in ("a", "b", "all"):
        assert all(n[m].format(c=c) in out and n[f"{m}_floor"].format(c=c) in out for m in R.PRDC)
        assert out[n["k"].format(c=c)] == R.K and n["memorised"].format(c=c) in out
    assert (
        out["memorised_share_val_inception/a"] == 1.0
        and out["memorised_share_val_inception/b"] < 0.3
    )
    assert out["memorised_share_val_inception/all"] == pytest.approx(
        (30 + 30 * out["memorised_share_val_inception/b"]) / 60
    )
    assert out["memorised_share_val_inception_floor/a"] < 0.3  # held-out real images are not copies
    # The floor scores held-out real (training) images as if synthetic: near a fresh draw's values.
    assert (
        out["precision_val_inception_floor/b"] > 0.5 and out["recall_val_inception_floor/b"] > 0.5
    )
    assert set(pairs) == {"a", "b"} and pairs["a"][0][2] < 1e-6
    assert R.flagged(out, "val", R.MEMORISED_MAX) == {"a": 1.0}
    lines = R.describe(out, "val")
    assert (
        len(lines) == 3
        and lines[0].startswith("a: precision")
        and "memorised share 1.000" in lines[0]
    )
    # Without training features: PRDC only, floors from halves of the real set.
    out2, pairs2 = R.per_class(real, fake, "val")
    assert pairs2 == {} and not any(k.startswith("memorised") for k in out2)
    half = R.prdc_floor(real["a"], 30)
    assert half["floor_n_ref"] == 10 and half["floor_kind"].startswith("two seeded halves")
    assert out2["precision_val_inception_floor/a"] == half["precision"]


# ----- the CLI, through the real offline Inception (a few seconds: 16 tiny images)


def test_cli_fid_realism(tmp_path, capsys):
    from conftest import write_png

    from cytoray.cli import main

    real, train, synth = tmp_path / "real", tmp_path / "train", tmp_path / "synth"
    for folder, seed in ((real, 1), (train, 2)):
        for i, img in enumerate(simulate(n=8, size=32, seed=seed).images):
            write_png(folder / f"{i}.png", img)
    for i in range(4):  # a "generator" that copies four training images
        (synth / f"{i}.png").parent.mkdir(exist_ok=True)
        (synth / f"{i}.png").write_bytes((train / f"{2 * i}.png").read_bytes())
    assert (
        main(
            ["fid", str(real), str(synth), "--realism", "--train", str(train), "--k", "2", "--json"]
        )
        == 0
    )
    r = json.loads(capsys.readouterr().out)["realism"]
    assert (
        r["prdc"]["k"] == 2
        and set(R.PRDC) <= set(r["prdc"])
        and r["prdc_floor"]["floor_n_ref"] == 4
    )
    assert r["memorisation"]["share"] == 1.0 and r["memorisation"]["n_train"] == 8
    assert r["memorisation"]["held_out_real_share"] < 1.0
    assert sorted(j for _, j, _ in r["memorisation"]["closest_pairs"]) == [
        0,
        2,
        4,
        6,
    ]  # each copy finds its original
    assert all(d < 1e-3 for _, _, d in r["memorisation"]["closest_pairs"])
    assert main(["fid", str(real), str(synth), "--realism", "--train", str(train)]) == 0
    text = capsys.readouterr().out
    assert (
        "memorised share 1.000" in text and "precision" in text and "k=3" in text
    )  # k lowered to n - 1 of 4
    assert main(["fid", str(real), str(synth), "--train", str(train)]) == 2
    assert "--realism" in capsys.readouterr().err


# ----- a study's per-class figures (experiments.common.fidelity), through the real Inception


def test_study_fidelity_logs_realism_flags_a_copier_and_draws_pairs(tmp_path, capsys):
    from cytoray.data.folder import ImageSet
    from cytoray.experiments.common import fidelity, memorisation_flag

    sim = simulate(n=24, size=32, seed=3)

    def subset(idx):
        return ImageSet(
            sim.images[idx],
            sim.labels[idx],
            tuple(sim.class_names),
            [sim.names[i] for i in idx],
            ["x"] * len(idx),
        )

    train, val = subset(np.r_[0:8, 12:20]), subset(np.r_[8:12, 20:24])

    class Copier:  # a "generator" that returns its training images
        def sample(self, n, cls, seed=0):
            return train.images[train.labels == list(train.class_names).index(cls)][:n], None

    figs = tmp_path / "figs"
    m = fidelity(Copier(), val, "val", 5, 0, tmp_path / "features", "h", train=train, figures=figs)
    for c in ("benign", "malignant", "all"):
        assert {f"{x}_val_inception/{c}" for x in ("fid", *R.PRDC)} <= set(m) and m[
            f"memorised_share_val_inception/{c}"
        ] == 1.0
        assert m[f"memorised_share_val_inception_floor/{c}"] < 1.0
        assert m[f"prdc_val_inception_k/{c}"] == (
            5 if c == "all" else 3
        )  # 4 real images a class: k lowered to 3
    assert sorted(p.name for p in figs.glob("*.png")) == [
        "memorisation_benign.png",
        "memorisation_malignant.png",
    ]
    tag = memorisation_flag(m, "val", R.MEMORISED_MAX, "generator copier")
    assert (
        tag["memorised"].startswith("flagged: benign 100%") and "WARNING" in capsys.readouterr().err
    )
    assert memorisation_flag(m, "val", 1.0, "x")["memorised"].startswith("no")
    # Without the training images: FID/KID and P/R/D/C only, nothing about copying.
    plain = fidelity(Copier(), val, "val", 5, 0, tmp_path / "features", "h")
    assert (
        "precision_val_inception/all" not in plain
        and plain["fid_val_inception/all"] == m["fid_val_inception/all"]
    )


def test_histology_to_cytology_rows_carry_prdc(tmp_path):
    from cytoray.data.folder import ImageSet
    from cytoray.experiments.histo_to_cyto import fid_rows

    cyto, hist = simulate(n=12, size=32, seed=4), simulate("histology", n=12, size=32, seed=5)
    ref = ImageSet(cyto.images, cyto.labels, tuple(cyto.class_names), list(cyto.names), ["x"] * 12)
    src = {c: hist.images[hist.labels == i] for i, c in enumerate(hist.class_names)}
    same = {c: cyto.images[cyto.labels == i] for i, c in enumerate(cyto.class_names)}
    out = fid_rows({"histology": src, "copy": same}, ref, "test", "k", tmp_path)
    for row in out.values():
        assert {
            f"{x}_test_inception/{c}" for x in R.PRDC for c in ("benign", "malignant", "all")
        } <= set(row)
    assert (
        out["copy"]["precision_test_inception/all"] == 1.0
        and out["copy"]["coverage_test_inception/all"] == 1.0
    )
    assert (
        out["histology"]["coverage_test_inception/all"] < out["copy"]["coverage_test_inception/all"]
    )


# ----- `cytoray report`: the per-class table and the closest pairs, from what MLflow recorded


def _log_realism(client, run_id: str, split: str, shares: dict[str, float]) -> None:
    n = R.names(split)
    for c, share in shares.items():
        vals = {
            n["precision"]: 0.61,
            n["precision_floor"]: 0.93,
            n["recall"]: 0.12,
            n["recall_floor"]: 0.88,
            n["density"]: 0.47,
            n["density_floor"]: 1.02,
            n["coverage"]: 0.33,
            n["coverage_floor"]: 0.91,
            n["k"]: 5.0,
            n["memorised"]: share,
            n["memorised_floor"]: 0.05,
            f"kid_{split}_inception_mean/{{c}}": 0.0421,
            f"kid_{split}_inception_floor_mean/{{c}}": 0.0107,
        }
        for key, v in vals.items():
            client.log_metric(run_id, key.format(c=c), v)


def test_report_shows_realism_tables_cas_and_pairs(tmp_path):
    from mlflow import MlflowClient
    from report_store import baselines_store, histo_store, ratio_store

    from cytoray.io import save_png
    from cytoray.report import build_report
    from cytoray.report.grids import labelled_grid

    rng = np.random.default_rng(0)
    png = tmp_path / "memorisation_benign.png"
    save_png(
        png,
        labelled_grid(
            {
                "synthetic": rng.integers(0, 255, (4, 32, 32, 3), np.uint8),
                "nearest train": rng.integers(0, 255, (4, 32, 32, 3), np.uint8),
            },
            "benign: closest pairs",
        ),
    )
    uri, parent = ratio_store(tmp_path / "ratio")
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("syncgan_ratio").experiment_id
    (best,) = client.search_runs([exp], "tags.`cytoray.trial_id` = 't0001'")
    _log_realism(client, best.info.run_id, "val", {"benign": 0.4, "malignant": 0.0, "all": 0.2})
    client.log_artifact(best.info.run_id, str(png))
    text = build_report("syncgan_ratio", tmp_path / "r1", uri).read_text()
    assert (
        "Realism, diversity and copying: chosen trial" in text
        and "0.610 (0.930)" in text
        and "0.400 (0.050)" in text
    )
    assert (
        "0.0421 (0.0107)" in text
        and (tmp_path / "r1" / "figures" / "memorisation_best_memorisation_benign.png").is_file()
    )

    uri, parent = baselines_store(tmp_path / "base")
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("augmentation_baselines").experiment_id
    cells = client.search_runs([exp], "tags.policy = 'syncgan'")
    for run in cells:
        if run.data.tags["split"] == "0":
            _log_realism(
                client, run.info.run_id, "test", {"benign": 0.1, "malignant": 0.3, "all": 0.2}
            )
        client.log_metric(
            run.info.run_id, "cas_test_balanced_accuracy", 0.5 + 0.1 * int(run.data.tags["split"])
        )
    client.log_artifact(parent, str(png), "figures/syncgan")
    out = tmp_path / "r2"
    text = build_report("augmentation_baselines", out, uri).read_text()
    assert (
        "Realism, diversity and copying: generator syncgan (split 0)" in text
        and "0.300 (0.050)" in text
    )
    assert "CAS (syncgan-only cells" in text and "0.600, mean of 3 cell(s)" in text
    assert (out / "figures" / "syncgan_memorisation_benign.png").is_file()
    assert (out / "figures" / "syncgan_memorisation_benign.png").read_bytes() == png.read_bytes()

    uri, parent = histo_store(tmp_path / "histo")
    client = MlflowClient(tracking_uri=uri)
    for row in ("histology", "cyclegan"):
        n = R.names("test")
        for c in ("benign", "malignant", "all"):
            client.log_metric(
                parent, f"{row}/{n['coverage'].format(c=c)}", 0.25 if row == "histology" else 0.75
            )
            client.log_metric(parent, f"{row}/{n['precision'].format(c=c)}", 0.5)
    text = build_report("cytoray-histo-to-cyto", tmp_path / "r3", uri).read_text()
    assert (
        "Realism, diversity and copying: real histology" in text
        and "Realism, diversity and copying: CycleGAN" in text
    )
    assert (
        "0.250" in text and "0.750" in text and "Realism, diversity and copying: NST" not in text
    )  # nst logged none


# ----- a ratio study under Ray: every trial logs them, a <generator>-only policy logs CAS


@pytest.mark.slow  # one Ray Tune trial of the toy generator and a 1-epoch classifier: ~2 min on 2 loaded CPUs
@pytest.mark.usefixtures("single_ray_instance")
def test_ratio_study_logs_realism_memorisation_and_cas(tmp_path):
    from mlflow import MlflowClient
    from test_engine import ToyConfig  # noqa: F401 (registers the toy generator)

    from cytoray.config import load
    from cytoray.experiments.driver import run_study
    from cytoray.experiments.ratio import RatioStudy, RatioStudyConfig

    space = tmp_path / "space.yaml"
    space.write_text("space:\n  ratio: {dist: choice, values: [1.0]}\n")
    sets = [
        "generator.name=toy",
        "policy=toy-only",
        f"tune.search_space={space}",
        "tune.num_samples=1",
        "tune.asha=false",
        "register=false",
        "data.sim_n=40",
        "data.size=16",
        "classifier.epochs=1",
        "fid_per_class=4",
        "memorised_max=0.0",
    ]
    run_study(
        RatioStudy(),
        load(RatioStudyConfig, None, sets),
        tmp_path / "out",
        tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
    )
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    runs = client.search_runs([client.get_experiment_by_name("toy_ratio").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    (child,) = [r for r in runs if "cytoray.trial_id" in r.data.tags]
    m = child.data.metrics
    for c in ("benign", "malignant", "all"):
        assert all(
            f"{x}_val_inception/{c}" in m and f"{x}_val_inception_floor/{c}" in m for x in R.PRDC
        )
        assert (
            f"memorised_share_val_inception/{c}" in m
            and f"memorised_share_val_inception_floor/{c}" in m
        )
    assert "cas_val_balanced_accuracy" in m and "cas_test_balanced_accuracy" in parent.data.metrics
    assert child.data.tags["memorised"].startswith(("flagged", "no"))
    arts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"memorisation_benign.png", "memorisation_malignant.png"} <= arts
    html = (tmp_path / "out" / "report" / "report.html").read_text()
    assert (
        "Realism, diversity and copying: chosen trial" in html and "CAS on the test split" in html
    )
