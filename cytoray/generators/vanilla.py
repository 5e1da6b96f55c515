"""The end-to-end control (SynCGAN Tab. 3 "GAN"): one z → RGB GAN per class, same G/D family
and the same stabilisers (label smoothing, flipping) as the mask GANs. The smallest complete
generator: a config, one stage per class, a bundle, a sampler."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..bundle import load_per_class, read_bundle
from ..data.folder import ImageSet
from ..nets import VanillaGenerator
from ..nets.images import from_unit, to_unit
from ..training.stage import StageSpec
from .base import Generator, GeneratorConfig
from .gan import LatentGANConfig, LatentGANParams, VanillaGANStage, seeded_z


@dataclasses.dataclass
class GANConfig(LatentGANConfig, GeneratorConfig):
    """The control's settings: a latent GAN's keys (configs/models/gan.yaml)."""

    name: str = "gan"
    z_dim: int = 128  # RGB images need a larger latent than masks


class VanillaGAN(Generator):
    name, Config = "gan", GANConfig

    def __init__(self, gens: dict[str, VanillaGenerator], meta: dict) -> None:
        self.gens, self.meta, self.classes = (
            {k: g.eval() for k, g in gens.items()},
            meta,
            list(meta["classes"]),
        )

    @classmethod
    def stages(
        cls, train: ImageSet, val: ImageSet, cfg: GANConfig, data_key: str, seed: int
    ) -> list[StageSpec]:
        # the latent-GAN keys of the generator's config (not its name or other sections)
        latent = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(LatentGANConfig)}
        p = LatentGANParams(**latent, size=int(train.images.shape[1]))
        return [
            StageSpec(
                f"gan/{name}",
                VanillaGANStage(p),
                train={"image": to_unit(train.images[train.labels == c])},
                val=None,
                fixed={"z": seeded_z(16, cfg.z_dim, 1234)},
                data_key=f"{data_key}:{name}",
                seed=seed,
            )
            for c, name in enumerate(train.class_names)
        ]

    @classmethod
    def assemble(cls, train: ImageSet, cfg: GANConfig, results: dict, data_key: str):
        names = train.class_names
        meta = {
            "classes": list(names),
            "size": int(train.images.shape[1]),
            "gans": {n: {"kwargs": results[f"gan/{n}"].meta["generator_kwargs"]} for n in names},
        }
        return meta, {f"gan_{n}": results[f"gan/{n}"].best_state() for n in names}, {}

    @classmethod
    def load(cls, path) -> VanillaGAN:
        meta, path = read_bundle(path)
        return cls(load_per_class(path, meta["gans"], VanillaGenerator, "gan_"), meta)

    @torch.no_grad()
    def sample(self, n: int, cls: str, seed: int = 0, batch: int = 64) -> tuple[np.ndarray, None]:
        self.check_class(cls)
        g = torch.Generator().manual_seed(seed)
        out = []
        for start in range(0, n, batch):
            z = torch.randn(min(batch, n - start), self.gens[cls].z_dim, generator=g)
            out.append(from_unit(self.gens[cls](z)))
        return np.concatenate(out), None
