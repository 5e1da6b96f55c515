"""A class-conditional diffusion model that draws a cell from its label map (issue 23, part 1).

1. Label maps of the real training/validation images, the ones SynCGAN's mask GANs learn: bool
   nucleus masks (2 labels) or integer maps (glass, cytoplasm, nucleus, padding). The label
   count K is taken from the data (and the mask GANs) and kept in the bundle.
2. The maps sampling draws from (`prior`, map_prior.py), SynCGAN's two priors, so the two
   generators differ only in the map → image step: `bank` (default) warps the class's training
   maps; `gan` trains one mask GAN per class, SynCGAN's own stages taken from `SynCGAN.stages`
   (`mask_gan_specs`), which a SynCGAN run with the same mask settings shares through the stage
   cache. Why not a second (unconditional) diffusion model of the maps: a map is a few blobs,
   and on Herlev the warped training maps are as good as the real maps themselves for the CGAN
   (benchmarks/generators_real_herlev.md), at no training cost.
3. The denoiser: MONAI's `DiffusionModelUNet` (maintained, numpy + torch only, nothing to
   download; MONAI also ships the SPADE variant should concatenation fall short), trained from
   scratch. Its input is the noisy image with the map's K one-hot channels concatenated; the
   class enters as a class embedding, with a null class for classifier-free guidance (the
   class is dropped with probability `cond_drop` in training; `sampling.guidance` mixes the
   conditional and unconditional predictions). Epsilon or v prediction, the noise schedule in
   the config; an EMA copy of the weights is the stage's product (bundle and sampling).
   Training maps and images are flipped / quarter-turned together (cells have no up).
4. `sample(n, cls)` = DDIM(denoiser | map, cls) with `sampling.steps` steps, map = a warped
   training map of the class or mask_gan[cls](z).
All stages train in one Ray Train job on the shared loop (stage cache, checkpoints, resume,
bf16 autocast on CUDA, DDP); the denoiser's grid (map | sample | real) every `run.sample_every`
epochs. On an H200 (bf16 autocast, batch 64, 64 px) it trains at ~900 images/s and draws 180
guided 25-step DDIM samples in 0.6 s; CPU budgets: configs/models/diffusion.yaml.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..bundle import load_per_class, load_state, read_bundle
from ..data.folder import ImageSet
from ..errors import ConfigError
from ..masks.config import MasksConfig
from ..masks.segmenter import pinned
from ..nets import MaskGenerator
from ..nets.images import from_unit, to_unit
from ..training.stage import Stage, StageSpec, amp_context, extend, to_uint8_grid, unwrap
from .augment import dihedral
from .base import Generator, GeneratorConfig
from .gan import LatentGANConfig
from .map_prior import MapPrior, bank, bank_meta, check_prior
from .small_data import ema_decay, ema_update, optimizer_steps
from .syncgan import masks_key

# label maps (glass / cytoplasm / nucleus / padding) where SynCGAN makes them (masks.labels: cell)
try:
    from ..masks.labels import NUCLEUS
    from .syncgan import priors as label_maps
except ImportError:  # a SynCGAN of nucleus masks only
    from .syncgan import nucleus_masks as label_maps

    NUCLEUS = 1

# MONAI's NoiseSchedules
SCHEDULES = (
    "linear_beta",
    "scaled_linear_beta",
    "sigmoid_beta",
    "cosine",
)


@dataclasses.dataclass
class DenoiserConfig:
    """The map → image denoiser and how it trains (keys and reasons: configs/models/diffusion.yaml)."""

    # diffusion needs far more steps than a GAN (CPU budget: configs/models/diffusion.yaml)
    epochs: int = 300
    batch_size: int = 16  # small sets: a few steps an epoch
    lr: float = 2e-4  # Adam learning rate (DDPM: 2e-4)
    # U-Net widths per level (CPU-sized)
    channels: list[int] = dataclasses.field(default_factory=lambda: [16, 32, 64])
    # self-attention per level
    attention: list[bool] = dataclasses.field(default_factory=lambda: [False, False, True])
    res_blocks: int = 1  # residual blocks per level (DDPM: 2; 1 halves the CPU cost)
    norm_groups: int = 8  # GroupNorm groups; must divide every width
    head_channels: int = 16  # channels per attention head
    timesteps: int = 1000  # training noise levels T
    # beta schedule (MONAI): cosine keeps signal at small sizes (Nichol & Dhariwal)
    schedule: str = "cosine"
    # v: stable at high noise with the cosine schedule
    prediction: Literal["epsilon", "v_prediction"] = "v_prediction"
    # chance the class is replaced by the null class in training (classifier-free guidance)
    cond_drop: float = 0.1
    # EMA of the weights (warm-up (1+n)/(10+n) caps it early in short runs)
    ema_decay: float = 0.999
    # image and map under one random flip / quarter turn
    augment: Literal["none", "dihedral"] = "dihedral"
    grid_steps: int = 20  # DDIM steps of the per-epoch grid (conditional, no guidance)

    def validate(self) -> None:
        for k in (
            "epochs",
            "batch_size",
            "lr",
            "res_blocks",
            "norm_groups",
            "head_channels",
            "timesteps",
            "grid_steps",
        ):
            if getattr(self, k) <= 0:
                raise ConfigError(f"denoiser.{k}={getattr(self, k)}: must be > 0")
        if self.batch_size < 2:
            raise ConfigError(
                f"denoiser.batch_size={self.batch_size}: the "
                "loop skips batches under 2 images; use >= 2"
            )
        if not self.channels or len(self.attention) != len(self.channels):
            raise ConfigError(
                f"denoiser.attention has {len(self.attention)} entries "
                f"for {len(self.channels)} channels: give one per level"
            )
        bad = [
            c
            for c, att in zip(self.channels, self.attention)
            if c % self.norm_groups or (att and c % self.head_channels)
        ]
        if bad:
            raise ConfigError(
                f"denoiser.channels {bad}: every width must be a "
                f"multiple of norm_groups={self.norm_groups} (and of "
                f"head_channels={self.head_channels} where attention is on)"
            )
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"denoiser.schedule={self.schedule!r}: use one of {', '.join(SCHEDULES)}"
            )
        if not 0.0 <= self.cond_drop < 1.0:
            raise ConfigError(f"denoiser.cond_drop={self.cond_drop}: a probability in [0, 1)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"denoiser.ema_decay={self.ema_decay}: must lie in [0, 1)")


@dataclasses.dataclass
class DenoiserParams(DenoiserConfig):
    """The denoiser stage's settings: `denoiser.*` and what the data decides."""

    size: int = 64  # image side (px)
    labels: int = 2  # the label map's labels (its one-hot channels join the image's 3)
    classes: int = 2  # image classes (+ 1 null class embedding for guidance)


@dataclasses.dataclass
class SamplingConfig:
    """How a trained bundle draws images: not part of any stage, so changing it retrains nothing."""

    steps: int = 25  # DDIM steps (more: slower and a little sharper)
    # classifier-free guidance scale w (1 = conditional only, one pass a step)
    guidance: float = 2.0
    eta: float = 0.0  # DDIM noise (0: deterministic given the starting noise)
    batch: int = 64  # images denoised together

    def validate(self) -> None:
        if self.steps < 1 or self.batch < 1:
            raise ConfigError("sampling.steps and sampling.batch must be >= 1")
        if self.guidance < 0 or self.eta < 0:
            raise ConfigError("sampling.guidance and sampling.eta must be >= 0")


@dataclasses.dataclass
class DiffusionConfig(GeneratorConfig):
    """The diffusion generator's settings (keys and reasons: configs/models/diffusion.yaml)."""

    name: str = "diffusion"
    masks: MasksConfig = dataclasses.field(default_factory=MasksConfig)
    mask_gan: LatentGANConfig = dataclasses.field(default_factory=LatentGANConfig)
    denoiser: DenoiserConfig = dataclasses.field(default_factory=DenoiserConfig)
    sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
    # sampling's label maps: the class's training maps warped, or the class mask GANs (map_prior.py)
    prior: Literal["gan", "bank"] = "bank"
    # prior bank: the elastic warp's largest shift, a share of the image size (masks/warp.py)
    warp: float = 0.06

    def validate(self) -> None:
        check_prior(self.prior, self.warp)


# ----------------------------------------------------------------------------- label maps


def label_count(labels: np.ndarray) -> int:
    """K of a label map set: 2 for bool masks, else the largest label + 1 (at least 2)."""
    labels = np.asarray(labels)
    return 2 if labels.dtype == bool else max(2, int(labels.max(initial=0)) + 1)


def one_hot(labels: torch.Tensor | np.ndarray, k: int) -> torch.Tensor:
    """bool or integer maps [N,H,W] → float [N,K,H,W] in {-1, +1} (the scale of the images)."""
    t = torch.as_tensor(np.asarray(labels) if isinstance(labels, np.ndarray) else labels).long()
    return F.one_hot(t, k).permute(0, 3, 1, 2).float() * 2 - 1


def mask_gan_specs(
    train: ImageSet, val: ImageSet, cfg: DiffusionConfig, data_key: str, seed: int
) -> list[StageSpec]:
    """SynCGAN's class mask GANs as `SynCGAN.stages` builds them (same labels, params, data keys and
    seeds, whatever SynCGAN's version): identical mask settings share these stages in the cache."""
    from .syncgan import SynCGAN, SynCGANConfig

    specs = SynCGAN.stages(
        train,
        val,
        SynCGANConfig(masks=cfg.masks, mask_gan=cfg.mask_gan, prior="gan"),
        data_key,
        seed,
    )
    return [s for s in specs if s.label.startswith("mask_gan/")]


# ----------------------------------------------------------------------------- the denoiser


def unet_kwargs(c: DenoiserParams) -> dict:
    """MONAI DiffusionModelUNet arguments: image + K map channels in, 3 out, classes + 1 null embedding."""
    return dict(
        spatial_dims=2,
        in_channels=3 + c.labels,
        out_channels=3,
        channels=tuple(c.channels),
        attention_levels=tuple(c.attention),
        num_res_blocks=c.res_blocks,
        norm_num_groups=c.norm_groups,
        num_head_channels=c.head_channels,
        num_class_embeds=c.classes + 1,
    )


def build_unet(kwargs: dict) -> torch.nn.Module:
    from monai.networks.nets import DiffusionModelUNet

    kwargs = {
        **kwargs,
        "channels": tuple(kwargs["channels"]),
        "attention_levels": tuple(kwargs["attention_levels"]),
    }  # JSON lists
    return DiffusionModelUNet(**kwargs)


def schedule_kwargs(c: DenoiserConfig) -> dict:
    return dict(num_train_timesteps=c.timesteps, schedule=c.schedule, prediction_type=c.prediction)


@torch.no_grad()
def ddim_sample(
    unet,
    sched: dict,
    cond: torch.Tensor,
    cls: torch.Tensor,
    null: int,
    steps: int,
    guidance: float,
    eta: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """DDIM from seeded noise, conditioned on the one-hot maps `cond` and classes `cls`; with
    guidance w != 1 each step mixes ε_uncond + w·(ε_cond − ε_uncond) (also for v, which is linear)."""
    from monai.networks.schedulers import DDIMScheduler

    ddim = DDIMScheduler(**sched)
    ddim.set_timesteps(steps)
    dev = cond.device
    x = torch.randn((cond.shape[0], 3, *cond.shape[2:]), generator=gen).to(dev)
    both = torch.cat([cls, torch.full_like(cls, null)])
    for t in ddim.timesteps:
        tt = torch.full((len(x),), int(t), device=dev, dtype=torch.long)
        if guidance == 1.0:
            out = unet(torch.cat([x, cond], 1), tt, class_labels=cls)
        else:
            c, u = (
                unet(torch.cat([x, cond], 1).repeat(2, 1, 1, 1), tt.repeat(2), class_labels=both)
                .float()
                .chunk(2)
            )
            out = u + guidance * (c - u)
        x, _ = ddim.step(out.float(), int(t), x, eta=eta, generator=gen)
    return x.clamp(-1, 1)


class DenoiserStage(Stage):
    """Noise (or v) prediction on (map, image, class) triples, EMA of the weights as the product."""

    kind, keep, Params = "diffusion", "ema", DenoiserParams
    # what sampling needs beside the weights (prior bank: the training maps), a function of the
    # training data, which the stage's data key covers, so it is kept out of the params hash
    sampling_meta: dict = {}
    # the EMA copy never runs forward under DDP: its
    # wrapper only broadcasts rank 0's initial weights

    def build(self, device):
        g, ema = build_unet(unet_kwargs(self.cfg)), build_unet(unet_kwargs(self.cfg))
        # EMA starts at G (DDP needs trainable parameters: ema keeps requires_grad)
        ema.load_state_dict(g.state_dict())
        return {"G": g.to(device), "ema": ema.to(device)}

    def optimizers(self, models):
        return {"G": torch.optim.Adam(models["G"].parameters(), lr=self.cfg.lr)}

    def _schedule(self):
        from monai.networks.schedulers import DDPMScheduler

        if getattr(self, "_ddpm", None) is None:
            self._ddpm = DDPMScheduler(**schedule_kwargs(self.cfg))
        return self._ddpm

    def _loss(self, G, x0, cond, cls, gen, amp, drop: bool):
        c, sched = self.cfg, self._schedule()
        b, dev = x0.shape[0], x0.device
        noise = torch.randn(x0.shape, generator=gen).to(dev)
        t = torch.randint(0, c.timesteps, (b,), generator=gen).to(dev)
        # classifier-free guidance: the null class (index `classes`) for a share of the batch
        if drop:
            cls = torch.where(
                (torch.rand(b, generator=gen) < c.cond_drop).to(dev),
                torch.full_like(cls, c.classes),
                cls,
            )
        xt = sched.add_noise(x0, noise, t)
        target = noise if c.prediction == "epsilon" else sched.get_velocity(x0, noise, t)
        with amp():
            out = G(torch.cat([xt, cond], 1), t, class_labels=cls)
        return F.mse_loss(out.float(), target.float())

    def train_step(self, models, opts, batch, gen, amp):
        G, c = models["G"], self.cfg
        x0, cond = batch["image"], one_hot(batch["labels"], c.labels).to(batch["image"].device)
        if c.augment == "dihedral":  # one symmetry for the image and its map
            both = dihedral(torch.cat([x0, cond], 1), gen)
            x0, cond = both[:, :3], both[:, 3:]
        loss = self._loss(G, x0, cond, batch["cls"], gen, amp, drop=True)
        opt = opts["G"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # the small-data piece's average: decay warmed up by Adam's (checkpointed) step count
        ema_update(unwrap(models["ema"]), G, ema_decay(c.ema_decay, optimizer_steps(opt)))
        return {"loss": loss.detach()}

    @torch.no_grad()
    def validate(self, models, val, amp):
        """The EMA model's denoising loss on the validation triples at fixed noise and levels."""
        if not val:
            return None
        ema = models["ema"]
        ema.eval()
        try:
            gen = torch.Generator().manual_seed(0)
            cond = one_hot(val["labels"], self.cfg.labels).to(val["image"].device)
            return {
                "val_loss": float(
                    self._loss(ema, val["image"], cond, val["cls"], gen, amp, drop=False)
                )
            }
        finally:
            ema.train()

    def progress(self, metrics):
        return " ".join(f"{k} {metrics[k]:.4f}" for k in ("loss", "val_loss") if k in metrics)

    def meta(self):
        return {
            "unet_kwargs": unet_kwargs(self.cfg),
            "schedule": schedule_kwargs(self.cfg),
            **self.sampling_meta,
        }

    @torch.no_grad()
    def grid(self, models, fixed):
        ema, c = models["ema"], self.cfg
        ema.eval()
        try:
            cond = one_hot(fixed["labels"], c.labels).to(fixed["image"].device)
            x = ddim_sample(
                ema,
                schedule_kwargs(c),
                cond,
                fixed["cls"],
                c.classes,
                c.grid_steps,
                1.0,
                0.0,
                torch.Generator().manual_seed(0),
            )
        finally:
            ema.train()
        # labels as grey levels
        shown = (fixed["labels"].float() / (c.labels - 1) * 2 - 1)[:, None]
        # rows: map | sample | real
        return to_uint8_grid(torch.cat([shown.repeat(1, 3, 1, 1), x, fixed["image"]]), nrow=len(x))


# ----------------------------------------------------------------------------- the generator


class Diffusion(Generator):
    name, Config = "diffusion", DiffusionConfig

    def __init__(
        self,
        unet: torch.nn.Module,
        mask_gans: dict[str, MaskGenerator],
        meta: dict,
        sampling: SamplingConfig,
    ) -> None:
        self.unet, self.mask_gans, self.meta = (
            unet.eval(),
            {k: g.eval() for k, g in mask_gans.items()},
            meta,
        )
        self.classes, self.sampling = list(meta["classes"]), sampling
        self.maps = MapPrior(meta, self.mask_gans)

    @classmethod
    def bundle_key(cls, cfg: DiffusionConfig, data_key: str, seed: int) -> str:
        """The config's hash plus what its maps are (a segmenter named by an alias may change)."""
        return super().bundle_key(cfg, f"{data_key}:masks={masks_key(cfg.masks)}", seed)

    @classmethod
    def check(cls, train: ImageSet, val: ImageSet, cfg: DiffusionConfig) -> None:
        size, levels = int(train.images.shape[1]), len(cfg.denoiser.channels)
        if size % 2 ** (levels - 1):
            raise ConfigError(
                f"generator.denoiser.channels: {levels} levels halve {size} px {levels - 1} times; "
                f"use images a multiple of {2 ** (levels - 1)} px or fewer levels"
            )

    @classmethod
    def stages(
        cls, train: ImageSet, val: ImageSet, cfg: DiffusionConfig, data_key: str, seed: int
    ) -> list[StageSpec]:
        specs = mask_gan_specs(train, val, cfg, data_key, seed) if cfg.prior == "gan" else []
        # an alias resolved once: both map sets and their key name one segmenter version
        masks = pinned(cfg.masks)
        m_train, m_val = label_maps(train, masks), label_maps(val, masks)
        mkey = f"{data_key}:masks={masks_key(masks)}"
        # K: the maps' labels, at least as many as the mask
        # GANs draw (a split may lack one, e.g. padding)
        k = max(
            label_count(np.concatenate([m_train.reshape(-1), m_val.reshape(-1)])),
            specs[0].stage.cfg.labels if specs else 0,
        )
        p = extend(
            cfg.denoiser,
            DenoiserParams,
            size=int(train.images.shape[1]),
            labels=k,
            classes=len(train.class_names),
        )
        fixed_idx = np.arange(min(8, len(val)))
        maps = lambda m: np.asarray(m).astype(np.int64)  # noqa: E731
        denoiser = DenoiserStage(p)
        if cfg.prior == "bank":  # the maps sampling warps
            denoiser.sampling_meta = {"bank": bank(train, m_train)}
        specs.append(
            StageSpec(
                "denoiser",
                denoiser,
                train={
                    "image": to_unit(train.images),
                    "labels": maps(m_train),
                    "cls": train.labels.astype(np.int64),
                },
                val={
                    "image": to_unit(val.images),
                    "labels": maps(m_val),
                    "cls": val.labels.astype(np.int64),
                }
                if len(val)
                else None,
                fixed={
                    "image": to_unit(val.images[fixed_idx]),
                    "labels": maps(m_val[fixed_idx]),
                    "cls": val.labels[fixed_idx].astype(np.int64),
                },
                data_key=mkey,
                seed=seed,
            )
        )
        return specs

    @classmethod
    def assemble(cls, train: ImageSet, cfg: DiffusionConfig, results: dict, data_key: str):
        den = results["denoiser"]
        meta = {
            "classes": list(train.class_names),
            "size": int(train.images.shape[1]),
            "labels": den.meta["params"]["labels"],
            "nucleus": 1
            if den.meta["params"]["labels"] == 2
            else NUCLEUS,  # the label `sample` returns as the mask
            "mask_source": cfg.masks.source,
            "denoiser": {"kwargs": den.meta["unet_kwargs"], "schedule": den.meta["schedule"]},
            "sampling": dataclasses.asdict(cfg.sampling),
            "prior": cfg.prior,
        }
        states = {"denoiser": den.best_state()}
        if cfg.prior == "gan":
            meta["mask_gans"] = {
                c: {"kwargs": results[f"mask_gan/{c}"].meta["generator_kwargs"]}
                for c in train.class_names
            }
            states.update(
                {f"mask_gan_{c}": results[f"mask_gan/{c}"].best_state() for c in train.class_names}
            )
        else:  # a denoiser stage cached by a run with the GAN prior holds no bank: the maps again
            meta.update(
                bank_meta(den.meta, train, lambda: label_maps(train, pinned(cfg.masks)), cfg.warp)
            )
        return meta, states, {}

    # -- sampling ---------------------------------------------------------------
    @classmethod
    def load(cls, path) -> Diffusion:
        meta, path = read_bundle(path)
        unet = build_unet(meta["denoiser"]["kwargs"])
        unet.load_state_dict(load_state(path, "denoiser"))
        gans = (
            load_per_class(path, meta["mask_gans"], MaskGenerator, "mask_gan_")
            if meta.get("prior", "gan") == "gan"
            else {}
        )
        return cls(unet, gans, meta, SamplingConfig(**meta["sampling"]))

    @torch.no_grad()
    def sample(self, n: int, cls: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """n synthetic images of class `cls` (uint8 [n,S,S,3]) and their nucleus masks (bool [n,S,S])."""
        self.check_class(cls)
        s, k = self.sampling, int(self.meta["labels"])
        g, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
        idx = torch.tensor(self.classes.index(cls))
        # bf16 where this processor multiplies it in hardware (run.cpu_bf16's "auto")
        amp = amp_context(torch.device("cpu"), True, "auto")
        imgs, masks = [], []
        for start in range(0, n, s.batch):
            b = min(s.batch, n - start)
            labels = torch.as_tensor(self.maps.draw(cls, b, k, g, rng)).long()
            with amp():
                x = ddim_sample(
                    self.unet,
                    self.meta["denoiser"]["schedule"],
                    one_hot(labels, k),
                    idx.repeat(b),
                    len(self.classes),
                    s.steps,
                    s.guidance,
                    s.eta,
                    g,
                )
            imgs.append(from_unit(x.float()))
            masks.append((labels == int(self.meta["nucleus"])).numpy())
        return np.concatenate(imgs), np.concatenate(masks)
