"""The GAN pieces SynCGAN and its vanilla-GAN control share: configs, trainer stages, tensors.

- CGAN (SynCGAN §3.3): G = UNet(mask) → RGB; D = PatchGAN on (mask, image) pairs.
- Latent GANs (§3.4): z → mask (one per class) or z → RGB (the control), with the paper's
  stabilisers: label smoothing and label flipping in D updates.

Tensors are in [-1, 1]: images as RGB, masks as -1 (background) / +1 (nucleus).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..nets import MaskGenerator, PatchDiscriminator, UNet, VanillaGenerator, unet_depth
from ..training.stage import Stage, adam, to_uint8_grid
from .augment import dihedral
from .losses import bce, d_targets

AUGMENTS = ("none", "dihedral")  # of the real images a latent GAN learns from (generators/augment.py)

# ----------------------------------------------------------------------------- configs


@dataclasses.dataclass
class CGANConfig:
    """Mask → RGB conditional GAN (SynCGAN §3.3)."""

    epochs: int = 30  # paper: 200 on a GPU; CPU budgets use tens
    batch_size: int = 16  # small sets: 90 training pairs → 6 steps an epoch
    lr: float = 2e-4  # pix2pix Adam learning rate
    beta1: float = 0.5  # pix2pix Adam beta1 (GANs dislike 0.9 momentum)
    lam: float = 100.0  # λ, weight of MSE(G(y), x) against the adversarial term (paper: 100)
    g_base: int = 32  # UNet width at the outermost level (pix2pix: 64)
    d_base: int = 32  # PatchGAN width (pix2pix: 64)
    d_layers: int = 3  # 3 → the 70x70 PatchGAN receptive field
    norm: Literal["batch", "instance"] = "batch"  # pix2pix default
    dropout: float = 0.5  # decoder dropout: pix2pix's noise source in G

    def validate(self) -> None:
        _positive(self, "epochs", "batch_size", "lr", "g_base", "d_base", "d_layers")
        if self.lam < 0:
            raise ConfigError(f"cgan.lam={self.lam}: λ must be >= 0")
        if self.batch_size < 2:
            raise ConfigError(f"cgan.batch_size={self.batch_size}: the loop skips batches under 2 images (BatchNorm); use >= 2")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"cgan.dropout={self.dropout}: a dropout probability in [0, 1)")
        if not 0.0 <= self.beta1 < 1.0:
            raise ConfigError(f"cgan.beta1={self.beta1}: Adam's beta1 lies in [0, 1)")


@dataclasses.dataclass
class LatentGANConfig:
    """z → image GAN with the paper's stabilisers: the class mask GANs and the vanilla RGB control."""

    epochs: int = 60  # paper: ~1600 (until G loss saturates); CPU budgets use tens
    batch_size: int = 16  # per class: 45 training images → 3 steps an epoch
    lr_g: float = 2e-4  # Adam learning rate of G
    lr_d: float = 2e-4  # Adam learning rate of D
    beta1: float = 0.5  # DCGAN/pix2pix beta1
    z_dim: int = 64  # latent size; masks carry little information
    g_base: int = 32  # generator width at full resolution
    d_base: int = 32  # PatchGAN width
    d_layers: int = 3  # 70x70 receptive field
    smooth_real_low: float = 0.9  # real D targets ~ U[smooth_real_low, 1] (paper: 0.9)
    smooth_fake_high: float = 0.1  # fake D targets ~ U[0, smooth_fake_high] (paper: 0.1)
    flip_rate: float = 0.05  # probability a D target is swapped real↔fake (per sample)
    augment: str = "dihedral"  # real images under a random flip/quarter turn (cells have no up); "none": as the paper

    def validate(self) -> None:
        _positive(self, "epochs", "batch_size", "lr_g", "lr_d", "z_dim", "g_base", "d_base", "d_layers")
        if self.augment not in AUGMENTS:
            raise ConfigError(f"augment={self.augment!r}: use one of {', '.join(AUGMENTS)}")
        if not 0.0 <= self.beta1 < 1.0:
            raise ConfigError(f"beta1={self.beta1}: Adam's beta1 lies in [0, 1)")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size={self.batch_size}: the loop skips batches under 2 images (BatchNorm); use >= 2")
        if not 0.0 <= self.smooth_real_low <= 1.0:
            raise ConfigError(f"smooth_real_low={self.smooth_real_low}: must lie in [0, 1]")
        if not 0.0 <= self.smooth_fake_high <= 1.0:
            raise ConfigError(f"smooth_fake_high={self.smooth_fake_high}: must lie in [0, 1]")
        if self.smooth_fake_high >= self.smooth_real_low:
            raise ConfigError(
                f"smooth_fake_high={self.smooth_fake_high} >= smooth_real_low={self.smooth_real_low}: "
                "real and fake target ranges would overlap"
            )
        if not 0.0 <= self.flip_rate < 0.5:
            raise ConfigError(f"flip_rate={self.flip_rate}: must lie in [0, 0.5) (0.5 makes labels meaningless)")


def _positive(obj, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        if v <= 0:
            raise ConfigError(f"{n}={v}: must be > 0")


# ----------------------------------------------------------------------------- tensors


def to_unit(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 [N,H,W,3] → float32 [N,3,H,W] in [-1, 1]."""
    return (images_uint8.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0).copy()


def masks_to_unit(masks: np.ndarray) -> np.ndarray:
    """bool [N,H,W] → float32 [N,1,H,W] in {-1, +1}."""
    return (masks[:, None].astype(np.float32) * 2.0 - 1.0).copy()


def from_unit(x: torch.Tensor) -> np.ndarray:
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def stage_params(cfg_section, size: int) -> dict:
    return {**dataclasses.asdict(cfg_section), "size": size}


def seeded_z(n: int, z_dim: int, seed: int) -> np.ndarray:
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed)).numpy()


# ----------------------------------------------------------------------------- conditional GAN


class CGANStage(Stage):
    """SynCGAN §3.3: G = UNet(mask) → RGB; D = PatchGAN on (mask, image) pairs.

    D loss: BCE(D(y, x), 1) + BCE(D(y, G(y)), 0)           (eq. 2, halved as in pix2pix)
    G loss: BCE(D(y, G(y)), 1) + λ · MSE(G(y), x)           (eq. 3)
    The best epoch has the lowest generator loss on the validation pairs (the paper's criterion).
    """

    kind = "cgan"
    ddp_kwargs = {"broadcast_buffers": False}  # D runs twice per step (real, fake) before backward

    def generator_kwargs(self) -> dict:
        p = self.p
        return dict(in_ch=1, out_ch=3, base=p["g_base"], depth=unet_depth(p["size"]), norm=p["norm"], dropout=p["dropout"])

    def build(self, device):
        p = self.p
        g = UNet(**self.generator_kwargs())
        d = PatchDiscriminator(in_ch=4, base=p["d_base"], n_layers=p["d_layers"], norm=p["norm"])
        return {"G": g.to(device), "D": d.to(device)}

    def optimizers(self, models):
        p = self.p
        return {"G": adam(models["G"], p["lr"], p["beta1"]), "D": adam(models["D"], p["lr"], p["beta1"])}

    def train_step(self, models, opts, batch, gen, amp):
        G, D = models["G"], models["D"]
        y, x = batch["mask"], batch["image"]
        # 1. Discriminator: real (y, x) pairs against (y, G(y)).
        with amp():
            fake = G(y)
            d_real = D(torch.cat([y, x], 1))
            d_fake = D(torch.cat([y, fake.detach()], 1))
        loss_d = 0.5 * (bce(d_real, 1.0) + bce(d_fake, 0.0))
        opts["D"].zero_grad(set_to_none=True)
        loss_d.backward()
        opts["D"].step()
        # 2. Generator: fool D and stay close to the real image (λ·MSE).
        with amp():
            d_fake = D(torch.cat([y, fake], 1))
        adv = bce(d_fake, 1.0)
        mse = F.mse_loss(fake.float(), x.float())
        loss_g = adv + self.p["lam"] * mse
        opts["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        opts["G"].step()
        return {"loss_d": loss_d.item(), "loss_g": loss_g.item(), "loss_g_adv": adv.item(), "mse": mse.item()}

    @torch.no_grad()
    def val_loss(self, models, val, amp):
        """Generator loss on the validation pairs: the paper's checkpoint selection criterion."""
        if not val:
            return None
        G, D = models["G"], models["D"]
        G.eval(), D.eval()
        try:
            with amp():
                fake = G(val["mask"])
                d_fake = D(torch.cat([val["mask"], fake], 1))
            return float(bce(d_fake, 1.0) + self.p["lam"] * F.mse_loss(fake.float(), val["image"].float()))
        finally:
            G.train(), D.train()

    def validate(self, models, val, amp):
        return {"val_loss_g": self.val_loss(models, val, amp)} if val else None

    def selection(self, metrics, epoch):
        return (metrics["val_loss_g"], -epoch) if "val_loss_g" in metrics else (-epoch,)  # ties: the later epoch

    def meta(self):
        return {"generator_kwargs": self.generator_kwargs()}

    @torch.no_grad()
    def grid(self, models, fixed):
        G = models["G"]
        G.eval()
        try:
            fake = G(fixed["mask"])
        finally:
            G.train()
        # rows: mask | generated | real
        return to_uint8_grid(torch.cat([fixed["mask"].repeat(1, 3, 1, 1), fake, fixed["image"]]), nrow=len(fake))


# ----------------------------------------------------------------------------- latent GANs


class LatentGANStage(Stage):
    """z → image GAN with label smoothing and flipping (SynCGAN §3.4, eqs. 4–6)."""

    out_ch = 1
    input_key = "mask"  # which training array the stage learns to generate
    ddp_kwargs = {"broadcast_buffers": False}  # D runs twice per step (real, fake) before backward

    def meta(self):
        return {"generator_kwargs": self.generator_kwargs()}

    def generator_kwargs(self) -> dict:
        p = self.p
        return dict(z_dim=p["z_dim"], out_size=p["size"], base=p["g_base"])

    def _make_g(self) -> nn.Module:
        raise NotImplementedError

    def _g_out(self, G, z):
        return G(z)

    def build(self, device):
        p = self.p
        d = PatchDiscriminator(in_ch=self.out_ch, base=p["d_base"], n_layers=p["d_layers"], norm="batch")
        return {"G": self._make_g().to(device), "D": d.to(device)}

    def optimizers(self, models):
        p = self.p
        return {"G": adam(models["G"], p["lr_g"], p["beta1"]), "D": adam(models["D"], p["lr_d"], p["beta1"])}

    def train_step(self, models, opts, batch, gen, amp):
        G, D, p = models["G"], models["D"], self.p
        real = batch[self.input_key]
        z = torch.randn(real.shape[0], p["z_dim"], generator=gen).to(real.device)
        if p["augment"] == "dihedral":
            real = dihedral(real, gen)
        # 1. Discriminator with smoothed, randomly flipped targets (D updates only).
        with amp():
            fake = self._g_out(G, z)
            d_real = D(real)
            d_fake = D(fake.detach())
        t_real = d_targets(d_real, True, p["smooth_real_low"], p["smooth_fake_high"], p["flip_rate"], gen)
        t_fake = d_targets(d_fake, False, p["smooth_real_low"], p["smooth_fake_high"], p["flip_rate"], gen)
        loss_d = bce(d_real, t_real) + bce(d_fake, t_fake)  # eq. 5
        opts["D"].zero_grad(set_to_none=True)
        loss_d.backward()
        opts["D"].step()
        # 2. Generator: hard target 1 (no smoothing for G, paper §3.4).
        with amp():
            d_fake = D(fake)
        loss_g = bce(d_fake, 1.0)  # eq. 6
        opts["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        opts["G"].step()
        return {"loss_d": loss_d.item(), "loss_g": loss_g.item(), "d_real": torch.sigmoid(d_real).mean().item()}

    @torch.no_grad()
    def grid(self, models, fixed):
        G = models["G"]
        G.eval()
        try:
            out = self._g_out(G, fixed["z"])
        finally:
            G.train()
        return to_uint8_grid(out, nrow=8)


class MaskGANStage(LatentGANStage):
    """One class's mask GAN: z → binary nucleus mask. D sees tanh(logits) against ±1 masks."""

    kind, out_ch, input_key = "mask_gan", 1, "mask"

    def _make_g(self):
        return MaskGenerator(**self.generator_kwargs())

    def _g_out(self, G, z):
        return torch.tanh(G(z))  # soft ±1 so D's gradient reaches G; sampling thresholds at 0


class VanillaGANStage(LatentGANStage):
    """The end-to-end control: z → RGB, same G/D family and stabilisers."""

    kind, out_ch, input_key = "gan", 3, "image"

    def _make_g(self):
        return VanillaGenerator(**self.generator_kwargs())
