"""Strict configs: YAML files match the dataclass defaults, unknown keys name key and file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cytoray.config import load, to_dict
from cytoray.errors import ConfigError
from cytoray.generators.syncgan import SynCGANConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _part(name: str):
    from cytoray.classify.config import ClassifierConfig
    from cytoray.config import DataConfig
    from cytoray.experiments.driver import TuneSettings
    from cytoray.generators import get_generator
    from cytoray.training.config import RunConfig

    parts = {
        "data": DataConfig,
        "run": RunConfig,
        "tune": TuneSettings,
        "classifier": ClassifierConfig,
    }
    return parts[name] if name in parts else get_generator(name).Config


def _study(stem: str):
    from cytoray.experiments.baselines import BaselinesConfig
    from cytoray.experiments.histo_to_cyto import HistoToCytoConfig
    from cytoray.experiments.ratio import RatioStudyConfig
    from cytoray.experiments.segmentation import SegmentationStudyConfig

    return {
        "syncgan_ratio": RatioStudyConfig,
        "augmentation_baselines": BaselinesConfig,
        "histo_to_cyto": HistoToCytoConfig,
        "refined_segmentation": SegmentationStudyConfig,
    }[stem]


def _is_experiment(path: Path) -> bool:
    """An experiment file (`_base_:` a default file, or a paper's settings) holds differences."""
    return "_paper" in path.name or any(
        line.startswith("_base_:") for line in path.read_text().splitlines()
    )


DEFAULT_FILES = sorted(
    str(p.relative_to(CONFIGS))
    for p in CONFIGS.glob("*/*.yaml")
    if p.parent.name in ("models", "common", "studies") and not _is_experiment(p)
)


@pytest.mark.parametrize("path", DEFAULT_FILES)
def test_every_default_yaml_states_its_dataclass_defaults(path):
    """The one place a YAML is checked against the dataclass that holds its defaults: one YAML per
    generator/classifier (configs/models, syncgan.yaml among them), per common section
    (configs/common) and per study (configs/studies), each equal to its dataclass's defaults, so
    the comments beside every key stay true."""
    where, stem = Path(path).parent.name, Path(path).stem
    cls = _study(stem) if where == "studies" else _part(stem)
    assert to_dict(load(cls, CONFIGS / path)) == to_dict(cls())


def test_every_study_default_file_is_checked():
    assert {p for p in DEFAULT_FILES if p.startswith("studies/")} == {
        "studies/syncgan_ratio.yaml",
        "studies/augmentation_baselines.yaml",
        "studies/histo_to_cyto.yaml",
        "studies/refined_segmentation.yaml",
    }
    assert (
        "models/syncgan.yaml" in DEFAULT_FILES and "models/syncgan_paper.yaml" not in DEFAULT_FILES
    )


def test_every_generator_has_its_yaml():
    """Every generator the package ships (a test's own plugin, or the template's Toy that
    test_engine registers when pytest collects it, has no YAML here and is not one of them)."""
    from cytoray.generators import generator_names, get_generator
    from cytoray.generators.base import discovered_module

    shipped = {n for n in generator_names() if discovered_module(get_generator(n).__module__)}
    assert {"syncgan", "gan", "cyclegan", "nst", "refined-sim"} <= shipped
    assert {p.stem for p in (CONFIGS / "models").glob("*.yaml")} >= shipped


def test_experiment_file_holds_only_differences():
    cfg = load(SynCGANConfig, CONFIGS / "models" / "syncgan_paper.yaml")
    assert cfg.cgan.epochs == 200 and cfg.mask_gan.epochs == 1600 and cfg.cgan.g_base == 64
    assert cfg.cgan.lam == 100.0  # inherited from the base


def test_real_cells_preset_is_the_benchmark_variant_it_names():
    """configs/models/syncgan_real.yaml holds only its differences from syncgan.yaml, and they are
    what benchmarks/generators_real.py's `turned_restarts` variant trains at --width 64 --cgan-epochs 80."""
    base = load(SynCGANConfig, CONFIGS / "models" / "syncgan.yaml")
    cfg = load(SynCGANConfig, CONFIGS / "models" / "syncgan_real.yaml")
    assert (cfg.cgan.epochs, cfg.cgan.g_base, cfg.cgan.d_base) == (80, 64, 64)
    assert (cfg.cgan.augment, cfg.cgan.restarts) == ("dihedral", 4)
    assert cfg.cgan.lam == base.cgan.lam and cfg.masks == base.masks and cfg.prior == base.prior
    b = base.cgan
    same = dict(epochs=b.epochs, g_base=b.g_base, d_base=b.d_base, augment=b.augment, restarts=1)
    assert dataclasses.replace(cfg.cgan, **same) == b


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("cgan:\n  lamda: 10\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*unknown key 'lamda'.*valid keys: .*lam"):
        load(SynCGANConfig, p)


def test_bad_values_and_overrides(tmp_path):
    from cytoray.experiments.ratio import RatioStudyConfig as Study

    with pytest.raises(ConfigError, match="cgan.epochs: expected an integer"):
        load(Study, None, ["generator.cgan.epochs=ten"])
    with pytest.raises(ConfigError, match="flip_rate"):
        load(Study, None, ["generator.mask_gan.flip_rate=0.7"])
    with pytest.raises(ConfigError, match="not one of"):
        load(Study, None, ["generator.cgan.norm=group"])
    with pytest.raises(ConfigError, match="config file not found"):
        load(Study, tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("generator: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load(Study, tmp_path / "broken.yaml")
    assert load(Study, None, ["generator.cgan.lam=10", "data.size=32"]).generator.cgan.lam == 10.0
    with pytest.raises(ConfigError, match="lam: nan is not a finite number"):
        load(Study, None, ["generator.cgan.lam=.nan"])
    with pytest.raises(
        ConfigError, match=r"generator.name: unknown generator 'nope' \(valid: .*syncgan"
    ):
        load(Study, None, ["generator.name=nope"])
    assert (
        load(Study, None, ["generator.cgan.lr=1e-3"]).generator.cgan.lr == 0.001
    )  # YAML 1.1 reads 1e-3 as text


def test_partial_nested_override_keeps_the_parents_defaults():
    from cytoray.experiments.ratio import RatioStudyConfig

    cfg = load(RatioStudyConfig, None, ["classifier.epochs=2", "generator.cgan.lam=5"])
    assert (
        cfg.classifier.name == "smallcnn" and cfg.classifier.epochs == 2
    )  # the study's default, not the class's
    default = RatioStudyConfig().generator.cgan
    assert (
        cfg.generator.cgan.g_base == default.g_base == 16
        and cfg.generator.cgan.epochs == default.epochs
    )
    assert cfg.generator.cgan.lam == 5.0
    other = load(
        RatioStudyConfig, None, ["generator.name=cyclegan", "generator.lambda_cyc=3"]
    )  # another plugin: its own defaults
    assert (
        type(other.generator).__name__ == "CycleGANConfig"
        and other.generator.lambda_cyc == 3.0
        and other.generator.epochs == 40
    )


def test_paper_study_config_loads():
    from cytoray.experiments.ratio import RatioStudyConfig

    cfg = load(RatioStudyConfig, CONFIGS / "studies" / "syncgan_ratio_paper.yaml")
    assert (
        cfg.data.size == 256
        and cfg.generator.cgan.epochs == 200
        and cfg.generator.mask_gan.epochs == 1600
    )
    assert cfg.classifier.name == "resnet152" and cfg.run.use_gpu and cfg.tune.num_samples == 40
    assert cfg.generator.cgan.lam == 100.0 and cfg.generator.cgan.batch_size == 16  # inherited
