"""The visual Turing test: scoring on constructed answers (known results, scipy's intervals), the
reading page read end to end in headless Chromium (as tests/test_mlflow_ui.py drives it), the
scores in MLflow and the report, and a reading set built from a SynCGAN trained on the simulator."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import blob_image, write_png
from test_mlflow_ui import CHROMIUM, FLAGS

from cytoray.errors import CytorayError
from cytoray.io import write_json
from cytoray.turing import IMAGES, SET_FILE, key_path
from cytoray.turing.score import binomial, cohen_kappa, fleiss_kappa, metrics, score
from cytoray.turing.serve import Answers, make_server

CLASSES = ["benign", "malignant"]


def reading_set(root: Path, n: int = 20) -> tuple[Path, dict]:
    """A reading set as `build` lays it out: n images (half real, classes balanced), the key beside it."""
    out = root / "set"
    ids = [f"{i:016x}" for i in np.random.default_rng(0).integers(0, 2**62, n)]
    key = {}
    for j, i in enumerate(ids):
        write_png(out / IMAGES / f"{i}.png", blob_image(j))
        cls = CLASSES[(j // 2) % 2]
        key[i] = {
            "source": ("real", "synthetic")[j % 2],
            "class": cls,
            "origin": f"{cls}/orig_{j:03d}.png",
        }
    write_json(
        out / SET_FILE,
        {"version": 1, "n": n, "classes": CLASSES, "size": 32, "images": ids, "created": "now"},
    )
    write_json(
        key_path(out),
        {"version": 1, "generator": "syncgan@champion", "run_id": None, "images": key},
    )
    return out, key


def answer(reader_dir: Path, reader: str, answers: dict[str, tuple[str, str]]) -> None:
    store = Answers(reader_dir, reader)
    for image, (source, cls) in answers.items():
        store.record({"image": image, "source": source, "class": cls, "confidence": 2})


# ----------------------------------------------------------------------------- scoring


def test_perfect_reader_scores_one_with_scipys_exact_interval_and_p(tmp_path):
    from scipy.stats import binomtest

    out, key = reading_set(tmp_path)
    answer(out, "perfect", {i: (k["source"], k["class"]) for i, k in key.items()})
    s = score(out)
    r = s["readers"]["perfect"]
    t = binomtest(len(key), len(key), 0.5)
    ci = t.proportion_ci(method="exact")
    assert r["accuracy"] == 1.0 and r["complete"]
    assert (r["accuracy_ci_low"], r["accuracy_ci_high"], r["accuracy_p_value"]) == pytest.approx(
        (ci.low, ci.high, t.pvalue)
    )
    assert (
        r["sensitivity"]
        == r["specificity"]
        == r["class_accuracy_real"]
        == r["class_accuracy_synthetic"]
        == 1.0
    )
    assert s["agreement"]["method"] is None  # one reader: no kappa
    assert metrics(s)["turing_accuracy"] == 1.0 and metrics(s)["turing_p_value"] == pytest.approx(
        t.pvalue
    )


def test_reader_at_chance_and_class_accuracy_apart_from_source(tmp_path):
    out, key = reading_set(tmp_path)
    # calls everything real (chance on a half-real set) and names every class right
    answer(out, "chance", {i: ("real", k["class"]) for i, k in key.items()})
    # right about the source of every image, wrong about the class of every synthetic one
    answer(
        out,
        "eye",
        {
            i: (
                k["source"],
                k["class"] if k["source"] == "real" else CLASSES[1 - CLASSES.index(k["class"])],
            )
            for i, k in key.items()
        },
    )
    s = score(out)
    c, e = s["readers"]["chance"], s["readers"]["eye"]
    assert c["accuracy"] == 0.5 and c["accuracy_p_value"] == pytest.approx(1.0)
    assert c["accuracy_ci_low"] < 0.5 < c["accuracy_ci_high"]
    assert (c["sensitivity"], c["specificity"]) == (0.0, 1.0)  # synthetic is the positive class
    assert e["accuracy"] == 1.0 and (e["class_accuracy_real"], e["class_accuracy_synthetic"]) == (
        1.0,
        0.0,
    )
    pooled = s["pooled"]
    assert pooled["answers"] == 2 * len(key) and pooled["accuracy"] == 0.75
    assert pooled["accuracy_p_value"] == pytest.approx(binomial(30, 40)["p_value"])
    # every synthetic image was taken for real by one of the two ('chance'): all ten listed, each 1 of 2
    assert len(s["taken_for_real"]) == 10 and all(
        key[t["image"]]["source"] == "synthetic" for t in s["taken_for_real"]
    )
    assert {(t["taken_for_real"], t["readers"]) for t in s["taken_for_real"]} == {(1, 2)}


def test_readers_who_always_agree_have_kappa_one(tmp_path):
    out, key = reading_set(tmp_path)
    calls = {
        i: (("real", "synthetic")[j % 3 == 0], k["class"]) for j, (i, k) in enumerate(key.items())
    }
    answer(out, "a", calls)
    answer(out, "b", calls)
    s = score(out)
    assert s["agreement"]["method"] == "cohen" and s["agreement"]["kappa"] == pytest.approx(1.0)
    answer(out, "c", calls)
    s = score(out)
    assert s["agreement"]["method"] == "fleiss" and s["agreement"]["kappa"] == pytest.approx(1.0)
    assert metrics(s)["turing_kappa"] == pytest.approx(1.0)


def test_kappas_match_references():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(1)
    a, b = (
        rng.choice(["real", "synthetic"], 50).tolist(),
        rng.choice(["real", "synthetic"], 50).tolist(),
    )
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    # Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories, kappa 0.210
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    assert fleiss_kappa(np.array(table)) == pytest.approx(0.2099, abs=1e-3)


def test_bad_answers_are_refused(tmp_path):
    out, key = reading_set(tmp_path, 4)
    app = __import__("cytoray.turing.serve", fromlist=["create_app"]).create_app(out, "r")
    c = app.test_client()
    img = next(iter(key))
    for body in [
        {"image": "nope", "source": "real", "class": "benign", "confidence": 1},
        {"image": img, "source": "fake", "class": "benign", "confidence": 1},
        {"image": img, "source": "real", "class": "other", "confidence": 1},
        {"image": img, "source": "real", "class": "benign", "confidence": 7},
    ]:
        assert c.post("/api/answer", json=body).status_code == 400
    assert not (out / "answers" / "r.json").exists()
    for path in [
        "/set.json",
        f"/image/../../{key_path(out).name}",
        "/images/" + img + ".png",
        "/static/x",
        "/answers/r.json",
    ]:
        assert c.get(path).status_code == 404
    with pytest.raises(CytorayError, match="reader name"):
        Answers(out, "../x")
    with pytest.raises(CytorayError, match="no answers yet"):
        score(out)


# ----------------------------------------------------------------------------- the page in Chromium


def _wait_for_next_image(pg, last: str) -> str:
    """The id of the image on screen once it has loaded and is not `last` (polled: the page's CSP forbids Playwright's eval)."""
    deadline = time.monotonic() + 60
    check = "(e, last) => e.complete && e.naturalWidth > 0 && e.src.includes('/image/') && !e.src.endsWith('/' + last)"
    while not pg.eval_on_selector("#img", check, last):
        assert time.monotonic() < deadline, "the next image did not load"
        time.sleep(0.05)
    return pg.eval_on_selector("#img", "e => e.src").rsplit("/", 1)[1]


def read_in_chromium(
    out: Path, reader: str, key: dict, sessions: list[int], shots: Path
) -> tuple[list[str], list[bytes]]:
    """Serve `out` for `reader` and read it in headless Chromium as a perfect reader, by the keyboard, closing the
    page after each session's count of answers and opening it afresh. Returns (images read, every response body)."""
    if not Path(CHROMIUM).is_file():  # an error, never a skip: CI must run this
        pytest.fail(
            f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium (apt-get install chromium chromium-driver)"
        )
    from playwright.sync_api import sync_playwright

    srv = make_server(out, reader, 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    seen, bodies, total = [], [], len(key)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            for session, count in enumerate(sessions):
                ctx = browser.new_context(
                    viewport={"width": 1200, "height": 800}
                )  # a fresh profile: nothing kept
                pg = ctx.new_page()
                pg.set_default_timeout(60_000)
                responses: list = []
                pg.on("response", lambda r: responses.append(r))
                pg.goto(f"http://127.0.0.1:{srv.server_port}/")
                pg.get_by_text(
                    f"image {len(seen) + 1} of {total}"
                ).wait_for()  # resumed at the first unanswered image
                for k in range(count):
                    image = _wait_for_next_image(pg, seen[-1] if seen else "")
                    truth = key[image]
                    pg.keyboard.press("r" if truth["source"] == "real" else "s")
                    pg.keyboard.press(str(CLASSES.index(truth["class"]) + 1))
                    pg.keyboard.press("x")
                    if k == 0:
                        pg.screenshot(path=str(shots / f"{reader}_session{session}.png"))
                    seen.append(image)
                    with pg.expect_response(lambda r: r.url.endswith("/api/answer")):
                        pg.keyboard.press("Enter")
                if len(seen) == total:
                    pg.get_by_text("All images read").wait_for()
                    pg.screenshot(path=str(shots / f"{reader}_done.png"))
                pg.wait_for_load_state("networkidle")
                bodies.extend(
                    r.body() for r in responses
                )  # every response of the page, read before it closes
                ctx.close()
            browser.close()
    finally:
        srv.shutdown()
        srv.server_close()
    return seen, bodies


def test_page_is_read_end_to_end_resumed_and_never_sends_the_key(tmp_path):
    out, key = reading_set(tmp_path, 8)
    seen, bodies = read_in_chromium(
        out, "alice", key, [3, 5], tmp_path
    )  # closes after 3 answers, comes back, finishes
    stored = json.loads((out / "answers" / "alice.json").read_text())["answers"]
    assert (
        sorted(a["image"] for a in stored) == sorted(key) and len(seen) == len(set(seen)) == 8
    )  # one answer per image
    assert all(a["confidence"] == 2 for a in stored)
    key_text = key_path(out).read_text()
    secrets = [key_text, *(k["origin"] for k in key.values()), key_path(out).name]
    assert bodies and not any(s.encode() in b for s in secrets for b in bodies)
    assert score(out)["readers"]["alice"]["accuracy"] == 1.0


def _two_readers(tmp_path: Path) -> Path:
    out, key = reading_set(tmp_path)
    answer(out, "a", {i: (k["source"], k["class"]) for i, k in key.items()})  # perfect
    answer(out, "b", {i: ("real", k["class"]) for i, k in key.items()})  # calls everything real
    return out


def test_scores_are_logged_to_the_run_and_shown_by_the_report_section(tmp_path):
    from mlflow import MlflowClient

    from cytoray.cli import main
    from cytoray.report import turing as section
    from cytoray.report.html import Page
    from cytoray.report.store import Recorded

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("gen", artifact_location=(tmp_path / "artefacts").as_uri())
    rid = client.create_run(exp, run_name="train-syncgan").info.run_id
    client.set_terminated(
        rid, "FINISHED"
    )  # the generator's run ended long ago: it still takes the scores
    out = _two_readers(tmp_path)
    assert main(["turing", "score", str(out), "--log", rid, "--tracking-uri", uri]) == 0
    run = client.get_run(rid)
    expected = metrics(score(out))
    assert {k: run.data.metrics[k] for k in expected} == pytest.approx(expected)
    assert (
        run.data.metrics["turing_accuracy"] == 0.75 and run.data.metrics["turing_accuracy/a"] == 1.0
    )
    assert {f.path for f in client.list_artifacts(rid, "turing")} == {
        "turing/scores.json",
        "turing/turing.html",
    }
    page = Page("t", tmp_path / "page")
    rec = Recorded(uri, client, client.get_experiment(exp), run, [], [], "ratio")
    section.build(rec, page, tmp_path / "dl")
    html = "".join(page.parts)
    assert (
        "Visual Turing test" in html
        and "75% [" in html
        and "100% [" in html
        and "cohen kappa" in html
    )
    empty = Page("t", tmp_path / "page2")
    section.build(
        Recorded(
            uri, client, None, client.get_run(client.create_run(exp).info.run_id), [], [], "ratio"
        ),
        empty,
        tmp_path,
    )
    assert empty.parts == []  # a study without a reading shows nothing
    assert (
        main(["turing", "score", str(out), "--log", "--tracking-uri", uri]) == 2
    )  # the key records no run: say so


@pytest.mark.slow
def test_report_of_a_study_shows_a_reading_scored_onto_its_run(tmp_path):
    from report_store import ratio_store

    from cytoray.cli import main
    from cytoray.report import build_report

    uri, parent = ratio_store(tmp_path / "store")
    out = _two_readers(tmp_path)
    assert main(["turing", "score", str(out), "--log", parent, "--tracking-uri", uri]) == 0
    page = build_report("syncgan_ratio", tmp_path / "report", uri).read_text()
    assert "Visual Turing test" in page and "75% [" in page and "100% [" in page


# ----------------------------------------------------------------------------- building from a trained SynCGAN


@pytest.fixture(scope="module")
def tiny_syncgan(tmp_path_factory):
    """A SynCGAN trained (2 epochs, 8-channel nets, as tests/test_generators.py does) on a simulated folder, on the
    split `cytoray train` makes of it (seed 0, 3:1:1), so its bundle records that split's hash."""
    from test_generators import _cfg

    from cytoray.config import DataConfig
    from cytoray.data.simulate import write_dataset
    from cytoray.data.source import load_dataset
    from cytoray.data.splits import make_manifest
    from cytoray.generators.syncgan import SynCGAN

    tmp = tmp_path_factory.mktemp("turing-syncgan")
    data = write_dataset(tmp / "data", n=40, size=32, seed=0)
    cfg = DataConfig(root=str(data), size=32)
    ds = load_dataset(cfg)
    man, _ = make_manifest(ds, cfg.split_ratios, cfg.split_seed, cfg.near_duplicate_bits)
    run = _cfg(tmp)
    bundle, _ = SynCGAN.train(
        ds.subset(man.indices("train")),
        ds.subset(man.indices("val")),
        run.syncgan,
        tmp / "bundle",
        tmp / "cache",
        man.hash,
        run.run,
    )
    return {"tmp": tmp, "data": data, "bundle": bundle, "ds": ds, "man": man}


@pytest.mark.slow
def test_build_from_a_trained_syncgan_is_blind_balanced_test_only_and_readable(
    tiny_syncgan, tmp_path
):
    from cytoray.cli import main
    from cytoray.data.images import read_rgb

    t = tiny_syncgan
    out = tmp_path / "reading"
    assert (
        main(
            [
                "turing",
                "build",
                "--generator",
                str(t["bundle"]),
                "--data",
                str(t["data"]),
                "--n",
                "8",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    s = json.loads((out / SET_FILE).read_text())
    key = json.loads(key_path(out).read_text())
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(
        [SET_FILE, *(f"{IMAGES}/{i}.png" for i in s["images"])]
    )  # nothing else served, no key inside
    assert key_path(out).parent == out.parent and not key_path(out).is_relative_to(out)
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in s["images"]) and set(s["images"]) == set(
        key["images"]
    )
    assert not any(v in (out / SET_FILE).read_text() for v in ("real", "synthetic", "origin"))
    counts = {}
    for v in key["images"].values():
        counts[(v["source"], v["class"])] = counts.get((v["source"], v["class"]), 0) + 1
    assert counts == {(src, c): 2 for src in ("real", "synthetic") for c in ("benign", "malignant")}
    man, ds = t["man"], t["ds"]
    assert key["split_hash"] == man.hash and key["split_checked"]
    split_of = {it["name"]: it["split"] for it in man.items}
    train_pixels = {ds.images[i].tobytes() for i in man.indices("train")} | {
        ds.images[i].tobytes() for i in man.indices("val")
    }
    for i, v in key["images"].items():
        pixels = read_rgb(out / IMAGES / f"{i}.png")
        assert pixels.shape == (32, 32, 3)  # every image at the generator's size
        if v["source"] == "real":
            assert split_of[v["origin"]] == "test" and pixels.tobytes() not in train_pixels
    # read end to end in the browser by a perfect reader, scored; no response carries the key
    seen, bodies = read_in_chromium(out, "reader", key["images"], [8], tmp_path)
    assert sorted(seen) == sorted(s["images"])
    assert not any(v["origin"].encode() in b for v in key["images"].values() for b in bodies)
    assert score(out)["readers"]["reader"]["accuracy"] == 1.0
    # a split the generator was not trained on is refused; so is an n that cannot be balanced
    with pytest.raises(CytorayError, match="not the one the generator was trained on"):
        from cytoray.turing.build import build

        build(str(t["bundle"]), str(t["data"]), 8, tmp_path / "other", split_seed=1)
    assert (
        main(
            [
                "turing",
                "build",
                "--generator",
                str(t["bundle"]),
                "--data",
                str(t["data"]),
                "--n",
                "6",
                "--out",
                str(tmp_path / "odd"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "odd").exists() and not key_path(tmp_path / "odd").exists()


@pytest.mark.slow
def test_build_from_a_registered_generator_logs_back_to_its_run(tiny_syncgan, tmp_path):
    import mlflow

    from cytoray.cli import main
    from cytoray.tracking.registry import register

    t = tiny_syncgan
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("gen")
    with mlflow.start_run() as run:
        version, promoted = register(
            "tiny-syncgan", t["bundle"], score=1.0, protocol="test", metric="val_fid"
        )
    assert promoted
    out = tmp_path / "reading"
    assert (
        main(
            [
                "turing",
                "build",
                "--generator",
                "tiny-syncgan@champion",
                "--data",
                str(t["data"]),
                "--n",
                "4",
                "--out",
                str(out),
                "--tracking-uri",
                uri,
            ]
        )
        == 0
    )
    key = json.loads(key_path(out).read_text())
    assert (key["generator"], key["generator_version"], key["run_id"]) == (
        "tiny-syncgan@champion",
        f"tiny-syncgan/{version}",
        run.info.run_id,
    )
    answer(out, "r", {i: (v["source"], v["class"]) for i, v in key["images"].items()})
    assert (
        main(["turing", "score", str(out), "--log", "--tracking-uri", uri]) == 0
    )  # no value: the key's run
    assert mlflow.MlflowClient(uri).get_run(run.info.run_id).data.metrics["turing_accuracy"] == 1.0
