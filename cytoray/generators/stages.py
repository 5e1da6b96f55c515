"""Trainer stages: plain PyTorch step functions that the Ray Train loop runs.

A stage owns its networks, optimisers, one training step, an optional validation loss and a
sample grid. It never touches Ray or MLflow, so it runs the same on 1 CPU, 1 GPU or under DDP.
Tensors are in [-1, 1]: images as RGB, masks as -1 (background) / +1 (nucleus).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..nets import MaskGenerator, PatchDiscriminator, UNet, VanillaGenerator, unet_depth
from . import registrar
from .losses import bce, d_targets

STAGES: dict[str, type["Stage"]] = {}
register_stage = registrar(STAGES)


def get_stage(name: str, params: dict) -> "Stage":
    if name not in STAGES:  # a fresh Ray worker: plugin stages register when their module loads
        from . import _import_builtin

        _import_builtin()
    if name not in STAGES:
        raise KeyError(f"unknown stage '{name}' (valid: {', '.join(sorted(STAGES))})")
    return STAGES[name](params)


def _adam(module: nn.Module, lr: float, beta1: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(module.parameters(), lr=lr, betas=(beta1, 0.999))


def unwrap(m: nn.Module) -> nn.Module:
    """The bare module under a DDP wrapper."""
    return getattr(m, "module", m)


def to_uint8_grid(x: torch.Tensor, nrow: int = 4) -> np.ndarray:
    """[-1,1] tensor [B,C,H,W] → uint8 HxWx3 grid (masks shown grey)."""
    from torchvision.utils import make_grid

    x = x.detach().float().cpu().clamp(-1, 1).add(1).div(2)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    g = make_grid(x, nrow=nrow, padding=2, pad_value=1.0)
    return (g.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


class Stage:
    name = "stage"
    generator_key = "G"

    def __init__(self, params: dict) -> None:
        self.p = params

    def build(self, device: torch.device) -> dict[str, nn.Module]:
        raise NotImplementedError

    def optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def train_step(self, models, opts, batch: dict[str, torch.Tensor], gen: torch.Generator, amp) -> dict[str, float]:
        raise NotImplementedError

    def val_loss(self, models, val: dict[str, torch.Tensor] | None, amp) -> float | None:
        return None

    def grid(self, models, fixed: dict[str, torch.Tensor]) -> np.ndarray:
        raise NotImplementedError

    def generator_kwargs(self) -> dict:
        raise NotImplementedError


# ----------------------------------------------------------------------------- conditional GAN


@register_stage("cgan")
class CGANStage(Stage):
    """SynCGAN §3.3: G = UNet(mask) → RGB; D = PatchGAN on (mask, image) pairs.

    D loss: BCE(D(y, x), 1) + BCE(D(y, G(y)), 0)           (eq. 2, halved as in pix2pix)
    G loss: BCE(D(y, G(y)), 1) + λ · MSE(G(y), x)           (eq. 3)
    """

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
        return {"G": _adam(models["G"], p["lr"], p["beta1"]), "D": _adam(models["D"], p["lr"], p["beta1"])}

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
    data_key = "mask"

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
        return {"G": _adam(models["G"], p["lr_g"], p["beta1"]), "D": _adam(models["D"], p["lr_d"], p["beta1"])}

    def train_step(self, models, opts, batch, gen, amp):
        G, D, p = models["G"], models["D"], self.p
        real = batch[self.data_key]
        z = torch.randn(real.shape[0], p["z_dim"], generator=gen).to(real.device)
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


@register_stage("mask_gan")
class MaskGANStage(LatentGANStage):
    """One class's mask GAN: z → binary nucleus mask. D sees tanh(logits) against ±1 masks."""

    out_ch, data_key = 1, "mask"

    def _make_g(self):
        return MaskGenerator(**self.generator_kwargs())

    def _g_out(self, G, z):
        return torch.tanh(G(z))  # soft ±1 so D's gradient reaches G; sampling thresholds at 0


@register_stage("gan")
class VanillaGANStage(LatentGANStage):
    """The end-to-end control: z → RGB, same G/D family and stabilisers."""

    out_ch, data_key = 3, "image"

    def _make_g(self):
        return VanillaGenerator(**self.generator_kwargs())


def amp_context(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA (no GradScaler needed); plain float32 elsewhere."""
    if enabled and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext
