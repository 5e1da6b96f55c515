"""The bad-input table (issue 21), part 3 of 3: tracebacks that become one line (configs, sizes,
bundles, pixel bombs, disk full) and results that were silently wrong or misleading. Each row:
exit 2 (validate: 1 with a report), one line naming the file or key, nothing written."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import blob_image, write_png

sys.path.insert(0, str(Path(__file__).parent))
from test_bad_input import _cli, _one_line, _study  # noqa: E402
from test_bad_input_more import LIMIT_TEXT, FakeGen, _bomb_png, _row, ds, tree  # noqa: E402,F401 (ds: the fixture)

# ----------------------------------------------------------------------------- 4. tracebacks -> one line

CONFIG_TEXT = {
    "deep": "a: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "latin1": "gan:\n  epochs: 1 # caf\xe9\n",
    "duplicate": "gan:\n  epochs: 1\n  epochs: 2\n",
}
CONFIG_FRAGMENT = {
    "deep": "nested more than 100 levels",
    "latin1": "not UTF-8 (byte 0xe9",
    "duplicate": "key 'epochs' given twice (line 3)",
}


@pytest.mark.parametrize("case", sorted(CONFIG_TEXT))
def test_config_files_that_crashed_or_passed_silently(case, ds, tmp_path, capsys):
    cfg = tmp_path / f"{case}.yaml"
    cfg.write_bytes(CONFIG_TEXT[case].encode("latin-1"))
    _row(
        ["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o"), "--config", str(cfg)],
        f"{cfg}: {CONFIG_FRAGMENT[case]}",
        capsys,
        tmp_path,
    )


@pytest.mark.parametrize("split", ["3:x:1", "0:0:0", "1:1", "-1:1:1"])
def test_validate_split_that_crashed_or_said_usable(split, ds, tmp_path, capsys):
    _row(
        ["validate", str(ds), f"--split={split}"], f"--split {split}: give three", capsys, tmp_path
    )


def test_split_seed_minus_one(ds, tmp_path, capsys):
    _row(
        ["split", "--data", str(ds), "--out", str(tmp_path / "m.json"), "--seed", "-1"],
        "--seed -1",
        capsys,
        tmp_path,
    )


def test_split_k_2_writes_two_manifests_whatever_the_name(ds, tmp_path, capsys, monkeypatch):
    from cytoray.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["split", "--data", str(ds), "--out", "manifest", "--k", "2", "--size", "16"]) == 0
    a, b = (tmp_path / "manifest_0").read_text(), (tmp_path / "manifest_1").read_text()
    assert a != b and not (tmp_path / "manifest").exists()


@pytest.mark.parametrize("cmd", ["split", "fid", "masks", "train"])
def test_decompression_bomb_is_named_with_the_limit(cmd, ds, tmp_path, capsys):
    bomb = _bomb_png(ds / "benign" / "zz.png")
    argv = {
        "split": ["split", "--data", str(ds), "--out", str(tmp_path / "m.json")],
        "fid": ["fid", str(ds / "benign"), str(ds / "malignant")],
        "masks": ["masks", "--data", str(ds), "--out", str(tmp_path / "masks")],
        "train": ["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o")],
    }[cmd]
    before = tree(tmp_path)
    code, err = _cli(argv, capsys)
    assert code == 2 and f"{bomb}: {LIMIT_TEXT}" in err and "CYTORAY_MAX_IMAGE_PIXELS" in err, err
    _one_line(err)
    assert (
        tree(tmp_path) == before
    )  # masks: refused from the headers, before the first mask is written


def test_masks_on_an_image_under_8_px(ds, tmp_path, capsys):
    tiny = write_png(ds / "benign" / "zz.png", blob_image(3, 32)[:5, :6])
    _row(
        ["masks", "--data", str(ds), "--out", str(tmp_path / "m")],
        f"{tiny}: image is 6x5 px; nucleus masking needs at least 8x8",
        capsys,
        tmp_path,
    )


def test_a_study_default_config_is_found_outside_the_repository(tmp_path, monkeypatch):
    from cytoray.config import load
    from cytoray.experiments.ratio import RatioStudy

    monkeypatch.chdir(tmp_path)
    assert load(RatioStudy.Config, "configs/studies/syncgan_ratio.yaml").name == "syncgan_ratio"


def test_decompression_bomb_in_validate_is_a_problem_of_that_file(ds, tmp_path, capsys):
    import json

    from cytoray.cli import main

    bomb = _bomb_png(ds / "benign" / "zz.png")
    _bomb_png(
        ds / "malignant" / "big.png", 20_000, 20_000
    )  # a valid-sized header of a 400 Mpx image
    before = tree(tmp_path)
    assert main(["validate", str(ds), "--json"]) == 1
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err and tree(tmp_path) == before
    problems = {p["file"]: p["problem"] for p in json.loads(cap.out)["problems"]}
    assert problems[str(bomb)].startswith(LIMIT_TEXT), problems
    assert problems[str(ds / "malignant" / "big.png")].startswith("20000x20000 px is over"), (
        problems
    )


def test_the_pixel_limit_is_a_setting(tmp_path, monkeypatch):
    from cytoray.data.images import read_rgb
    from cytoray.errors import DataError

    p = write_png(tmp_path / "a.png", blob_image(0, 32))
    monkeypatch.setenv("CYTORAY_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(DataError, match="32x32 px is over the 1000 px limit"):
        read_rgb(p)
    monkeypatch.setenv("CYTORAY_MAX_IMAGE_PIXELS", "1024")
    assert read_rgb(p).shape == (32, 32, 3)


GEN_JSON = {
    "not json": ("{nope", "not a readable generator bundle file"),
    "empty object": ("{}", "generator bundle file lacks generator"),
    "a list": ("[1, 2]", "a generator bundle file holds a JSON object, this holds list"),
}


@pytest.mark.parametrize("case", sorted(GEN_JSON))
def test_generator_json_that_crashed(case, tmp_path, capsys):
    b = tmp_path / "bundle"
    b.mkdir()
    text, frag = GEN_JSON[case]
    (b / "generator.json").write_text(text)
    _row(
        [
            "generate",
            "--checkpoint",
            str(b),
            "--n",
            "2",
            "--cls",
            "benign",
            "--out",
            str(tmp_path / "g"),
        ],
        f"{b / 'generator.json'}: {frag}",
        capsys,
        tmp_path,
    )


def test_truncated_weights_and_foreign_classifier_json(tmp_path):
    from cytoray.classify.bundle import load_classifier_bundle
    from cytoray.errors import CytorayError

    b = tmp_path / "clf"
    b.mkdir()
    (b / "classifier.json").write_text(
        '{"classifier": "smallcnn", "class_names": ["a", "b"], "input_size": 32}'
    )
    import torch

    torch.save({"w": torch.zeros(100)}, b / "model.pt")
    (b / "model.pt").write_bytes((b / "model.pt").read_bytes()[:100])
    with pytest.raises(CytorayError, match="model.pt: not loadable weights"):
        load_classifier_bundle(b)
    for text, frag in (
        ("[]", "holds a JSON object"),
        ('{"classifier": "x"}', "lacks class_names, input_size"),
        (
            '{"classifier": "smallcnn", "class_names": ["a", "b"], "input_size": 10000000}',
            "input_size 10000000",
        ),
    ):
        (b / "classifier.json").write_text(text)
        with pytest.raises(CytorayError, match=frag):
            load_classifier_bundle(b)


# ----------------------------------------------------------------------------- 4b. more tracebacks and misleading lines


def test_set_the_generator_section_itself(ds, tmp_path, capsys):
    _row(
        ["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o"), "--set", "gan=5"],
        "--set gan=5: 'gan' is the generator's section",
        capsys,
        tmp_path,
    )
    _row(
        ["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o"), "--set", "run..seed=5"],
        "'run..seed' has an empty key name",
        capsys,
        tmp_path,
    )


def test_report_of_a_run_id_that_does_not_exist(tmp_path, capsys):
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/m.db").create_experiment("syncgan_ratio")
    _row(
        [
            "report",
            "--experiment",
            "syncgan_ratio",
            "--run-id",
            "deadbeef",
            "--out",
            str(tmp_path / "r"),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/m.db",
        ],
        "--run-id deadbeef: no such run",
        capsys,
        tmp_path,
    )


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (
            ["simulate", "--out", "{tmp}/s", "--n", "4", "--size", "100000"],
            "--n 4 --size 100000 needs about",
        ),
        (
            ["fid", "{ds}/benign", "{ds}/malignant", "--size", "100000"],
            "--size 100000: give 16 to 2048 px",
        ),
    ],
)
def test_absurd_sizes_are_refused_before_allocating(argv, fragment, ds, tmp_path, capsys):
    _row([a.format(tmp=tmp_path, ds=ds) for a in argv], fragment, capsys, tmp_path)


def test_generate_more_images_than_memory_holds(tmp_path):
    from cytoray.cli import _write_samples
    from cytoray.errors import CytorayError

    with pytest.raises(CytorayError, match=r"--n 100000000 needs about .* GiB of memory"):
        _write_samples(FakeGen(), 100_000_000, ["benign"], str(tmp_path / "g"), 0)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    """ENOSPC from a write has no file name (OSError 28 was a traceback)."""
    import errno

    import cytoray.data.simulate as sim

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sim, "save_png", full)
    _row(
        ["simulate", "--out", str(tmp_path / "s"), "--n", "4", "--size", "16"],
        "no space left on the device",
        capsys,
        tmp_path,
    )


def test_an_unreadable_input_is_not_told_to_choose_another_output(ds, tmp_path, capsys):
    from cytoray.io import os_error_message

    msg = os_error_message(PermissionError(13, "Permission denied", str(ds / "benign" / "00.png")))
    assert "choose another output" not in msg and "inputs must be readable" in msg


def test_a_legal_250_character_name_is_written(tmp_path):
    from cytoray.io import atomic_dir, write_text

    name = "n" * 250
    write_text(tmp_path / f"{name[:246]}.txt", "x")
    with atomic_dir(tmp_path / name) as d:
        (d / "f").write_text("y")
    with atomic_dir(tmp_path / name, overwrite=True) as d:
        (d / "g").write_text("z")
    assert (tmp_path / name / "g").read_text() == "z" and sorted(
        p.name for p in tmp_path.iterdir()
    ) == sorted([name, f"{name[:246]}.txt"])


# ----------------------------------------------------------------------------- 4c. configs and search spaces before Ray


@pytest.mark.parametrize(
    "dist,fragment",
    [
        ("{dist: uniform, low: a, high: 1}", "space.ratio.low: 'a' is not a finite number"),
        ("{dist: choice, values: []}", "space.ratio.values: give a non-empty list"),
        ("{dist: uniform, low: 0, high: .inf}", "space.ratio.high: inf is not a finite number"),
        ("{dist: choice, values: [1, .nan]}", "space.ratio=nan"),
    ],
)
def test_search_space_that_failed_inside_ray(dist, fragment, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(f"space:\n  ratio: {dist}\n")
    code, err = _study(
        "syncgan_ratio",
        [
            "--smoke-test",
            "--out",
            str(tmp_path / "out"),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/m.db",
            "--set",
            f"tune.search_space={space}",
        ],
        capsys,
    )
    assert code == 2 and f"{space}: {fragment}" in err, err
    _one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["--set", "gan.lr_g=1e300"], "lr_g=1e+300: a learning rate is above 0"),
        (
            ["--set", "run.storage_path=/proc/cytoray-x"],
            "run.storage_path=/proc/cytoray-x: cannot write in /proc",
        ),
    ],
)
def test_train_settings_that_failed_late(argv, fragment, ds, tmp_path, capsys):
    _row(
        ["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o"), *argv],
        fragment,
        capsys,
        tmp_path,
    )


def test_a_class_name_mlflow_refuses_is_named_before_training(tmp_path, capsys):
    root = tmp_path / "d"
    for c, cls in enumerate(("a b \U0001f600", "malin")):
        for i in range(6):
            write_png(root / cls / f"{i}.png", blob_image(10 * c + i))
    _row(
        ["train", "gan", "--data", str(root), "--out", str(tmp_path / "o")],
        "class name 'a b \U0001f600' cannot be an MLflow metric name",
        capsys,
        tmp_path,
    )


# ----------------------------------------------------------------------------- 5. silently wrong


def test_validate_names_masks_of_the_wrong_size_and_notes_jpeg_and_grey_masks(ds, tmp_path, capsys):
    import json

    import numpy as np
    from PIL import Image

    from cytoray.cli import main

    write_png(
        ds / "benign" / "masks" / "01.png", np.zeros((10, 12), np.uint8)
    )  # its image is 32x32
    Image.fromarray((blob_image(5)[..., 0] < 128).astype(np.uint8) * 255).save(
        ds / "benign" / "masks" / "02.jpg", quality=60
    )
    write_png(
        ds / "malignant" / "masks" / "01.png", blob_image(7)[..., 1]
    )  # a greyscale picture, not a mask
    assert main(["validate", str(ds), "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    problems = {p["file"]: p["problem"] for p in rep["problems"]}
    assert problems[str(ds / "benign" / "masks" / "01.png")].startswith(
        "mask is 12x10 px but its image is 32x32"
    ), problems
    notes = {n["file"]: n["note"] for n in rep["mask_notes"]}
    assert notes[str(ds / "benign" / "masks" / "02.jpg")].startswith("a JPEG mask"), notes
    assert notes[str(ds / "malignant" / "masks" / "01.png")].startswith("grey levels"), notes
    assert str(ds / "benign" / "masks" / "00.png") not in notes  # a binary PNG mask is fine


def test_unknown_or_absurd_network_arguments_in_a_bundle(tmp_path):
    from cytoray.bundle import load_per_class
    from cytoray.errors import CytorayError
    from cytoray.nets.patchgan import PatchDiscriminator

    for kwargs, frag in (
        ({"nope": 1}, "do not build"),
        ({"base": 10**9}, "not a plausible network"),
        ("x", "not a plausible network"),
    ):
        with pytest.raises(CytorayError, match=frag):
            load_per_class(tmp_path, {"benign": {"kwargs": kwargs}}, PatchDiscriminator, "d_")


def test_fid_names_a_dangling_symlink_instead_of_skipping_it(ds, tmp_path, capsys):
    link = ds / "benign" / "zz.png"
    os.symlink(tmp_path / "gone.png", link)
    _row(
        ["fid", str(ds / "benign"), str(ds / "malignant")],
        f"{link}: a symbolic link to nothing",
        capsys,
        tmp_path,
    )


@pytest.mark.parametrize("metric", ["test_balanced_accuracy", "balanced_accuracy"])
def test_a_selection_metric_that_is_not_validation_is_refused_before_the_split(
    metric, tmp_path, capsys
):
    code, err = _study(
        "syncgan_ratio",
        [
            "--smoke-test",
            "--out",
            str(tmp_path / "out"),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/m.db",
            "--set",
            f"tune.metric={metric}",
        ],
        capsys,
    )
    assert code == 2 and f"tune.metric={metric}: select on a validation metric" in err, err
    _one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_kid_at_n_2_shows_no_spread_instead_of_plus_minus_zero():
    from cytoray.metrics.fidelity_stats import describe

    r = {
        "n1": 2,
        "n2": 2,
        "kid_mean": -0.0308,
        "kid_std": 0.0,
        "kid_subset_size": 2,
        "kid_subsets": 100,
        "fid": 12.0,
        "feature_extractor": "inception",
        "weights_sha1": "0" * 40,
        "resize": "none",
    }
    text = "\n".join(describe(r))
    assert "± 0.0000" not in text and "± n/a (every subset is the whole set" in text
    text = "\n".join(
        describe({**r, "n1": 3, "kid_std": 0.01})
    )  # the larger set varies between subsets
    assert "± 0.01000" in text
