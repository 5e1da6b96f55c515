"""The end-to-end control (SynCGAN Tab. 3 "GAN"): one z → RGB GAN per class, same G/D
family and the same stabilisers (label smoothing, flipping) as the mask GANs."""

from __future__ import annotations

import numpy as np
import torch

from ..data.folder import ImageSet
from ..distributed.runner import run_stage
from ..nets import VanillaGenerator
from . import register
from .bundle import load_per_class, read_bundle, write_bundle
from .config import GeneratorTrainConfig
from .syncgan import _seeded_z, from_unit, stage_params, to_unit


@register("gan")
class VanillaGAN:
    def __init__(self, gens: dict[str, VanillaGenerator], meta: dict) -> None:
        self.gens, self.meta, self.classes = {k: g.eval() for k, g in gens.items()}, meta, list(meta["classes"])

    @classmethod
    def train(cls, train: ImageSet, val: ImageSet, cfg: GeneratorTrainConfig, out, cache_root, data_key: str,
              use_cache: bool = True):
        p = stage_params(cfg.gan, int(train.images.shape[1]))
        res = {}
        for c, name in enumerate(train.class_names):
            res[f"gan/{name}"] = run_stage(
                "gan", p, train={"image": to_unit(train.images[train.labels == c])}, val=None,
                fixed={"z": _seeded_z(16, p["z_dim"], 1234)}, label=f"gan-{name}",
                data_key=f"{data_key}:{name}", cache_root=cache_root, run_cfg=cfg.run, use_cache=use_cache,
            )  # fmt: skip
        meta = {
            "generator": "gan",
            "classes": list(train.class_names),
            "size": int(train.images.shape[1]),
            "data_key": data_key,
            "gans": {n: {"kwargs": res[f"gan/{n}"].meta["generator_kwargs"]} for n in train.class_names},
        }
        states = {f"gan_{n}": res[f"gan/{n}"].generator_state() for n in train.class_names}
        grids = {f"grids/gan_{n}": res[f"gan/{n}"].grids() for n in train.class_names}
        return write_bundle(out, meta, states, grids), res

    @classmethod
    def load(cls, path) -> "VanillaGAN":
        meta, path = read_bundle(path)
        return cls(load_per_class(path, meta["gans"], VanillaGenerator, "gan_"), meta)

    @torch.no_grad()
    def sample(self, n: int, cls: str, seed: int = 0, batch: int = 64) -> tuple[np.ndarray, None]:
        from ..errors import CytorayError

        if cls not in self.gens:
            raise CytorayError(f"class '{cls}' not in this generator (classes: {', '.join(self.classes)})")
        g = torch.Generator().manual_seed(seed)
        out = []
        for start in range(0, n, batch):
            z = torch.randn(min(batch, n - start), self.gens[cls].z_dim, generator=g)
            out.append(from_unit(self.gens[cls](z)))
        return np.concatenate(out), None
