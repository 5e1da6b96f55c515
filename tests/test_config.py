"""Strict configs: YAML files match the dataclass defaults, unknown keys name key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cytoray.config import load, to_dict
from cytoray.errors import ConfigError
from cytoray.generators.config import GeneratorTrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_base_yaml_documents_every_default():
    """configs/models/syncgan.yaml lists every key with the dataclass default (comments stay true)."""
    assert to_dict(load(GeneratorTrainConfig, CONFIGS / "models" / "syncgan.yaml")) == to_dict(GeneratorTrainConfig())


def test_experiment_file_holds_only_differences():
    cfg = load(GeneratorTrainConfig, CONFIGS / "models" / "syncgan_paper.yaml")
    assert cfg.data.size == 256 and cfg.cgan.epochs == 200 and cfg.mask_gan.epochs == 1600
    assert cfg.cgan.lam == 100.0  # inherited from the base


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("cgan:\n  lamda: 10\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*unknown key 'lamda'.*valid keys: .*lam"):
        load(GeneratorTrainConfig, p)


def test_bad_values_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="cgan.epochs: expected an integer"):
        load(GeneratorTrainConfig, None, ["cgan.epochs=ten"])
    with pytest.raises(ConfigError, match="flip_rate"):
        load(GeneratorTrainConfig, None, ["mask_gan.flip_rate=0.7"])
    with pytest.raises(ConfigError, match="not one of"):
        load(GeneratorTrainConfig, None, ["cgan.norm=group"])
    with pytest.raises(ConfigError, match="config file not found"):
        load(GeneratorTrainConfig, tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("cgan: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load(GeneratorTrainConfig, tmp_path / "broken.yaml")
    assert load(GeneratorTrainConfig, None, ["cgan.lam=10", "data.size=32"]).cgan.lam == 10.0


def test_partial_nested_override_keeps_the_parents_defaults():
    from cytoray.distributed.study import RatioStudyConfig

    cfg = load(RatioStudyConfig, None, ["classifier.epochs=2", "cgan.lam=5"])
    assert cfg.classifier.name == "smallcnn" and cfg.classifier.epochs == 2  # the study's default, not the class's
    default = RatioStudyConfig().cgan
    assert cfg.cgan.g_base == default.g_base == 16 and cfg.cgan.epochs == default.epochs and cfg.cgan.lam == 5.0


@pytest.mark.parametrize("path,cls", [("studies/syncgan_ratio.yaml", "study"), ("studies/augmentation_baselines.yaml", "baselines")])
def test_study_yaml_documents_every_default(path, cls):
    from cytoray.classify.baselines import BaselinesConfig
    from cytoray.distributed.study import RatioStudyConfig

    klass = RatioStudyConfig if cls == "study" else BaselinesConfig
    assert to_dict(load(klass, CONFIGS / path)) == to_dict(klass())


def test_paper_study_config_loads():
    from cytoray.distributed.study import RatioStudyConfig

    cfg = load(RatioStudyConfig, CONFIGS / "studies" / "syncgan_ratio_paper.yaml")
    assert cfg.data.size == 256 and cfg.cgan.epochs == 200 and cfg.mask_gan.epochs == 1600
    assert cfg.classifier.name == "resnet152" and cfg.run.use_gpu and cfg.tune.num_samples == 40
    assert cfg.cgan.lam == 100.0 and cfg.cgan.batch_size == 16  # inherited
