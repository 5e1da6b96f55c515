"""Search spaces from YAML: keys checked against the study config, points become overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from cytoray.config import to_dict
from cytoray.errors import ConfigError
from cytoray.experiments.driver import trial_config
from cytoray.experiments.ratio import RatioStudy, RatioStudyConfig
from cytoray.training.search import load_search_space, nest

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["syncgan_ratio.yaml", "syncgan_ratio_paper.yaml"])
def test_shipped_spaces_load_and_apply(name):
    cfg = RatioStudyConfig()
    space = load_search_space(CONFIGS / "search" / name, cfg)
    tune_space = space.domains()
    # the CPU default's maps come from the bank (no mask GAN): its warp is searched; the paper's space keeps eq. 7's mask GANs
    mask_gans = {
        "generator.mask_gan.smooth_real_low",
        "generator.mask_gan.smooth_fake_high",
        "generator.mask_gan.flip_rate",
    }
    own = {"generator.warp"} if name == "syncgan_ratio.yaml" else mask_gans
    assert set(tune_space) == {"generator.cgan.lam", "ratio"} | own
    point = {k: d.sample() for k, d in tune_space.items()}
    assert type(space.to_tune()["generator"]["cgan"]["lam"]) is type(
        tune_space["generator.cgan.lam"]
    )  # nested like the config
    new = trial_config(
        RatioStudy(), to_dict(cfg), nest(point)
    )  # merged as nested values, never through strings
    assert new.ratio == pytest.approx(point["ratio"]) and new.generator.cgan.lam == pytest.approx(
        point["generator.cgan.lam"]
    )
    if own == mask_gans:
        assert new.generator.mask_gan.flip_rate == pytest.approx(
            point["generator.mask_gan.flip_rate"]
        )
    else:
        assert (
            new.generator.warp == pytest.approx(point["generator.warp"])
            and new.generator.prior == "bank"
        )


def test_bad_spaces_name_key_and_file(tmp_path):
    cfg = RatioStudyConfig()
    bad = tmp_path / "bad.yaml"
    bad.write_text("space:\n  cgan.lamda: {dist: uniform, low: 1, high: 2}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: space key 'cgan.lamda' is not a setting"):
        load_search_space(bad, cfg)
    bad.write_text("space:\n  generator.cgan.lam: {dist: loguniform, low: 0, high: 2}\n")
    with pytest.raises(ConfigError, match="log scale needs low > 0"):
        load_search_space(bad, cfg)
    bad.write_text("space:\n  ratio: {dist: normal, mean: 1}\n")
    with pytest.raises(ConfigError, match="'dist' must be one of"):
        load_search_space(bad, cfg)
    bad.write_text("spaces: {}\n")
    with pytest.raises(ConfigError, match="unknown key 'spaces'"):
        load_search_space(bad, cfg)
