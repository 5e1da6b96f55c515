"""Small-data GAN training, one piece for every adversarial stage (mask GANs, CGAN, vanilla GAN,
CycleGAN, refiner): differentiable augmentation of D's inputs, adaptive augmentation strength,
an exponential moving average of G, and an R1 gradient penalty.

Why: each discriminator here sees 45-75 real images per class. With so few, D memorises them
within a few epochs and stops telling G what is wrong (Karras et al. 2020, "ADA"; Zhao et al.
2020, "DiffAugment": the limited-data GAN literature's central result). The cure both papers
measured is to show D only augmented images, real and fake alike, through transforms that are
differentiable, so G's gradient passes through them and G is not taught to make augmented
images. Cells have no up or down, so the dihedral group (flips, quarter turns) joins
DiffAugment's colour, translation and cutout.

    policy  comma-separated ops: colour, translation, cutout, dihedral ("" = none)
    ada     target of the overfitting signal r_t = E[sign(D(real))] (Karras et al.: 0.6): p starts at 0
            and rises only while D is over-confident on reals; 0 = the ops on every image (p = 1,
            DiffAugment). Measured on Herlev (64 px, CGAN alone on real label maps, 150 steps, KID of
            G(held-out maps) vs the held-out cells): always on 0.147 (D stuck at chance, loss 0.694),
            translation + dihedral always on 0.136, ADA 0.128 (p still 0: D had not memorised yet).
    ema     decay of the moving average of G's weights used for sampling and the bundle (0 = off)
    r1      weight gamma of the R1 penalty gamma/2 E||grad D(real)||^2 (Mescheder et al. 2018; 0 = off)

An op's random parameters are drawn once per call (`draw`) and applied by `apply`: the same draw
on a (label map, image) pair moves both together, and the colour ops touch only the image
channels (`colour_from`). Random numbers come from the stage's CPU generator, so a seeded run
repeats exactly.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..training.stage import Stage

OPS = ("colour", "translation", "cutout", "dihedral")


@dataclasses.dataclass
class SmallData:
    """Small-data settings a GAN stage's config inherits (keys: `diffaug`, `ada`, `ema`, `r1`)."""

    # D's inputs, real and fake alike (DiffAugment + cell symmetries); "" = none
    diffaug: str = "colour,translation,cutout,dihedral"
    # adapt the augmentation probability so E[sign D(real)]
    # stays at this target (ADA); 0 = always on (DiffAugment)
    ada: float = 0.6
    # decay of G's moving average, used for samples and the bundle; 0 = the last weights
    ema: float = 0.999
    r1: float = 0.0  # R1 penalty weight on D's gradient at real images; 0 = off

    def validate_small_data(self, prefix: str = "") -> None:
        ops = parse_policy(self.diffaug, f"{prefix}diffaug")
        del ops
        if not 0.0 <= self.ada < 1.0:
            raise ConfigError(
                f"{prefix}ada={self.ada}: the target of E[sign "
                "D(real)] lies in [0, 1) (0 = off; ADA uses 0.6)"
            )
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(
                f"{prefix}ema={self.ema}: a decay in [0, 1) (0 = no moving average; 0.999 is usual)"
            )
        if self.r1 < 0:
            raise ConfigError(f"{prefix}r1={self.r1}: the R1 weight must be >= 0")


def parse_policy(policy: str, key: str = "diffaug") -> tuple[str, ...]:
    if not isinstance(policy, str):
        raise ConfigError(
            f"{key}={policy!r}: give a comma-separated list of {', '.join(OPS)} (or '' for none)"
        )
    ops = tuple(o.strip() for o in policy.replace("color", "colour").split(",") if o.strip())
    if bad := [o for o in ops if o not in OPS]:
        raise ConfigError(
            f"{key}={policy!r}: unknown op {bad[0]!r}; use "
            f"a comma-separated list of {', '.join(OPS)}"
        )
    return ops


# ----------------------------------------------------------------------------- augmentation


def draw(ops: tuple[str, ...], b: int, size: int, gen: torch.Generator, p: float = 1.0) -> dict:
    """The random parameters of one augmentation call for a batch of b images (CPU tensors).
    Each image takes the ops with probability p (ADA); p = 1 is DiffAugment."""
    on = torch.rand(b, generator=gen) < p
    out: dict = {"on": on}
    if (
        "colour" in ops
    ):  # DiffAugment (on [-1, 1] data, as there): brightness ±0.5, saturation x[0, 2], contrast x[0.5, 1.5]
        out["bright"] = (torch.rand(b, generator=gen) - 0.5) * on
        out["sat"] = torch.where(on, torch.rand(b, generator=gen) * 2, torch.ones(b))
        out["contrast"] = torch.where(on, torch.rand(b, generator=gen) + 0.5, torch.ones(b))
    if "translation" in ops:  # up to 1/8 of the side, zero (grey) fill
        s = max(1, size // 8)
        out["shift"] = torch.randint(-s, s + 1, (b, 2), generator=gen) * on[:, None]
    if "cutout" in ops:  # a square of half the side set to zero
        out["cut_centre"] = torch.randint(0, size, (b, 2), generator=gen)
        out["cut_on"] = on
    if "dihedral" in ops:
        out["flip"] = (torch.rand(b, generator=gen) < 0.5) & on
        out["turns"] = torch.randint(4, (b,), generator=gen) * on
    return out


def apply(x: torch.Tensor, prm: dict, colour_from: int = 0) -> torch.Tensor:
    """x [B, C, H, W] in [-1, 1] under the drawn parameters; colour ops act on channels
    `colour_from:` (the image of a (label map, image) pair), geometry on all. Differentiable in x."""
    b, c, h, w = x.shape
    dev = x.device
    if "bright" in prm and colour_from < c:
        img = x[:, colour_from:]
        view = lambda t: t.to(dev, x.dtype).view(b, 1, 1, 1)  # noqa: E731
        img = img + view(prm["bright"])
        mean = img.mean(dim=1, keepdim=True)
        img = (img - mean) * view(prm["sat"]) + mean
        mean = img.mean(dim=(1, 2, 3), keepdim=True)
        img = (img - mean) * view(prm["contrast"]) + mean
        x = torch.cat([x[:, :colour_from], img], 1) if colour_from else img
    if "shift" in prm:
        x = _translate(x, prm["shift"].to(dev))
    if "cut_centre" in prm:
        x = x * _cutout_mask(b, h, w, prm["cut_centre"].to(dev), prm["cut_on"].to(dev), x.dtype)
    if "flip" in prm:
        x = torch.where(prm["flip"].to(dev).view(b, 1, 1, 1), x.flip(3), x)
        turns = prm["turns"].tolist()
        if any(turns) and h == w:
            x = torch.stack(
                [torch.rot90(img, int(k), (1, 2)) if k else img for img, k in zip(x, turns)]
            )
    return x


def _translate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Integer shift per image with zero fill, by gathering from a padded copy (DiffAugment)."""
    b, c, h, w = x.shape
    s = int(shift.abs().max().item()) if shift.numel() else 0
    if s == 0:
        return x
    pad = F.pad(x, (s, s, s, s))
    # [B, H]
    iy = (torch.arange(h, device=x.device)[None, :] + s - shift[:, 0:1]).clamp(0, h + 2 * s - 1)
    # [B, W]
    ix = (torch.arange(w, device=x.device)[None, :] + s - shift[:, 1:2]).clamp(0, w + 2 * s - 1)
    rows = torch.gather(pad, 2, iy[:, None, :, None].expand(b, c, h, w + 2 * s))
    return torch.gather(rows, 3, ix[:, None, None, :].expand(b, c, h, w))


def _cutout_mask(
    b: int, h: int, w: int, centre: torch.Tensor, on: torch.Tensor, dtype
) -> torch.Tensor:
    half_h, half_w = max(1, h // 4), max(1, w // 4)
    yy = torch.arange(h, device=centre.device)[None, :, None]
    xx = torch.arange(w, device=centre.device)[None, None, :]
    inside = ((yy - centre[:, 0, None, None]).abs() < half_h) & (
        (xx - centre[:, 1, None, None]).abs() < half_w
    )
    inside = inside & on.view(b, 1, 1)
    return (~inside).to(dtype)[:, None]


# ----------------------------------------------------------------------------- the stage's helper


class Augmenter(nn.Module):
    """D's input augmentation with its probability `p` as a buffer (checkpointed with the models;
    ADA moves it). Not a trained module: it is never wrapped in DDP."""

    def __init__(
        self, policy: str, ada_target: float = 0.0, size: int = 64, colour_from: int = 0
    ) -> None:
        super().__init__()
        self.ops, self.target, self.size, self.colour_from = (
            parse_policy(policy),
            float(ada_target),
            int(size),
            int(colour_from),
        )
        self.register_buffer("p", torch.tensor(0.0 if ada_target > 0 else 1.0))
        # running sum of sign(D(real)) and its count since the last adjustment
        self.register_buffer("signs", torch.zeros(2))

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:  # type: ignore[override]
        if not self.ops:
            return x
        prm = draw(self.ops, x.shape[0], self.size, gen, float(self.p))
        return apply(x, prm, self.colour_from)

    def pair(
        self, a: torch.Tensor, b: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same draw applied to two batches (real and fake under identical transforms)."""
        if not self.ops:
            return a, b
        prm = draw(self.ops, a.shape[0], self.size, gen, float(self.p))
        return apply(a, prm, self.colour_from), apply(b, prm, self.colour_from)

    @torch.no_grad()
    def observe(
        self, d_real: torch.Tensor, batch: int, every: int = 4, speed_images: float = 500.0
    ) -> None:
        """ADA: accumulate sign(D(real)); every `every` steps move p by batch*every/speed_images
        towards keeping the mean sign at the target (up when D is over-confident on reals)."""
        if self.target <= 0:
            return
        s = torch.stack(
            [torch.sign(d_real.float()).mean(), torch.ones((), device=d_real.device)]
        ).to(self.signs.device)
        self.signs += s
        if self.signs[1] >= every:
            rt = self.signs[0] / self.signs[1]
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(rt)
                rt /= torch.distributed.get_world_size()
            step = batch * every / speed_images
            self.p.copy_((self.p + torch.sign(rt - self.target) * step).clamp(0.0, 1.0))
            self.signs.zero_()


def make_ema(g: nn.Module) -> nn.Module:
    """A frozen copy of G for the moving average (eval mode: sampling uses running statistics)."""
    ema = copy.deepcopy(g).eval()
    for prm in ema.parameters():
        prm.requires_grad_(False)
    return ema


def ema_decay(decay: float, step: int) -> float:
    """The decay at G's `step`-th update, warmed up as (1 + t) / (10 + t) until it reaches `decay`:
    a CPU run of a few hundred steps must not sample an average still made of the initial weights
    (0.999 over 48 steps would keep 95% of them)."""
    return min(decay, (1.0 + step) / (10.0 + step))


def optimizer_steps(opt: torch.optim.Optimizer) -> int:
    """Steps an Adam optimiser has taken (its own state: checkpointed and resumed with it)."""
    st = opt.state.get(opt.param_groups[0]["params"][0], {})
    return int(st["step"]) if "step" in st else 0


@torch.no_grad()
def ema_update(ema: nn.Module, g: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * g for parameters; buffers (BatchNorm statistics) copied."""
    g = getattr(g, "module", g)
    for pe, pg in zip(ema.parameters(), g.parameters()):
        pe.lerp_(pg.detach(), 1.0 - decay)
    for be, bg in zip(ema.buffers(), g.buffers()):
        be.copy_(bg)


def r1_penalty(d_out: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """E||grad_x D(x)||^2 at real x (x must require grad; d_out from D(x))."""
    (grad,) = torch.autograd.grad(d_out.float().sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


# ----------------------------------------------------------------------------- the stage base


class SmallDataStage(Stage):
    """What every adversarial stage here shares: D's augmenter, G's moving average, the R1 term.

    Models: "G", "D", and when asked "G_ema" (the moving average: sampled, kept, shown in grids)
    and "aug" (the augmenter, whose ADA probability is checkpointed with the models).
    """

    colour_from = 0  # channels of D's input from which the colour ops apply (after a condition)

    @property
    def keep(self) -> str:  # type: ignore[override]
        return "G_ema" if self.cfg.ema > 0 else "G"

    def small_data_models(self, g: nn.Module, device) -> dict:
        c, out = self.cfg, {}
        if c.ema > 0:
            out["G_ema"] = make_ema(g).to(device)
        if c.diffaug:
            out["aug"] = Augmenter(c.diffaug, c.ada, c.size, self.colour_from).to(device)
        return out

    def after_g_step(self, models, opts) -> None:
        if "G_ema" in models:
            ema_update(
                models["G_ema"], models["G"], ema_decay(self.cfg.ema, optimizer_steps(opts["G"]))
            )

    def sampler(self, models) -> nn.Module:
        return models.get("G_ema", models["G"])

    def d_loss_r1(self, D, real_in: torch.Tensor, amp) -> torch.Tensor | None:
        """gamma/2 · E||∇D(real)||² (None when off)."""
        if self.cfg.r1 <= 0:
            return None
        real_in = real_in.detach().requires_grad_(True)
        with amp():
            out = D(real_in)
        return 0.5 * self.cfg.r1 * r1_penalty(out, real_in)


def augment_d_input(models, x: torch.Tensor, gen) -> torch.Tensor:
    """x through the stage's augmenter, if it has one (a fresh draw)."""
    return models["aug"](x, gen) if "aug" in models else x
