"""CycleGAN (Zhu et al. 2017) for histology → cytology translation (Dey et al., "Could we
generate cytology images from histopathology images?").

G: histology (A) → cytology (B), F: cytology → histology, two PatchGAN discriminators
(D_A judges histology, D_B judges cytology). Losses: least-squares (default) or BCE
adversarial terms, cycle consistency λ_cyc·(|F(G(a)) − a|₁ + |G(F(b)) − b|₁) and the identity
term λ_id·λ_cyc·(|G(b) − b|₁ + |F(a) − a|₁) (CycleGAN's convention: λ_id is relative to λ_cyc).

Class-aware: one CycleGAN per class (benign histology → benign cytology, malignant →
malignant), so a translated image keeps its source's label; it is only ever trained on
images of that class in both domains. `sample(n, cls, seed)` translates training histology
of class `cls` (stored in the bundle as `sources.npz`) through that class's G.

Unpaired data through the shared loop: the loop indexes every `train` array with the same
batch indices, so both domains are brought to one length (the shorter one is shuffled and
topped up with seeded draws) and B is additionally shuffled inside each batch: every image
of both domains is used every epoch and no a–b pairing is fixed.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..bundle import load_arrays, load_per_class, npz_bytes, read_bundle
from ..errors import ConfigError
from ..nets import PatchDiscriminator, ResnetGenerator, UNet, min_input_size, unet_depth
from ..nets.images import from_unit, to_unit
from ..training.stage import StageSpec, extend, to_uint8_grid, unwrap
from .base import Generator, GeneratorConfig
from .domains import DomainPair, align_unpaired, check_domains
from .history import HistoryBuffer
from .losses import bce
from .small_data import SmallData, SmallDataStage, optimizer_steps
from .small_data import augment_d_input as _aug

SOURCES_FILE = "sources.npz"


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass
class CycleGANConfig(SmallData, GeneratorConfig):
    """One class's CycleGAN (keys and reasons: configs/models/cyclegan.yaml), with the small-data
    settings (small_data.py) off by default: unmeasured on real histology→cytology pairs yet."""

    name: str = "cyclegan"
    # D_A's and D_B's inputs augmented (e.g. translation,cutout,dihedral); "" = none (CycleGAN)
    diffaug: str = ""
    ema: float = 0.0  # moving average of G (A→B), sampled and kept; 0 = the last weights (CycleGAN)
    ada: float = 0.0  # adaptive augmentation is not wired into CycleGAN's two Ds (0 only)
    epochs: int = 40  # paper scale: 200 (100 constant + 100 decay); 40 fits the CPU budget
    batch_size: int = 4  # CycleGAN uses 1; 4 gives 12 steps an epoch on 45 images per class
    lr: float = 2e-4  # CycleGAN Adam learning rate (G/F and D_A/D_B)
    beta1: float = 0.5  # CycleGAN Adam beta1
    # linear lr decay over this last fraction of the epochs (CycleGAN: half)
    decay_fraction: float = 0.5
    # least-squares adversarial loss (CycleGAN default) or BCE
    gan_mode: Literal["lsgan", "bce"] = "lsgan"
    lambda_cyc: float = 10.0  # λ_cyc, cycle-consistency weight (CycleGAN: 10)
    lambda_identity: float = 0.5  # identity weight relative to λ_cyc (CycleGAN: 0.5); 0 disables it
    pool_size: int = 50  # history of generated images shown to D (Shrivastava et al.; CycleGAN: 50)
    arch: Literal["resnet", "unet"] = "resnet"  # CycleGAN's ResNet-block G, or the pix2pix UNet
    g_base: int = 16  # generator width (CycleGAN ngf 64; 16 for CPU budgets)
    n_blocks: int = 6  # residual blocks (CycleGAN: 6 at 128 px, 9 at 256 px)
    d_base: int = 16  # PatchGAN width (CycleGAN ndf 64)
    d_layers: int = 3  # 70x70 PatchGAN (needs >= 24 px inputs)
    norm: Literal["instance", "batch"] = "instance"  # CycleGAN default

    def validate(self) -> None:
        for k in ("epochs", "batch_size", "lr", "g_base", "d_base", "d_layers"):
            if getattr(self, k) <= 0:
                raise ConfigError(f"cyclegan.{k}={getattr(self, k)}: must be > 0")
        if self.batch_size < 2:
            raise ConfigError(
                f"cyclegan.batch_size={self.batch_size}: the "
                "shared loop skips batches under 2 images"
            )
        if self.lambda_cyc < 0 or self.lambda_identity < 0 or self.pool_size < 0:
            raise ConfigError("cyclegan.lambda_cyc, lambda_identity and pool_size must be >= 0")
        if not 0.0 <= self.decay_fraction <= 1.0:
            raise ConfigError(f"cyclegan.decay_fraction={self.decay_fraction}: must lie in [0, 1]")
        self.validate_small_data("cyclegan.")
        if self.ada > 0:
            raise ConfigError(
                "cyclegan.ada: adaptive augmentation is not wired into CycleGAN's two "
                "discriminators; use a fixed policy (cyclegan.diffaug) with ada: 0"
            )


@dataclasses.dataclass
class CycleGANParams(CycleGANConfig):
    """One class's CycleGAN stage settings: `cyclegan.*` and what the data decides."""

    size: int = 64  # image side (px)
    n_train: int = 1  # training pairs per epoch (the lr schedule counts epochs in optimiser steps)


# ----------------------------------------------------------------------------- pieces


def lr_factor(epoch: int, epochs: int, decay_fraction: float) -> float:
    """CycleGAN's linear decay (its `lambda_rule`, 0-based epochs): 1 for the first epochs, then
    falling linearly over the last `round(epochs·decay_fraction)` epochs, never reaching 0."""
    n_decay = round(epochs * decay_fraction)
    return 1.0 - max(0, epoch + 1 - (epochs - n_decay)) / (n_decay + 1)


def loop_steps_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    """Steps each rank takes per epoch in the training loop (an equal shard of n // world images,
    batches of >= 2 images)."""
    m = n // world
    return m // batch_size + (1 if m % batch_size >= 2 else 0)


class PooledDiscriminator(nn.Module):
    """A PatchGAN with its image pool attached (the pool rides along in its state dict)."""

    def __init__(self, pool_size: int, size: int, **d_kwargs) -> None:
        super().__init__()
        self.net = PatchDiscriminator(in_ch=3, **d_kwargs)
        self.pool = HistoryBuffer(pool_size, (3, size, size), "swap")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_translator(arch: str, base: int, n_blocks: int, norm: str, size: int) -> nn.Module:
    """G or F: image → image in [-1, 1]."""
    if arch == "resnet":
        return ResnetGenerator(in_ch=3, out_ch=3, base=base, n_blocks=n_blocks, norm=norm)
    if arch == "unet":  # no dropout: CycleGAN's generators are deterministic
        return UNet(in_ch=3, out_ch=3, base=base, depth=unet_depth(size), norm=norm, dropout=0.0)
    raise ValueError(f"arch must be 'resnet' or 'unet', got {arch!r}")


def _adv(pred: torch.Tensor, real: bool, mode: str) -> torch.Tensor:
    target = 1.0 if real else 0.0
    if mode == "lsgan":
        return F.mse_loss(pred.float(), torch.full_like(pred.float(), target))
    return bce(pred, target)


# ----------------------------------------------------------------------------- stage


class CycleGANStage(SmallDataStage):
    """One class's CycleGAN. Batches hold "A" (histology) and "B" (cytology), [-1, 1]. With the
    small-data settings, both Ds see augmented inputs (real and fake alike), G's average is kept."""

    kind, Params = "cyclegan", CycleGANParams

    def meta(self):
        return {"generator_kwargs": self.generator_kwargs()}

    def progress(self, metrics):
        return " ".join(
            f"{k} {metrics[k]:.4f}" for k in ("loss_d", "loss_g", "cycle") if k in metrics
        )

    def generator_kwargs(self) -> dict:
        c = self.cfg
        return dict(arch=c.arch, base=c.g_base, n_blocks=c.n_blocks, norm=c.norm, size=c.size)

    def build(self, device):
        c = self.cfg
        d_kw = dict(base=c.d_base, n_layers=c.d_layers, norm=c.norm)
        g = make_translator(**self.generator_kwargs()).to(device)
        return {
            "G": g,
            "F": make_translator(**self.generator_kwargs()).to(device),
            "D_A": PooledDiscriminator(c.pool_size, c.size, **d_kw).to(device),
            "D_B": PooledDiscriminator(c.pool_size, c.size, **d_kw).to(device),
            **self.small_data_models(g, device),
        }

    def optimizers(self, models):
        c, betas = self.cfg, (self.cfg.beta1, 0.999)
        g = itertools.chain(models["G"].parameters(), models["F"].parameters())
        d = itertools.chain(models["D_A"].parameters(), models["D_B"].parameters())
        return {
            "G": torch.optim.Adam(g, lr=c.lr, betas=betas),
            "D": torch.optim.Adam(d, lr=c.lr, betas=betas),
        }

    def _set_lr(self, opts) -> float:
        """lr for this step from Adam's own step count: it is in the optimiser state the loop
        checkpoints, so a resumed run continues the schedule exactly (no LambdaLR to save)."""
        c = self.cfg
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        epoch = optimizer_steps(opts["G"]) // max(
            1, loop_steps_per_epoch(c.n_train, c.batch_size, world)
        )
        lr = c.lr * lr_factor(epoch, c.epochs, c.decay_fraction)
        for o in opts.values():
            for group in o.param_groups:
                group["lr"] = lr
        return lr

    def train_step(self, models, opts, batch, gen, amp):
        G, Fn, D_A, D_B, c = models["G"], models["F"], models["D_A"], models["D_B"], self.cfg
        a = batch["A"]
        b = batch["B"][
            torch.randperm(len(batch["B"]), generator=gen).to(a.device)
        ]  # no fixed a–b pairing
        lr = self._set_lr(opts)
        # 1. Generators: fool both Ds, close both cycles, (optionally) leave in-domain images alone.
        #    D's grads from this backward are discarded by the D step's zero_grad (no requires_grad
        #    toggling, which DDP would not tolerate).
        with amp():
            fake_b, fake_a = G(a), Fn(b)
            rec_a, rec_b = Fn(fake_b), G(fake_a)
            adv = _adv(D_B(_aug(models, fake_b, gen)), True, c.gan_mode) + _adv(
                D_A(_aug(models, fake_a, gen)), True, c.gan_mode
            )
            cyc = F.l1_loss(rec_a.float(), a.float()) + F.l1_loss(rec_b.float(), b.float())
            idt = torch.zeros((), device=a.device)
            if c.lambda_identity > 0:
                idt = F.l1_loss(G(b).float(), b.float()) + F.l1_loss(Fn(a).float(), a.float())
        loss_g = adv + c.lambda_cyc * cyc + c.lambda_cyc * c.lambda_identity * idt
        opts["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        opts["G"].step()
        self.after_g_step(models, opts)
        # 2. Discriminators: real against pooled fakes, halved (CycleGAN) so D learns slower than G.
        pool_b = unwrap(D_B).pool.query(fake_b.detach(), gen)
        pool_a = unwrap(D_A).pool.query(fake_a.detach(), gen)
        with amp():
            loss_d_b = 0.5 * (
                _adv(D_B(_aug(models, b, gen)), True, c.gan_mode)
                + _adv(D_B(_aug(models, pool_b, gen)), False, c.gan_mode)
            )
            loss_d_a = 0.5 * (
                _adv(D_A(_aug(models, a, gen)), True, c.gan_mode)
                + _adv(D_A(_aug(models, pool_a, gen)), False, c.gan_mode)
            )
        loss_d = loss_d_a + loss_d_b
        opts["D"].zero_grad(set_to_none=True)
        loss_d.backward()
        opts["D"].step()
        return {
            "loss_g": loss_g.item(),
            "loss_d": loss_d.item(),
            "loss_g_adv": adv.item(),
            "cycle": cyc.item(),
            "identity": idt.item(),
            "lr": lr,
        }

    @torch.no_grad()
    def grid(self, models, fixed):
        G, Fn = self.sampler(models), models["F"]
        G.eval(), Fn.eval()
        try:
            fake_b = G(fixed["A"])
            rows = [fixed["A"], fake_b, Fn(fake_b), fixed["B"], Fn(fixed["B"])]
        finally:
            G.train("G_ema" not in models), Fn.train()
        # rows: histology | G(histology) | F(G(histology)) | cytology | F(cytology)
        return to_uint8_grid(torch.cat(rows), nrow=len(fixed["A"]))


def stage_params(cfg: CycleGANConfig, size: int, n_train: int) -> dict:
    return {**dataclasses.asdict(cfg), "size": size, "n_train": n_train}


# ----------------------------------------------------------------------------- generator


class CycleGAN(Generator):
    """Per-class G: histology → cytology, with the class's training histology to sample from."""

    name, Config, consumes = "cyclegan", CycleGANConfig, "domains"

    def __init__(
        self, gens: dict[str, nn.Module], sources: dict[str, np.ndarray], meta: dict
    ) -> None:
        self.gens, self.sources, self.meta = {k: g.eval() for k, g in gens.items()}, sources, meta
        self.classes = list(meta["classes"])

    @classmethod
    def check(cls, train: DomainPair, val: DomainPair, cfg: CycleGANConfig) -> None:
        check_domains(train.source, train.target, 2)
        size = int(train.source.images.shape[1])
        if size % 4:
            raise ConfigError(
                f"data size {size}: must be divisible by 4 (two stride-2 levels in G)"
            )
        if size < min_input_size(cfg.d_layers):
            raise ConfigError(
                f"data size {size}: cyclegan.d_layers={cfg.d_layers} needs "
                f">= {min_input_size(cfg.d_layers)} px; use fewer layers"
            )

    @classmethod
    def stages(
        cls, train: DomainPair, val: DomainPair, cfg: CycleGANConfig, data_key: str, seed: int
    ) -> list[StageSpec]:
        size = int(train.source.images.shape[1])
        specs = []
        for c, name in enumerate(train.source.class_names):
            a, b = align_unpaired(
                train.source.images[train.source.labels == c],
                train.target.images[train.target.labels == c],
                seed + c,
            )
            va = val.source.images[val.source.labels == c][:8]
            vb = val.target.images[val.target.labels == c][: len(va)]
            k = min(len(va), len(vb))
            print(
                f"[cyclegan] {name}: {len(a)} images per domain per epoch (unpaired)",
                file=sys.stderr,
                flush=True,
            )
            specs.append(
                StageSpec(
                    f"cyclegan/{name}",
                    CycleGANStage(extend(cfg, CycleGANParams, size=size, n_train=len(a))),
                    train={"A": to_unit(a), "B": to_unit(b)},
                    val=None,
                    fixed={"A": to_unit(va[:k]), "B": to_unit(vb[:k])},
                    data_key=f"{data_key}:{name}",
                    seed=seed,
                )
            )
        return specs

    @classmethod
    def assemble(cls, train: DomainPair, cfg: CycleGANConfig, results: dict, data_key: str):
        names = train.source.class_names
        sources = {n: train.source.images[train.source.labels == c] for c, n in enumerate(names)}
        meta = {
            "classes": list(names),
            "size": int(train.source.images.shape[1]),
            "direction": "histology→cytology",
            "translators": {
                n: {"kwargs": results[f"cyclegan/{n}"].meta["generator_kwargs"]} for n in names
            },
            "sources": SOURCES_FILE,
        }
        states = {f"G_{n}": results[f"cyclegan/{n}"].best_state() for n in names}
        return meta, states, {SOURCES_FILE: npz_bytes(**sources)}

    @classmethod
    def load(cls, path) -> CycleGAN:
        meta, path = read_bundle(path)
        gens = load_per_class(path, meta["translators"], make_translator, "G_")
        with load_arrays(path / meta["sources"]) as z:
            sources = {n: z[n] for n in meta["classes"]}
        return cls(gens, sources, meta)

    @torch.no_grad()
    def translate(self, images: np.ndarray, cls: str, seed: int = 0, batch: int = 32) -> np.ndarray:
        """uint8 histology [n,S,S,3] of class `cls` → uint8 synthetic cytology through that class's G
        (deterministic: `seed` is there for the translators' common signature)."""
        self.check_class(cls)
        out = [
            from_unit(self.gens[cls](torch.from_numpy(to_unit(images[i : i + batch]))))
            for i in range(0, len(images), batch)
        ]
        return np.concatenate(out) if out else np.zeros((0, *images.shape[1:]), np.uint8)

    def display_name(self) -> str:
        return "CycleGAN G(histology)"

    def sample(self, n: int, cls: str, seed: int = 0, batch: int = 32) -> tuple[np.ndarray, None]:
        """n synthetic cytology images of class `cls`: its training histology (drawn with
        replacement, seeded) through G; labelled with the source's class."""
        self.check_class(cls)
        idx = np.random.default_rng(seed).integers(0, len(self.sources[cls]), n)
        return self.translate(self.sources[cls][idx], cls, batch=batch), None
