"""The GAN pieces SynCGAN and its vanilla-GAN control share: configs, trainer stages, tensors.

- CGAN (SynCGAN §3.3): G = UNet(mask) → RGB; D = PatchGAN on (mask, image) pairs.
- Latent GANs (§3.4): z → mask (one per class) or z → RGB (the control), with the paper's
  stabilisers: label smoothing and label flipping in D updates.
- Every one with the small-data pieces (small_data.py): D's inputs augmented (DiffAugment +
  dihedral, ADA as an option), G's weights averaged (EMA: samples and bundles use the average),
  an R1 penalty as an option.

Tensors are in [-1, 1]: images as RGB; a binary nucleus mask as one channel, -1 (background) /
+1 (nucleus); a label map of K labels (masks/labels.py: glass, cytoplasm, nucleus) as
K one-hot channels in {-1, +1}, which the label-map GANs draw through a softmax.
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
from ..training.stage import adam, to_uint8_grid, unwrap
from .augment import dihedral, random_crops
from .losses import bce, d_targets
from .small_data import SmallData, SmallDataStage
from .small_data import augment_d_input as _aug

# of the real images a latent GAN learns from, and of the CGAN's (condition, image) pairs
# (generators/augment.py)
AUGMENTS = (
    "none",
    "dihedral",
)
RECON = ("mse", "l1", "fm")  # the CGAN's reconstruction term: paper, pix2pix, D feature matching
SELECT = ("val_loss", "last", "kid")  # which epoch's weights a CGAN keeps

# ----------------------------------------------------------------------------- configs


@dataclasses.dataclass
class CGANConfig(SmallData):
    """Mask → RGB conditional GAN (SynCGAN §3.3), with the small-data settings of SmallData."""

    epochs: int = 30  # paper: 200 on a GPU; CPU budgets use tens
    batch_size: int = 16  # small sets: 90 training pairs → 6 steps an epoch
    lr: float = 2e-4  # pix2pix Adam learning rate
    anneal: float = 0.0  # last share of the epochs: lr falls linearly to ~0 (pix2pix 0.5)
    beta1: float = 0.5  # pix2pix Adam beta1 (GANs dislike 0.9 momentum)
    # λ, weight of the reconstruction term against the adversarial one (paper: 100 with MSE)
    lam: float = 10.0
    g_base: int = 32  # UNet width at the outermost level (pix2pix: 64)
    d_base: int = 32  # PatchGAN width (pix2pix: 64)
    d_layers: int = 3  # 3 → the 70x70 PatchGAN receptive field
    norm: Literal["batch", "instance"] = "batch"  # pix2pix default
    dropout: float = 0.5  # decoder dropout: pix2pix's noise source in G
    # channels of G's full-resolution path (nets/unet.py);
    # 0 = pix2pix's UNet, as smooth as a x2 down/up
    full_res: int = 32
    # per-pixel noise channels into that path: texture a flat label map does not fix; 0 = none
    noise: int = 1
    # reconstruction term weighted by λ: mse (paper), l1 (pix2pix), fm (D feature matching)
    recon: str = "l1"
    # last: the last (EMA) weights; val_loss: the paper's
    # best epoch by validation G loss (it rewards blur); kid: the lowest KID of its cells
    # against the training cells, scored every `select_every` epochs and at the last
    select: str = "last"
    select_every: int = 5
    # K > 1: the CGAN trained K times from K seeds (stages cgan, cgan/r1, ...), and the one whose
    # kept weights' cells are nearest the training cells by KID (as `select: kid` scores them) is
    # the bundle's: the training seed moves a small set's KID more than any setting does
    restarts: int = 1
    # with label maps: each region painted its colour in the
    # condition (drawn from the class's real cells when sampling)
    colours: bool = True
    # dihedral: each training pair (condition, image) under one random flip/quarter turn, the
    # orientations the bank prior draws maps in; "none": the pairs as they are (paper). On Herlev
    # no gain over 4 training seeds (benchmarks/generators_real_herlev.md), so not the default
    augment: str = "none"
    # a fixed binomial low-pass on G's output (nets/unet.py `Blur`): no texture under ~1.5 px.
    # On Herlev worse over 4 training seeds (benchmarks/generators_real_herlev.md), so off
    out_blur: bool = False
    # D also sees the image's high-pass (nets/patchgan.py): pixel-scale texture apart from colour.
    # On Herlev worse over 4 training seeds, so off
    d_high_pass: bool = False
    # > 0: each training pair is a random crop of this side (the same window of the condition and
    # the image), and G is a UNet deep enough for the crop only: a step costs (crop/size)^2 of a
    # full one, and G, fully convolutional, draws whole images at sampling. On Herlev at 128 px the
    # normal class is further from its real cells (benchmarks/generators_real_herlev.md), so off.
    # A crop at or over the image side trains on whole images
    crop: int = 0

    @property
    def scores_kid(self) -> bool:
        """Whether the stage scores its cells against the training cells (`kid_train`): to pick an
        epoch (`select: kid`) or to compare restarts (their last epochs)."""
        return self.select == "kid" or self.restarts > 1

    def validate(self) -> None:
        _positive(
            self,
            "epochs",
            "batch_size",
            "lr",
            "g_base",
            "d_base",
            "d_layers",
            "select_every",
            "restarts",
        )
        if self.out_blur and not self.full_res:
            raise ConfigError(
                "cgan.out_blur=true needs cgan.full_res > 0 (it filters that path's output layer)"
            )
        self.validate_small_data("cgan.")
        if self.augment not in AUGMENTS:
            raise ConfigError(f"cgan.augment={self.augment!r}: use one of {', '.join(AUGMENTS)}")
        if self.recon not in RECON:
            raise ConfigError(f"cgan.recon={self.recon!r}: use one of {', '.join(RECON)}")
        if self.select not in SELECT:
            raise ConfigError(f"cgan.select={self.select!r}: use one of {', '.join(SELECT)}")
        if self.restarts > 1 and self.select == "val_loss":
            raise ConfigError(
                f"cgan.restarts={self.restarts} compares the kept weights of each training by the "
                "KID of their cells, which select val_loss does not score: use cgan.select last or kid"
            )
        if self.lam < 0:
            raise ConfigError(f"cgan.lam={self.lam}: λ must be >= 0")
        if not 0.0 <= self.anneal <= 1.0:
            raise ConfigError(
                f"cgan.anneal={self.anneal}: the share of "
                "the epochs the rate decays over, in [0, 1]"
            )
        if self.batch_size < 2:
            raise ConfigError(
                f"cgan.batch_size={self.batch_size}: the loop skips "
                "batches under 2 images (BatchNorm); use >= 2"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"cgan.dropout={self.dropout}: a dropout probability in [0, 1)")
        if self.full_res < 0 or self.noise < 0:
            raise ConfigError(
                f"cgan.full_res={self.full_res}, "
                f"cgan.noise={self.noise}: channel counts must be >= 0"
            )
        if self.noise and not self.full_res:
            raise ConfigError(
                f"cgan.noise={self.noise} needs cgan.full_res > "
                "0 (the noise enters G's full-resolution path)"
            )
        if not 0.0 <= self.beta1 < 1.0:
            raise ConfigError(f"cgan.beta1={self.beta1}: Adam's beta1 lies in [0, 1)")
        if self.crop and (self.crop < 8 or self.crop % 2):
            raise ConfigError(
                f"cgan.crop={self.crop}: the training crop's side, an even number of pixels >= 8 "
                "(0 = whole images)"
            )


@dataclasses.dataclass
class LatentGANConfig(SmallData):
    """z → image GAN with the paper's stabilisers and the small-data settings of SmallData: the
    class mask (label-map) GANs and the vanilla RGB control."""

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
    # real images under a random flip/quarter turn (cells have no up); "none": as the paper
    augment: str = "dihedral"

    def validate(self) -> None:
        _positive(
            self, "epochs", "batch_size", "lr_g", "lr_d", "z_dim", "g_base", "d_base", "d_layers"
        )
        self.validate_small_data()
        if self.augment not in AUGMENTS:
            raise ConfigError(f"augment={self.augment!r}: use one of {', '.join(AUGMENTS)}")
        if not 0.0 <= self.beta1 < 1.0:
            raise ConfigError(f"beta1={self.beta1}: Adam's beta1 lies in [0, 1)")
        if self.batch_size < 2:
            raise ConfigError(
                f"batch_size={self.batch_size}: the loop skips "
                "batches under 2 images (BatchNorm); use >= 2"
            )
        if not 0.0 <= self.smooth_real_low <= 1.0:
            raise ConfigError(f"smooth_real_low={self.smooth_real_low}: must lie in [0, 1]")
        if not 0.0 <= self.smooth_fake_high <= 1.0:
            raise ConfigError(f"smooth_fake_high={self.smooth_fake_high}: must lie in [0, 1]")
        if self.smooth_fake_high >= self.smooth_real_low:
            raise ConfigError(
                f"smooth_fake_high={self.smooth_fake_high} >= "
                f"smooth_real_low={self.smooth_real_low}: real and fake target ranges would overlap"
            )
        if not 0.0 <= self.flip_rate < 0.5:
            raise ConfigError(
                f"flip_rate={self.flip_rate}: must lie in [0, 0.5) (0.5 makes labels meaningless)"
            )


@dataclasses.dataclass
class CGANParams(CGANConfig):
    """The CGAN stage's settings: `cgan.*` and what the data decides."""

    size: int = 64  # image side (px)
    in_ch: int = (
        1  # condition channels: 1 (nucleus mask), or a label map's one-hot + colour channels
    )

    def __post_init__(self) -> None:
        if self.train_side < self.size and self.size % 2 ** unet_depth(self.train_side):
            raise ConfigError(
                f"cgan.crop={self.crop} with {self.size}-px images: G's UNet for {self.crop}-px "
                f"crops needs an image side divisible by {2 ** unet_depth(self.crop)}; pick a crop "
                f"that halves into {self.size} (e.g. {self.size // 2}) or set data.size"
            )

    @property
    def train_side(self) -> int:
        """The side of the pairs G and D train on: the crop, or the whole image."""
        return self.crop if 0 < self.crop < self.size else self.size


@dataclasses.dataclass
class LatentGANParams(LatentGANConfig):
    """A latent GAN stage's settings: its config section and the image size."""

    size: int = 64  # image side (px)


@dataclasses.dataclass
class MaskGANParams(LatentGANParams):
    """A class mask GAN's settings: a latent GAN's and what it draws."""

    labels: int = 1  # 1 (binary nucleus mask) or a label map's label count


def _positive(obj, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        if v <= 0:
            raise ConfigError(f"{n}={v}: must be > 0")


# ----------------------------------------------------------------------------- tensors


def masks_to_unit(masks: np.ndarray, labels: int = 1) -> np.ndarray:
    """bool [N,H,W] → float32 [N,1,H,W] in {-1, +1}; an integer label map [N,H,W] with `labels`
    > 1 values → its one-hot channels [N,labels,H,W] in {-1, +1}."""
    if labels <= 1:
        return (masks[:, None].astype(np.float32) * 2.0 - 1.0).copy()
    onehot = masks[:, None].astype(np.int64) == np.arange(labels)[None, :, None, None]
    return (onehot.astype(np.float32) * 2.0 - 1.0).copy()


def decay_factor(epoch: int, epochs: int, share: float) -> float:
    """The learning-rate factor of `epoch` (0-based) when the last `share` of `epochs` decays
    linearly: 1 before, then (epochs - epoch) / (n_decay + 1), as pix2pix's `lambda_rule`."""
    n_decay = int(round(share * epochs))
    if n_decay <= 0:
        return 1.0
    return min(1.0, (epochs - epoch) / (n_decay + 1))


def stage_params(cfg_section, size: int) -> dict:
    return {**dataclasses.asdict(cfg_section), "size": size}


def seeded_z(n: int, z_dim: int, seed: int) -> np.ndarray:
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed)).numpy()


# ----------------------------------------------------------------------------- conditional GAN


class CGANStage(SmallDataStage):
    """SynCGAN §3.3: G = UNet(condition) → RGB; D = PatchGAN on (condition, image) pairs.

    D loss: BCE(D(T(y, x)), 1) + BCE(D(T(y, G(y))), 0)    (eq. 2, halved as in pix2pix; T: D's augmentation,
                                                           one draw for both pairs, colour on the image only)
    G loss: BCE(D(T(y, G(y))), 1) + λ · R(G(y), x)        (eq. 3; R = MSE (paper), L1, or D feature matching)
    The condition y is the nucleus mask (1 channel), or a label map's one-hot channels followed by
    the region colours it is painted with (syncgan.py). The best epoch has the lowest generator loss
    on the validation pairs (the paper's criterion), is the last one (`select: last`), or has the
    lowest KID of its sampled cells against the training cells (`select: kid`).
    """

    kind, Params = "cgan", CGANParams
    ddp_kwargs = {"broadcast_buffers": False}  # D runs twice per step (real, fake) before backward
    # what sampling needs beside the weights (the region colours of label maps): a function of the
    # training data, which the stage's data key covers, so it is kept out of the params hash
    sampling_meta: dict = {}

    @property
    def colour_from(self) -> int:  # type: ignore[override]
        return self.cfg.in_ch

    def generator_kwargs(self) -> dict:
        c = self.cfg
        kw = dict(
            in_ch=c.in_ch,
            out_ch=3,
            base=c.g_base,
            depth=unet_depth(c.train_side),
            norm=c.norm,
            dropout=c.dropout,
        )
        # without a full-resolution path the kwargs are those of older bundles, which load as the
        # UNet they were
        if c.full_res:
            kw.update(full_res=c.full_res, noise=c.noise)
        if c.out_blur:
            kw.update(out_blur=True)
        return kw

    def build(self, device):
        c = self.cfg
        g = UNet(**self.generator_kwargs()).to(device)
        d = PatchDiscriminator(
            in_ch=c.in_ch + 3,
            base=c.d_base,
            n_layers=c.d_layers,
            norm=c.norm,
            high_pass=c.d_high_pass,
        )
        return {"G": g, "D": d.to(device), **self.small_data_models(g, device)}

    def optimizers(self, models):
        c = self.cfg
        return {"G": adam(models["G"], c.lr, c.beta1), "D": adam(models["D"], c.lr, c.beta1)}

    def begin_epoch(self, opts, epoch):
        """pix2pix's schedule: the rate stays at `lr`, then falls linearly towards 0 over the last
        `anneal` share of the epochs (0 = constant)."""
        self._epoch = epoch  # `select: kid` scores some epochs only
        lr = self.cfg.lr * decay_factor(epoch, self.epochs, self.cfg.anneal)
        for opt in opts.values():
            for group in opt.param_groups:
                group["lr"] = lr

    def _recon(self, D, y, fake, x) -> torch.Tensor:
        kind = self.cfg.recon
        if kind == "l1":
            return F.l1_loss(fake.float(), x.float())
        if kind == "fm":
            d = getattr(D, "module", D)
            real_f = [f.detach() for f in d.features(torch.cat([y, x], 1))]
            fake_f = d.features(torch.cat([y, fake], 1))
            return sum(F.l1_loss(a.float(), b.float()) for a, b in zip(fake_f, real_f)) / len(
                real_f
            )
        return F.mse_loss(fake.float(), x.float())

    def train_step(self, models, opts, batch, gen, amp):
        G, D = models["G"], models["D"]
        y, x = batch["mask"], batch["image"]
        turn, crop = self.cfg.augment == "dihedral", self.cfg.train_side < x.shape[-1]
        if turn or crop:  # one symmetry and one window for each condition and its image
            yx = torch.cat([y, x], 1)
            yx = dihedral(yx, gen) if turn else yx
            yx = random_crops(yx, self.cfg.train_side, gen) if crop else yx
            y, x = yx[:, : y.shape[1]], yx[:, y.shape[1] :]
        # 1. Discriminator: real (y, x) pairs against (y, G(y)), both
        # under the same augmentation draw.
        # per-pixel noise (cgan.noise) from the stage's stream, like z
        shape = unwrap(G).noise_shape(y)
        noise = torch.randn(shape, generator=gen) if shape else None
        with amp():
            fake = G(y) if noise is None else G(y, noise.to(y.device))
        real_in, fake_in = torch.cat([y, x], 1), torch.cat([y, fake.detach()], 1)
        if "aug" in models:
            real_in, fake_in = models["aug"].pair(real_in, fake_in, gen)
        with amp():
            d_real = D(real_in)
            d_fake = D(fake_in)
        loss_d = 0.5 * (bce(d_real, 1.0) + bce(d_fake, 0.0))
        r1 = self.d_loss_r1(D, real_in, amp)
        opts["D"].zero_grad(set_to_none=True)
        (loss_d if r1 is None else loss_d + r1).backward()
        opts["D"].step()
        if "aug" in models:
            models["aug"].observe(d_real, len(x))
        # 2. Generator: fool D (through the same kind of
        # augmentation) and stay close to the real image.
        with amp():
            d_fake = D(_aug(models, torch.cat([y, fake], 1), gen))
        adv = bce(d_fake, 1.0)
        rec = self._recon(D, y, fake, x)
        loss_g = adv + self.cfg.lam * rec
        opts["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        opts["G"].step()
        self.after_g_step(models, opts)
        out = {
            "loss_d": loss_d.item(),
            "loss_g": loss_g.item(),
            "loss_g_adv": adv.item(),
            "mse": F.mse_loss(fake.detach().float(), x.float()).item(),
        }
        if "aug" in models:
            out["aug_p"] = float(models["aug"].p)
        return out

    @torch.no_grad()
    def val_loss(self, models, val, amp):
        """Generator loss on the validation pairs: the paper's checkpoint selection criterion."""
        if not val:
            return None
        G, D = self.sampler(models), models["D"]
        was = G.training
        G.eval(), D.eval()
        try:
            with amp():
                fake = G(val["mask"])
                d_fake = D(torch.cat([val["mask"], fake], 1))
            return float(
                bce(d_fake, 1.0) + self.cfg.lam * F.mse_loss(fake.float(), val["image"].float())
            )
        finally:
            G.train(was), D.train()

    def validate(self, models, val, amp):
        if not val:
            return None
        out = {"val_loss_g": self.val_loss(models, val, amp)}
        epoch, every = getattr(self, "_epoch", 0), self.cfg.select_every
        # select kid: every `select_every` epochs and the last; restarts: the last (kept) weights
        due = epoch == self.epochs - 1 or (self.cfg.select == "kid" and (epoch + 1) % every == 0)
        if self.cfg.scores_kid and "kid_cond" in val and due:
            out["kid_train"] = self.kid_to_training(models, val)
        return out

    @torch.no_grad()
    def kid_to_training(self, models, val) -> float:
        """`select: kid`: the sampler's cells drawn from `val["kid_cond"]` (conditions made as
        sampling makes them, of classes `kid_cls`; syncgan.py) against the training cells of the
        same class (`kid_real`, `kid_real_cls`), KID per class on the real Inception weights,
        averaged over the classes. Only training images are scored, so the choice of epoch leaves
        the validation and test images unseen (StyleGAN2-ADA picks its snapshots the same way).
        Deterministic, so every DDP rank keeps the same epoch."""
        from ..metrics.fidelity import fid_kid_from_features, inception_features
        from ..nets.images import from_unit

        G = self.sampler(models)
        was, dev = G.training, val["kid_cond"].device
        G.eval()
        try:
            cond = val["kid_cond"]
            shape = unwrap(G).noise_shape(cond)
            noise = (
                torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dev)
                if shape
                else None
            )
            fake = torch.cat(
                [
                    G(cond[i : i + 64]) if noise is None else G(cond[i : i + 64], noise[i : i + 64])
                    for i in range(0, len(cond), 64)
                ]
            )
        finally:
            G.train(was)
        f_fake = inception_features(from_unit(fake.float().cpu()), device=dev)
        real_cls = val["kid_real_cls"].cpu().numpy()
        if getattr(self, "_kid_real", None) is None:  # the training cells' features, once a job
            self._kid_real = inception_features(val["kid_real"].cpu().numpy(), device=dev)
        fake_cls = val["kid_cls"].cpu().numpy()
        kids = [
            fid_kid_from_features(f_fake[fake_cls == c], self._kid_real[real_cls == c], seed=0)[
                "kid_mean"
            ]
            for c in np.unique(fake_cls)
        ]
        return float(np.mean(kids))

    def selection(self, metrics, epoch):
        if self.cfg.select == "last":
            return (-epoch,)
        if self.cfg.select == "kid":  # epochs left unscored rank after every scored one
            return (metrics.get("kid_train", float("inf")), -epoch)
        # ties: the later epoch
        return (metrics["val_loss_g"], -epoch) if "val_loss_g" in metrics else (-epoch,)

    def meta(self):
        return {"generator_kwargs": self.generator_kwargs(), **self.sampling_meta}

    @torch.no_grad()
    def grid(self, models, fixed):
        G = self.sampler(models)
        was = G.training
        G.eval()
        try:
            fake = G(fixed["mask"])
        finally:
            G.train(was)
        # rows: condition (first channels shown as a picture) | generated | real
        return to_uint8_grid(
            torch.cat([condition_picture(fixed["mask"]), fake, fixed["image"]]), nrow=len(fake)
        )


def condition_picture(y: torch.Tensor) -> torch.Tensor:
    """A CGAN condition as a [-1, 1] RGB picture: a mask as grey; a label map as its labels' palette."""
    if y.shape[1] == 1:
        return y.repeat(1, 3, 1, 1)
    from ..masks.labels import PALETTE

    pal = torch.as_tensor(PALETTE, dtype=torch.float32, device=y.device) / 127.5 - 1.0
    k = min(y.shape[1], len(pal))
    idx = y[:, :k].argmax(1)
    return pal[idx].permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------- latent GANs


class LatentGANStage(SmallDataStage):
    """z → image GAN with label smoothing and flipping (SynCGAN §3.4, eqs. 4–6) and D's augmentation."""

    Params = LatentGANParams
    out_ch = 1
    input_key = "mask"  # which training array the stage learns to generate
    ddp_kwargs = {"broadcast_buffers": False}  # D runs twice per step (real, fake) before backward

    def meta(self):
        return {"generator_kwargs": self.generator_kwargs()}

    def generator_kwargs(self) -> dict:
        c = self.cfg
        return dict(z_dim=c.z_dim, out_size=c.size, base=c.g_base)

    def channels(self) -> int:
        return self.out_ch

    def _make_g(self) -> nn.Module:
        raise NotImplementedError

    def _g_out(self, G, z):
        return G(z)

    @property
    def colour_from(self) -> int:  # type: ignore[override]
        # masks and label maps have no colour
        return 0 if self.input_key == "image" else self.channels()

    def build(self, device):
        c = self.cfg
        g = self._make_g().to(device)
        d = PatchDiscriminator(
            in_ch=self.channels(), base=c.d_base, n_layers=c.d_layers, norm="batch"
        )
        return {"G": g, "D": d.to(device), **self.small_data_models(g, device)}

    def optimizers(self, models):
        c = self.cfg
        return {"G": adam(models["G"], c.lr_g, c.beta1), "D": adam(models["D"], c.lr_d, c.beta1)}

    def train_step(self, models, opts, batch, gen, amp):
        G, D, c = models["G"], models["D"], self.cfg
        real = batch[self.input_key]
        z = torch.randn(real.shape[0], c.z_dim, generator=gen).to(real.device)
        if c.augment == "dihedral":
            real = dihedral(real, gen)
        # 1. Discriminator with smoothed, randomly flipped targets (D
        # updates only), on augmented inputs.
        with amp():
            fake = self._g_out(G, z)
        real_in = _aug(models, real, gen)
        with amp():
            d_real = D(real_in)
            d_fake = D(_aug(models, fake.detach(), gen))
        t_real = d_targets(d_real, True, c.smooth_real_low, c.smooth_fake_high, c.flip_rate, gen)
        t_fake = d_targets(d_fake, False, c.smooth_real_low, c.smooth_fake_high, c.flip_rate, gen)
        loss_d = bce(d_real, t_real) + bce(d_fake, t_fake)  # eq. 5
        r1 = self.d_loss_r1(D, real_in, amp)
        opts["D"].zero_grad(set_to_none=True)
        (loss_d if r1 is None else loss_d + r1).backward()
        opts["D"].step()
        if "aug" in models:
            models["aug"].observe(d_real, len(real))
        # 2. Generator: hard target 1 (no smoothing for G, paper §3.4), through the augmentation.
        with amp():
            d_fake = D(_aug(models, fake, gen))
        loss_g = bce(d_fake, 1.0)  # eq. 6
        opts["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        opts["G"].step()
        self.after_g_step(models, opts)
        out = {
            "loss_d": loss_d.item(),
            "loss_g": loss_g.item(),
            "d_real": torch.sigmoid(d_real).mean().item(),
        }
        if "aug" in models:
            out["aug_p"] = float(models["aug"].p)
        return out

    @torch.no_grad()
    def grid(self, models, fixed):
        G = self.sampler(models)
        was = G.training
        G.eval()
        try:
            out = self._g_out(G, fixed["z"])
        finally:
            G.train(was)
        return to_uint8_grid(condition_picture(out) if out.shape[1] > 3 else out, nrow=8)


class MaskGANStage(LatentGANStage):
    """One class's mask GAN: z → binary nucleus mask (D sees tanh(logits) against ±1 masks), or
    z → a label map of `labels` labels (D sees softmax(logits)·2 − 1 against ±1 one-hot maps)."""

    kind, out_ch, input_key, Params = "mask_gan", 1, "mask", MaskGANParams

    def channels(self) -> int:
        return self.cfg.labels

    def generator_kwargs(self) -> dict:
        kw = super().generator_kwargs()
        if self.channels() > 1:
            kw["out_ch"] = self.channels()
        return kw

    def _make_g(self):
        return MaskGenerator(**self.generator_kwargs())

    def _g_out(self, G, z):
        logits = G(z)
        if logits.shape[1] == 1:
            return torch.tanh(logits)  # soft ±1 so D's gradient reaches G; sampling thresholds at 0
        return torch.softmax(logits, 1) * 2 - 1  # soft one-hot; sampling takes the argmax


class VanillaGANStage(LatentGANStage):
    """The end-to-end control: z → RGB, same G/D family and stabilisers."""

    kind, out_ch, input_key = "gan", 3, "image"

    def _make_g(self):
        return VanillaGenerator(**self.generator_kwargs())
