"""The bad-input table (issue 21), last rows: generator bundles each kind's loader reads, a
decompression bomb given to `classify`, the wording of a dead tracking server outside a study,
and a full disk (a real tmpfs in a user namespace where the kernel allows one). Each row: exit 2,
one line naming the file or key and what to do, no traceback, nothing written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_bad_input import _cli, _one_line  # noqa: E402
from test_bad_input_hangs import closed_port  # noqa: E402,F401 (the fixture)
from test_bad_input_more import LIMIT_TEXT, _bomb_png, _row, ds, tree  # noqa: E402,F401 (ds: the fixture)

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- 1. generator bundles

# Every registered generator kind with a generator.json that names it and nothing else its
# loader reads: the key each loader reads first is named (KeyError was a traceback).
FIRST_KEY = {"syncgan": "cgan", "gan": "gans", "cyclegan": "translators", "nst": "images", "refined-sim": "segmenter_kwargs",
             "diffusion": "denoiser"}  # fmt: skip


def test_every_generator_kind_is_in_the_table():
    from cytoray.generators import generator_names

    assert sorted(generator_names()) == sorted(FIRST_KEY)


def _bundle(root: Path, meta: dict, weights: dict[str, dict] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, sd in (weights or {}).items():
        torch.save(sd, root / f"{name}.pt")
    (root / "generator.json").write_text(json.dumps(meta))
    return root


def _generate(b: Path, tmp_path: Path) -> list[str]:
    return ["generate", "--checkpoint", str(b), "--n", "2", "--cls", "benign", "--out", str(tmp_path / "g")]


@pytest.mark.parametrize("kind", sorted(FIRST_KEY))
def test_generator_json_missing_the_keys_of_its_kind(kind, tmp_path, capsys):
    b = _bundle(tmp_path / "b", {"generator": kind, "classes": ["benign", "malignant"]})
    _row(_generate(b, tmp_path), f"{b / 'generator.json'}: not a complete '{kind}' bundle (no key '{FIRST_KEY[kind]}'); re-copy",
         capsys, tmp_path)  # fmt: skip


@pytest.mark.parametrize("meta,fragment", [
    ({"generator": "gan", "classes": ["benign"], "gans": [1, 2]}, "(AttributeError: 'list' object has no attribute 'items')"),
    ({"generator": "syncgan", "classes": ["benign"], "cgan": {}}, "(no key 'kwargs')"),
    ({"generator": "gan", "classes": 5, "gans": {}}, "(TypeError: 'int' object is not iterable)"),
])  # fmt: skip
def test_generator_json_with_keys_of_the_wrong_shape(meta, fragment, tmp_path, capsys):
    b = _bundle(tmp_path / "b", meta)
    _row(_generate(b, tmp_path), f"{b / 'generator.json'}: not a complete '{meta['generator']}' bundle {fragment}", capsys, tmp_path)


def _tiny_unet():
    from cytoray.nets import UNet

    kw = dict(in_ch=3, out_ch=1, base=4, depth=2, norm="batch", dropout=0.0, out_act="none")
    return kw, UNet(**kw).state_dict()


def _truncate(f: Path) -> Path:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return f


def _truncated_bundle(kind: str, root: Path) -> tuple[Path, Path]:
    """A bundle of `kind` whose generator.json is right and one real weights or arrays file is cut in half."""
    from cytoray.nets.unet import VanillaGenerator

    if kind == "gan":
        kw = dict(z_dim=8, out_size=16, base=4, max_ch=8)
        b = _bundle(root, {"generator": "gan", "classes": ["benign"], "gans": {"benign": {"kwargs": kw}}},
                    {"gan_benign": VanillaGenerator(**kw).state_dict()})  # fmt: skip
        return b, _truncate(b / "gan_benign.pt")
    if kind == "syncgan":
        kw, sd = _tiny_unet()
        b = _bundle(root, {"generator": "syncgan", "classes": ["benign"], "cgan": {"kwargs": kw}, "mask_gans": {}}, {"cgan": sd})
        return b, _truncate(b / "cgan.pt")
    if kind == "refined-sim":
        kw, sd = _tiny_unet()
        b = _bundle(root, {"generator": "refined-sim", "classes": ["benign"], "segmenter_kwargs": kw, "refined": False,
                           "references": "references.npz", "class_index": {"benign": 0}}, {"segmenter": sd})  # fmt: skip
        return b, _truncate(b / "segmenter.pt")
    import numpy as np

    b = _bundle(root, {"generator": "nst", "classes": ["benign"], "images": "images.npz", "nst": {}})
    np.savez_compressed(b / "images.npz", content_benign=np.zeros((4, 16, 16, 3), np.uint8), style_benign=np.ones((4, 16, 16, 3), np.uint8))
    return b, _truncate(b / "images.npz")


@pytest.mark.parametrize("kind", ["gan", "syncgan", "refined-sim", "nst"])
def test_a_truncated_file_inside_a_generator_bundle_is_named(kind, tmp_path, capsys):
    b, cut = _truncated_bundle(kind, tmp_path / "b")
    what = "not loadable arrays" if cut.suffix == ".npz" else "not loadable weights"
    err = _row(_generate(b, tmp_path), f"{cut}: {what} (", capsys, tmp_path)
    assert "re-copy the bundle or retrain" in err


def test_a_weights_file_missing_from_a_bundle_is_named(tmp_path, capsys):
    b, cut = _truncated_bundle("syncgan", tmp_path / "b")
    cut.unlink()
    _row(_generate(b, tmp_path), f"{cut}: missing from the bundle; re-copy the bundle or retrain", capsys, tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "json"])
def test_segment_with_a_damaged_segmenter_bundle(damage, ds, tmp_path, capsys):
    from test_bad_input_more import _untrained_segmenter

    seg = _untrained_segmenter(tmp_path / "seg")
    if damage == "truncated":
        frag = f"{_truncate(seg / 'segmenter.pt')}: not loadable weights ("
    else:
        (seg / "segmenter.json").write_text('{"threshold": 0.5}')
        frag = f"{seg / 'segmenter.json'}: segmenter bundle file lacks segmenter_kwargs"
    _row(["segment", str(seg), str(ds), "--out", str(tmp_path / "masks")], frag, capsys, tmp_path)


def test_segment_with_a_truncated_refined_sim_bundle(ds, tmp_path, capsys):
    b, cut = _truncated_bundle("refined-sim", tmp_path / "b")
    _row(["segment", str(b), str(ds), "--out", str(tmp_path / "masks")], f"{cut}: not loadable weights (", capsys, tmp_path)


# ----------------------------------------------------------------------------- 2. classify on a decompression bomb


def test_classify_on_a_decompression_bomb_names_it_before_pulling(ds, tmp_path, capsys):
    bomb = _bomb_png(ds / "benign" / "zz.png")
    assert bomb.stat().st_size < 100
    err = _row(["classify", "clf@champion", str(ds / "benign"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"],
               f"{bomb}: {LIMIT_TEXT}", capsys, tmp_path)  # fmt: skip
    assert "CYTORAY_MAX_IMAGE_PIXELS" in err  # the setting that raises the limit


# ----------------------------------------------------------------------------- 3. --resume only where it exists


def test_train_with_a_dead_tracking_server_is_not_told_to_resume(closed_port, ds, tmp_path, capsys):
    uri = f"http://127.0.0.1:{closed_port}"
    err = _row(["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o"), "--tracking-uri", uri],
               f"cannot reach the MLflow tracking server at {uri}", capsys, tmp_path)  # fmt: skip
    assert "--resume" not in err and "starting the training run" in err


@pytest.mark.parametrize("cmd", ["pull", "classify"])
def test_pull_and_classify_with_a_dead_tracking_server_are_not_told_to_resume(cmd, closed_port, ds, tmp_path, capsys):
    uri = f"http://127.0.0.1:{closed_port}"
    argv = {"pull": ["pull", "gen@champion", "--n", "1", "--out", str(tmp_path / "p")],
            "classify": ["classify", "clf@champion", str(ds / "benign")]}[cmd]  # fmt: skip
    err = _row([*argv, "--tracking-uri", uri], f"cannot reach the MLflow tracking server at {uri}", capsys, tmp_path)
    assert "--resume" not in err


def test_a_server_lost_mid_command_names_resume_for_studies_only():
    """The wording once the probe has passed (the server died between calls): `pull`'s download,
    `train`'s run; a study's client (RetryingClient) is the one caller with a --resume."""
    from cytoray.tracking.mlflow_utils import tracking_error

    e = ConnectionError("Max retries exceeded: Connection refused")
    assert "--resume" not in str(tracking_error(e, "http://127.0.0.1:9", "pulling x@champion"))
    assert "then rerun with --resume" in str(tracking_error(e, "http://127.0.0.1:9", "calling log_metric", resume=True))
