"""The refined-simulation trainer (Hou et al., CVPR 2019) as ONE stage of the one loop.

Models: R (style-conditioned refiner), D (style-conditioned PatchGAN with SimGAN's history
buffer of refined images), S (U-Net nucleus segmenter). The paper's staged schedule is a
sequence of epoch phases inside the stage (`schedule.*_epochs`, in this order):

    refiner        R alone on the self-regularisation loss (SimGAN's warm start towards identity)
    discriminator  D learns real vs refined; S starts learning on refined images
    joint          R step(s): realism + self-regularisation − hard_weight · S's loss (hard
                   examples); D step on that batch (and the history); S step on it, weighted
                   by w = p/(1−p)
    segmenter      R and D frozen; S trains on freshly refined images, weighted

Losses on R are per-image sums over pixels (the scale the published weights 0.001 / 0.01 /
1e-7 were set at), averaged over the batch; the adversarial term is the mean BCE over the
patch logits. S's own loss is per-pixel BCE + soft Dice, per example, with self-normalised
weights Σ wᵢLᵢ / Σ wᵢ. The best epoch (the stage's product: R and S) has the highest
validation Dice among the epochs where S trains; the loop learns the epoch from `order()`,
which it calls at the start of every epoch, a resumed one included.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.refsim import SynthesisConfig
from ..errors import ConfigError
from ..masks.nucleus_net import REFINED_SIM
from ..nets import UNet
from ..nets.images import pad_to, to_unit
from ..nets.patchgan import min_input_size
from ..nets.refiner import Refiner, StyleDiscriminator
from ..training.stage import Stage, adam, to_uint8_grid, unwrap
from .base import GeneratorConfig
from .history import HistoryBuffer
from .losses import bce
from .small_data import Augmenter, SmallData, augment_d_input

PHASES = ("refiner", "discriminator", "joint", "segmenter")


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass
class RefinerConfig(SmallData):
    # D's real and refined crops augmented alike (small_data.py,
    # e.g. translation,cutout); "" = none (Hou et al.)
    diffaug: str = ""
    ema: float = 0.0  # a moving average of R is not wired into the refined-sim bundle yet (0 only)
    ada: float = 0.0  # adaptive augmentation is not wired into the refined-sim stage (0 only)
    enabled: bool = True  # false: S trains on the initial images (the "raw simulation" ablation)
    width: int = 16  # trunk channels (Hou et al.: 32; 16 keeps a CPU trial to minutes, 32 on a GPU)
    blocks: int = 5  # Hou et al.: 5 residual blocks
    style_dim: int = 8  # style vector tiled into R and D; 0 = no style reference
    style_base: int = 16  # style encoder width: pooled colour/texture statistics need little
    lr: float = 1e-3  # R learning rate (SimGAN: 0.001); a few hundred steps on CPU must move R
    d_lr: float = 1e-3  # D learning rate (SimGAN: 0.001)
    beta1: float = 0.5  # GANs dislike 0.9 momentum
    # Hou et al.: L1 self-regularisation to the input (per-image pixel sum)
    l1_weight: float = 0.001
    l2_weight: float = 0.01  # Hou et al.: L2 self-regularisation to the input (per-image pixel sum)
    # Hou et al.: weight of −S's loss in R's loss (hard examples); searched
    hard_weight: float = 1e-7
    history: int = 256  # SimGAN history buffer of refined images shown to D
    history_fraction: float = 0.5  # SimGAN: half of D's fake batch comes from the history
    d_base: int = 16  # discriminator width (small: D must not win outright on tiny sets)
    d_layers: int = 2  # 34 px receptive field: local realism (SimGAN), about one 32 px patch

    def validate(self) -> None:
        for k in ("width", "blocks", "lr", "d_lr", "d_base", "d_layers", "style_base"):
            if getattr(self, k) <= 0:
                raise ConfigError(f"refiner.{k}={getattr(self, k)}: must be > 0")
        for k in ("style_dim", "l1_weight", "l2_weight", "hard_weight", "history"):
            if getattr(self, k) < 0:
                raise ConfigError(f"refiner.{k}={getattr(self, k)}: must be >= 0")
        if not 0 <= self.history_fraction <= 1:
            raise ConfigError(
                f"refiner.history_fraction={self.history_fraction}: must lie in [0, 1]"
            )
        self.validate_small_data("refiner.")
        if "colour" in self.diffaug or "color" in self.diffaug:
            raise ConfigError(
                f"refiner.diffaug={self.diffaug!r}: no colour op: matching the "
                "reference's colour is R's job (translation, cutout, dihedral are fine)"
            )
        for key in ("ema", "ada", "r1"):
            if getattr(self, key) != 0:
                raise ConfigError(
                    f"refiner.{key}={getattr(self, key)}: not wired into "
                    "the refined-sim stage yet; use 0 (refiner.diffaug is)"
                )


@dataclasses.dataclass
class SegmenterConfig:
    base: int = 16  # U-Net width (CPU budget; nuclei are simple shapes)
    depth: int = 3  # stride-2 levels: 32 px patches → 4 px innermost, a few nuclei of context
    lr: float = 1e-3  # Adam learning rate (a supervised net on exact masks)
    dice_weight: float = 1.0  # soft-Dice term beside pixel BCE: nuclei cover ~15% of a tile
    # weight each refined image by w = p/(1−p), p = D's "real" probability
    example_weights: bool = True
    # Hou et al.: w clipped below at 0.2 (an unrealistic image still teaches a little); searched
    weight_min: float = 0.2
    # Hou et al.: w clipped above at 2 (no single image dominates a batch); searched
    weight_max: float = 2.0
    threshold: float = 0.5  # sigmoid probability above which a pixel is nucleus

    def validate(self) -> None:
        if self.base <= 0 or self.depth < 1 or self.lr <= 0 or self.dice_weight < 0:
            raise ConfigError("segmenter.base, depth and lr must be > 0 and dice_weight >= 0")
        if not 0 < self.weight_min <= self.weight_max:
            raise ConfigError(
                f"segmenter.weight_min={self.weight_min}, "
                f"weight_max={self.weight_max}: need 0 < weight_min <= weight_max"
            )
        if not 0 < self.threshold < 1:
            raise ConfigError(f"segmenter.threshold={self.threshold}: must lie in (0, 1)")


@dataclasses.dataclass
class ScheduleConfig:
    # R alone on self-regularisation; R starts as the identity, so 0 suffices
    refiner_epochs: int = 0
    discriminator_epochs: int = 1  # D warm-up against the (near-identity) refiner, as SimGAN
    joint_epochs: int = 6  # alternating R (+ hard examples) / D / S steps: where refinement happens
    # S alone on images from the frozen R; the best epoch is chosen here or in joint
    segmenter_epochs: int = 4
    # R steps per D step in the joint phase (SimGAN: 2 on its data; 1 keeps D ahead here)
    r_steps: int = 1

    def validate(self) -> None:
        if (
            min(
                self.refiner_epochs,
                self.discriminator_epochs,
                self.joint_epochs,
                self.segmenter_epochs,
            )
            < 0
        ):
            raise ConfigError("schedule.*_epochs must be >= 0")
        if self.joint_epochs + self.segmenter_epochs + self.discriminator_epochs < 1:
            raise ConfigError(
                "schedule: the segmenter needs at least one discriminator, joint or segmenter epoch"
            )
        if self.r_steps < 1:
            raise ConfigError(f"schedule.r_steps={self.r_steps}: must be >= 1")


@dataclasses.dataclass
class RefinedSimConfig(GeneratorConfig):
    """Refined simulation's settings (keys and reasons: configs/models/refined-sim.yaml)."""

    name: str = REFINED_SIM
    # training crop side (px): CPU-sized (64-128 on a GPU); R, D and S are fully convolutional
    patch: int = 32
    pool: int = 256  # initial images (and real crops) per epoch; refined afresh every step
    holdout: int = 32  # held-out initial images for validation (Dice, D accuracy)
    batch_size: int = 8  # 32 steps an epoch at pool 256: GANs need steps more than batch size
    synthesis: SynthesisConfig = dataclasses.field(default_factory=SynthesisConfig)
    refiner: RefinerConfig = dataclasses.field(default_factory=RefinerConfig)
    segmenter: SegmenterConfig = dataclasses.field(default_factory=SegmenterConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)

    def validate(self) -> None:
        if self.patch < 16 or self.patch % 2**self.segmenter.depth:
            raise ConfigError(
                f"patch={self.patch}: must be >= 16 and divisible "
                f"by 2**segmenter.depth={2**self.segmenter.depth}"
            )
        if self.patch < min_input_size(self.refiner.d_layers):
            raise ConfigError(
                f"patch={self.patch}: refiner.d_layers={self.refiner.d_layers} "
                f"needs >= {min_input_size(self.refiner.d_layers)} px"
            )
        if self.pool < 2 * self.batch_size or self.batch_size < 2 or self.holdout < 2:
            raise ConfigError(
                f"pool={self.pool}, batch_size={self.batch_size}, holdout={self.holdout}: "
                "need batch_size >= 2, pool >= 2 batches and holdout >= 2"
            )


@dataclasses.dataclass
class RefinedSimParams(RefinedSimConfig):
    """The refined-sim stage's settings: the generator's config and the image size."""

    size: int = 64  # image side (px) of the generator's samples


# ----------------------------------------------------------------------------- pieces


def example_weights(p_real: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """w = p/(1−p) from D's "real" probability, clipped to [low, high] (Hou et al.)."""
    p = p_real.clamp(1e-6, 1 - 1e-6)
    return (p / (1 - p)).clamp(low, high)


def soft_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-example soft Dice [B] of sigmoid(logits) against a {0,1} target."""
    p = torch.sigmoid(logits.float())
    inter = (p * target).sum((1, 2, 3))
    return (2 * inter + 1) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)


def seg_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float) -> torch.Tensor:
    """Per-example segmenter loss [B]: mean pixel BCE + dice_weight · (1 − soft Dice)."""
    pix = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none").mean(
        (1, 2, 3)
    )
    return pix + dice_weight * (1 - soft_dice(logits, target))


def hard_dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image Dice [B] of binary maps (both empty → 1, as metrics/segmentation.dice)."""
    p, t = pred.float(), target.float()
    denom = p.sum((1, 2, 3)) + t.sum((1, 2, 3))
    return torch.where(
        denom > 0, 2 * (p * t).sum((1, 2, 3)) / denom.clamp_min(1), torch.ones_like(denom)
    )


class PooledStyleD(nn.Module):
    """The style discriminator with its history buffer attached (the buffer rides in its state)."""

    def __init__(self, history: int, history_fraction: float, patch: int, **kw) -> None:
        super().__init__()
        self.net = StyleDiscriminator(**kw)
        # entries: image ‖ its reference
        self.pool = HistoryBuffer(history, (6, patch, patch), "fraction", history_fraction)

    def forward(self, x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, ref)


# ----------------------------------------------------------------------------- stage


class RefinedSimStage(Stage):
    """Batches: "init" (initial images), "mask" (their exact masks, {0,1}), "real" (real crops),
    "style" (reference crops of the same tile as both), all [B,C,P,P]; images in [-1, 1]."""

    kind, Params = "refined_sim", RefinedSimParams
    ddp_kwargs = {"broadcast_buffers": False}  # D runs on real and fake batches before one backward

    def __init__(self, params: dict | RefinedSimParams) -> None:
        super().__init__(params)
        self.refine = self.cfg.refiner.enabled
        self.keep = ("R", "S") if self.refine else ("S",)
        self._epoch = 0

    # -- schedule ------------------------------------------------------------------
    @property
    def epochs(self) -> int:
        """Every phase's epochs; without a refiner, as many S epochs as the refined variant gives S."""
        return sum(self.phase_epochs(ph) for ph in (PHASES if self.refine else PHASES[1:]))

    def phase_epochs(self, phase: str) -> int:
        return int(getattr(self.cfg.schedule, f"{phase}_epochs"))

    def phase(self, epoch: int) -> str:
        """The schedule phase of an epoch; without a refiner every epoch trains S on initial images."""
        if not self.refine:
            return "segmenter"
        end = 0
        for ph in PHASES:
            end += self.phase_epochs(ph)
            if epoch < end:
                return ph
        return PHASES[-1]

    def order(self, train, epoch, seed):
        self._epoch = epoch  # the loop calls this first in every epoch (also after a resume)
        return super().order(train, epoch, seed)

    # -- models --------------------------------------------------------------------
    def refiner_kwargs(self) -> dict:
        r = self.cfg.refiner
        return dict(width=r.width, blocks=r.blocks, style_dim=r.style_dim, style_base=r.style_base)

    def segmenter_kwargs(self) -> dict:
        s = self.cfg.segmenter
        return dict(
            in_ch=3,
            out_ch=1,
            base=s.base,
            depth=s.depth,
            norm="batch",
            dropout=0.0,
            out_act="none",
        )

    def meta(self):
        return {
            "refiner_kwargs": self.refiner_kwargs(),
            "segmenter_kwargs": self.segmenter_kwargs(),
            "refined": self.refine,
            "phases": {ph: self.phase_epochs(ph) for ph in PHASES},
        }

    def build(self, device):
        models = {"S": UNet(**self.segmenter_kwargs()).to(device)}
        if self.refine:
            r, patch = self.cfg.refiner, self.cfg.patch
            models["R"] = Refiner(**self.refiner_kwargs()).to(device)
            models["D"] = PooledStyleD(
                r.history,
                r.history_fraction,
                patch,
                base=r.d_base,
                n_layers=r.d_layers,
                style_dim=r.style_dim,
                style_base=r.style_base,
            ).to(device)
            if r.diffaug:
                # D's crops, real and refined alike
                models["aug"] = Augmenter(r.diffaug, 0.0, patch).to(device)
        return models

    def optimizers(self, models):
        r, s = self.cfg.refiner, self.cfg.segmenter
        opts = {"S": adam(models["S"], s.lr, 0.9)}
        if self.refine:
            opts.update(R=adam(models["R"], r.lr, r.beta1), D=adam(models["D"], r.d_lr, r.beta1))
        return opts

    # -- training ------------------------------------------------------------------
    def _augment(self, batch: dict, gen: torch.Generator) -> dict:
        """One random flip / quarter turn for the whole batch (image and mask move together)."""
        k, flip = (
            int(torch.randint(4, (), generator=gen)),
            bool(torch.rand((), generator=gen) < 0.5),
        )
        out = {}
        for key, v in batch.items():
            v = torch.flip(v, (3,)) if flip else v
            out[key] = torch.rot90(v, k, (2, 3)) if k else v
        return out

    def _weights(self, D, refined, style) -> torch.Tensor:
        """Per-example weights from D's "real" probability (D in eval mode: no batch-statistics noise)."""
        s = self.cfg.segmenter
        if not (self.refine and s.example_weights):
            return torch.ones(len(refined), device=refined.device)
        was = D.training
        D.eval()
        with torch.no_grad():
            p = torch.sigmoid(D(refined, style).float()).mean((1, 2, 3))
        D.train(was)
        return example_weights(p, s.weight_min, s.weight_max)

    def _reg(self, refined, init) -> torch.Tensor:
        r, d = self.cfg.refiner, (refined.float() - init.float())
        return (r.l1_weight * d.abs().sum((1, 2, 3)) + r.l2_weight * d.pow(2).sum((1, 2, 3))).mean()

    def train_step(self, models, opts, batch, gen, amp):
        b = self._augment(batch, gen)
        init, mask, real, style = b["init"], b["mask"], b["real"], b["style"]
        phase, S, r, s = self.phase(self._epoch), models["S"], self.cfg.refiner, self.cfg.segmenter
        out: dict[str, float] = {}
        R, D = models.get("R"), models.get("D")
        if phase == "refiner":  # 1. R alone towards the identity (self-regularisation only)
            with amp():
                loss_r = self._reg(R(init, style), init)
            opts["R"].zero_grad(set_to_none=True)
            loss_r.backward()
            opts["R"].step()
            return {"loss_reg": loss_r.item()}
        x = init  # what S trains on: the initial images, or refined ones
        if self.refine and phase == "joint":
            # 1. R: look real in the reference's style, stay close to its input (the mask must
            #    still fit), and be hard for S: − hard_weight · S's loss (a per-image pixel sum).
            for _ in range(self.cfg.schedule.r_steps):
                with amp():
                    refined = R(init, style)
                    adv = bce(D(augment_d_input(models, refined, gen), style), 1.0)
                    task = (
                        F.binary_cross_entropy_with_logits(
                            S(refined).float(), mask.float(), reduction="none"
                        )
                        .sum((1, 2, 3))
                        .mean()
                    )
                reg = self._reg(refined, init)
                loss_r = adv + reg - r.hard_weight * task
                opts["R"].zero_grad(set_to_none=True)
                # S's and D's grads from this pass are cleared before their own steps
                loss_r.backward()
                opts["R"].step()
            x = refined.detach()
            out.update(
                loss_g=loss_r.item(), loss_adv=adv.item(), loss_reg=reg.item(), task_sum=task.item()
            )
        elif (
            self.refine
        ):  # discriminator / segmenter phases: R is fixed, so S sees what sample() gives
            R.eval()
            with torch.no_grad(), amp():
                x = R(init, style)
            R.train()
        if self.refine and phase in ("discriminator", "joint"):
            # 2. D: real crops (with their tile's reference) against the refined batch, part of it
            #    from the history buffer; halved so D learns no faster than R.
            fake = unwrap(D).pool.query(torch.cat([x.float(), style.float()], 1), gen)
            with amp():
                d_real = D(augment_d_input(models, real, gen), style)
                d_fake = D(augment_d_input(models, fake[:, :3], gen), fake[:, 3:])
            loss_d = 0.5 * (bce(d_real, 1.0) + bce(d_fake, 0.0))
            opts["D"].zero_grad(set_to_none=True)
            loss_d.backward()
            opts["D"].step()
            out.update(
                loss_d=loss_d.item(),
                d_real=torch.sigmoid(d_real.float()).mean().item(),
                d_fake=torch.sigmoid(d_fake.float()).mean().item(),
            )
        # 3. S on this step's refined images with their exact masks, weighted by realism.
        w = self._weights(D, x, style) if self.refine else torch.ones(len(x), device=x.device)
        with amp():
            per = seg_loss(S(x.detach()), mask, s.dice_weight)
        loss_s = (w * per).sum() / w.sum()
        opts["S"].zero_grad(set_to_none=True)
        loss_s.backward()
        opts["S"].step()
        out.update(loss_s=loss_s.item(), weight_mean=w.mean().item())
        return out

    # -- validation ----------------------------------------------------------------
    @torch.no_grad()
    def segment(self, S: nn.Module, x: torch.Tensor, batch: int = 16) -> torch.Tensor:
        """Binary masks [N,1,H,W] of images [N,3,H,W] in [-1, 1] (padded to the U-Net's stride)."""
        k, thr = 2**self.cfg.segmenter.depth, self.cfg.segmenter.threshold
        outs = []
        for i in range(0, len(x), batch):
            xp, h, w = pad_to(x[i : i + batch], k)
            outs.append(torch.sigmoid(S(xp)[..., :h, :w].float()) > thr)
        return torch.cat(outs)

    @torch.no_grad()
    def validate(self, models, val, amp):
        """Dice of S on real validation tiles (when they have masks) and on held-out refined
        images; D's accuracy at calling real crops real and initial / refined images fake."""
        if not val:
            return None
        S, R, D = models["S"], models.get("R"), models.get("D")
        was = {k: m.training for k, m in models.items()}
        for m in models.values():
            m.eval()
        try:
            with amp():
                refined = R(val["init"], val["style"]) if self.refine else val["init"]
            out = {
                "val_dice_synthetic": hard_dice(
                    self.segment(S, refined.float()), val["init_mask"] > 0.5
                )
                .mean()
                .item()
            }
            if "mask" in val:
                out["val_dice"] = (
                    hard_dice(self.segment(S, val["image"]), val["mask"] > 0.5).mean().item()
                )
            if self.refine:
                with amp():
                    p_real, p_init, p_ref = (
                        torch.sigmoid(D(x, val["style"]).float()).mean((1, 2, 3))
                        for x in (val["real"], val["init"], refined)
                    )
                out.update(
                    d_acc_real=(p_real > 0.5).float().mean().item(),
                    d_acc_initial=(p_init < 0.5).float().mean().item(),
                    d_acc_refined=(p_ref < 0.5).float().mean().item(),
                    refine_l1=(refined - val["init"]).abs().mean().item(),
                )
            return out
        finally:
            for k, m in models.items():
                m.train(was[k])

    def selection(self, metrics, epoch):
        """Highest validation Dice (real tiles when they have masks) among epochs where S trains."""
        key = "val_dice" if "val_dice" in metrics else "val_dice_synthetic"
        if self.phase(epoch) in ("refiner",) or key not in metrics:
            return (1, -epoch)
        return (0, -metrics[key], -epoch)

    def progress(self, metrics):
        keys = (
            "loss_d",
            "loss_g",
            "loss_s",
            "val_dice",
            "val_dice_synthetic",
            "d_acc_initial",
            "d_acc_refined",
        )
        return f"[{self.phase(int(metrics.get('epoch', 0)))}] " + " ".join(
            f"{k} {metrics[k]:.3f}" for k in keys if k in metrics
        )

    @torch.no_grad()
    def grid(self, models, fixed):
        """Rows: initial | refined | exact mask | S's prediction on the refined image."""
        S, R = models["S"], models.get("R")
        was = {k: m.training for k, m in models.items()}
        for m in models.values():
            m.eval()
        try:
            refined = R(fixed["init"], fixed["style"]) if self.refine else fixed["init"]
            pred = self.segment(S, refined.float()).float() * 2 - 1
        finally:
            for k, m in models.items():
                m.train(was[k])
        rows = [
            fixed["init"],
            refined.float(),
            (fixed["mask"] * 2 - 1).repeat(1, 3, 1, 1),
            pred.repeat(1, 3, 1, 1),
        ]
        return to_uint8_grid(torch.cat(rows), nrow=len(fixed["init"]))


def _probe_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(16, 32, 3, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(32, 32, 3, 2, 1),
        nn.LeakyReLU(0.2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 1),
    )


def _fit_probe(
    real: torch.Tensor, fake: torch.Tensor, seed: int, steps: int, batch: int = 32
) -> nn.Module:
    """A fresh small CNN trained to call `real` 1 and `fake` 0 ([-1,1] tensors)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net, x = _probe_net(), torch.cat([real, fake])
    y = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))])
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(steps):
        idx = torch.randint(len(x), (batch,), generator=g)
        loss = F.binary_cross_entropy_with_logits(net(x[idx])[:, 0], y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@torch.no_grad()
def _accuracy(net: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> float:
    return float(torch.cat([net(real)[:, 0] > 0, net(fake)[:, 0] <= 0]).float().mean())


def realism_probe(real: np.ndarray, fake: np.ndarray, seed: int = 0, steps: int = 150) -> float:
    """Held-out accuracy of a fresh small CNN trained to tell `real` from `fake` (uint8 [N,H,W,3],
    same size): trained on the first halves, scored on the second; 0.5 = indistinguishable."""
    n = min(len(real), len(fake)) // 2
    r, f = (torch.from_numpy(to_unit(a)) for a in (real, fake))
    return _accuracy(_fit_probe(r[:n], f[:n], seed, steps), r[n : 2 * n], f[n : 2 * n])


def realism_judge(
    real: np.ndarray, initial: np.ndarray, refined: np.ndarray, seed: int = 0, steps: int = 150
) -> tuple[float, float]:
    """A discriminator trained on real vs INITIAL images (first halves), then scored on held-out
    real vs initial and real vs the refined versions of those held-out initial images: the
    refiner made images more realistic when the second accuracy is lower."""
    n = min(len(real), len(initial)) // 2
    r, i, f = (torch.from_numpy(to_unit(a)) for a in (real, initial, refined))
    net = _fit_probe(r[:n], i[:n], seed, steps)
    return _accuracy(net, r[n : 2 * n], i[n : 2 * n]), _accuracy(net, r[n : 2 * n], f[n : 2 * n])
