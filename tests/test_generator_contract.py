"""The generator contract, over every registered generator: a tiny config trains one epoch under
Ray Train, writes a bundle, loads from it, and `sample(n, cls)` gives uint8 [n,S,S,3] images (and
bool [n,S,S] masks or None) of the asked class, the same for the same seed. The table is the
registry itself: a new generator module is tested here by adding nothing.

Tiny configs come from one rule over the config dataclasses (epochs → 1, widths and latent sizes
→ 8, optimisation steps → 2); `EXTRA` holds the few settings the rule cannot guess. A generator
that translates a source domain (`consumes = "domains"`) gets simulated histology beside the
simulated cytology."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cytoray.generators import generator_names, get_generator, load_bundle

SIZE = 32  # the smallest size every generator takes (PatchGAN's 3 layers need >= 24 px)
SHRINK = {"epochs": 1, "z_dim": 8, "base": 8, "width": 8, "steps": 2, "blocks": 2, "n_blocks": 2}
EXTRA = {
    "refined-sim": {"pool": 16, "holdout": 4}
}  # its per-epoch image pool and validation images


def tiny(cfg):
    """A config with every epoch count at most 1 and every width / latent / step count at most 8 / 8 / 2."""
    changes = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            changes[f.name] = tiny(v)
            continue
        if not isinstance(v, int) or isinstance(v, bool):
            continue
        key = next((k for k in SHRINK if f.name == k or f.name.endswith(f"_{k}")), None)
        if key is not None:
            changes[f.name] = min(v, SHRINK[key])
    return dataclasses.replace(cfg, **changes)


def config_for(name: str):
    from cytoray.config import from_dict, to_dict

    cfg = tiny(get_generator(name).Config())
    return from_dict(
        type(cfg), {**to_dict(cfg), **EXTRA.get(name, {})}, f"tiny {name}"
    )  # validated like a user's


@pytest.fixture(scope="module")
def data():
    from cytoray.data.source import simulated_set
    from cytoray.data.splits import make_manifest

    out = {}
    for kind, seed in (("cytology", 0), ("histology", 1)):
        ds = simulated_set(kind, 20, SIZE, seed)
        man, _ = make_manifest(ds, [3, 1, 1], 0)
        out[kind] = (ds.subset(man.indices("train")), ds.subset(man.indices("val")))
    return out


@pytest.mark.parametrize("name", generator_names())
def test_generator_contract(name, data, tmp_path):
    from cytoray.errors import CytorayError
    from cytoray.generators.domains import DomainPair
    from cytoray.training.config import RunConfig

    gen_cls = get_generator(name)
    (c_train, c_val), (h_train, h_val) = data["cytology"], data["histology"]
    if gen_cls.consumes == "domains":
        train, val = DomainPair(h_train, c_train), DomainPair(h_val, c_val)
    else:
        train, val = c_train, c_val
    cfg = config_for(name)
    out, _ = gen_cls.train(
        train,
        val,
        cfg,
        tmp_path / "bundle",
        tmp_path / "cache",
        "k",
        RunConfig(storage_path=str(tmp_path / "ray")),
    )
    gen = load_bundle(out)
    assert type(gen) is gen_cls and list(gen.classes) == list(c_train.class_names)
    for cls in gen.classes:
        imgs, masks = gen.sample(3, cls, seed=5)
        assert imgs.dtype == np.uint8 and imgs.shape == (3, SIZE, SIZE, 3), (
            cls,
            imgs.dtype,
            imgs.shape,
        )
        assert masks is None or (
            np.asarray(masks).dtype == bool and np.asarray(masks).shape == (3, SIZE, SIZE)
        )
        assert imgs.std() > 0  # not a blank canvas
        assert np.array_equal(imgs, gen.sample(3, cls, seed=5)[0])  # seeded
    with pytest.raises(CytorayError, match="not in this generator"):
        gen.sample(1, "no-such-class")
