"""The refiner GAN of Hou et al. (CVPR 2019): a style-conditioned residual refiner and its
discriminator. Both see a style vector computed from a real reference patch, tiled over the
image and concatenated to its channels (the "style reference").

    StyleEncoder   ref patch → conv s2 → conv s2 → [channel mean ‖ channel std] → linear → style
    Refiner        [x ‖ tile(style)] → conv3x3(32) → 5 × ResBlock(32) → conv3x3(3) → clip(x + Δ)
    StyleDiscriminator  [x ‖ tile(style)] → PatchGAN logits (SimGAN's local adversarial loss)

The refiner adds a residual to its input and clips to [-1, 1]; its last conv starts at zero,
so an untrained refiner is exactly the identity (the self-regularisation target). Pooled
statistics make the style vector independent of where things are in the patch: it carries
stain and texture, not content, so real and reference patches need not overlap.
"""

from __future__ import annotations

import torch
from torch import nn

from .patchgan import PatchDiscriminator


def tile_style(x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """[B,C,H,W] ‖ style [B,D] broadcast to every pixel → [B,C+D,H,W]."""
    b, _, h, w = x.shape
    return torch.cat([x, style[:, :, None, None].expand(b, style.shape[1], h, w)], 1)


class StyleEncoder(nn.Module):
    """Reference patch [B,3,H,W] in [-1,1] → style vector [B,style_dim]."""

    def __init__(self, style_dim: int = 8, base: int = 16) -> None:
        super().__init__()
        self.style_dim = style_dim
        self.features = nn.Sequential(
            nn.Conv2d(3, base, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(base, 2 * base, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        )
        # mean and std of the raw colours and of the features: stain and texture statistics
        self.head = nn.Linear(2 * (3 + 2 * base), style_dim)

    def forward(self, ref: torch.Tensor) -> torch.Tensor:
        f = self.features(ref)
        stats = [ref.mean((2, 3)), ref.std((2, 3)), f.mean((2, 3)), f.std((2, 3))]
        return self.head(torch.cat(stats, 1))


class ResBlock(nn.Module):
    """conv3x3 → ReLU → conv3x3, plus the input (SimGAN's refiner block). No normalisation: a
    refiner is used one image at a time, so batch statistics would make train and use differ."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(ch, ch, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class Refiner(nn.Module):
    """Initial image [B,3,H,W] and reference patch [B,3,h,w] (both [-1,1]) → refined image.

    Args:
        width: channels of the residual trunk (Hou et al.: 32).
        blocks: residual blocks (Hou et al.: 5).
        style_dim: size of the style vector (0 = no style conditioning).
        style_base: width of the style encoder.
    """

    def __init__(
        self, width: int = 32, blocks: int = 5, style_dim: int = 8, style_base: int = 16
    ) -> None:
        super().__init__()
        self.style_dim = style_dim
        self.encoder = StyleEncoder(style_dim, style_base) if style_dim > 0 else None
        self.stem = nn.Sequential(
            nn.Conv2d(3 + style_dim, width, 3, padding=1), nn.ReLU(inplace=True)
        )
        self.trunk = nn.Sequential(*[ResBlock(width) for _ in range(blocks)])
        self.out = nn.Conv2d(width, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # start as the identity: refinement is learned, not assumed
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        h = tile_style(x, self.encoder(ref)) if self.encoder is not None else x
        return torch.clamp(x + self.out(self.trunk(self.stem(h))), -1.0, 1.0)


class StyleDiscriminator(nn.Module):
    """Image and reference patch → logits map: is this a real image in the reference's style?

    Args:
        base: PatchGAN width.
        n_layers: stride-2 layers (2 → 34 px receptive field: local realism, as in SimGAN).
        style_dim: size of its own style vector (0 = unconditional).
        style_base: width of its style encoder.
    """

    def __init__(
        self, base: int = 32, n_layers: int = 2, style_dim: int = 8, style_base: int = 16
    ) -> None:
        super().__init__()
        self.encoder = StyleEncoder(style_dim, style_base) if style_dim > 0 else None
        # no normalisation: D sees real and refined batches separately, and its eval-mode verdicts
        # (example weights, validation accuracy) must not depend on running batch statistics
        self.net = PatchDiscriminator(
            in_ch=3 + style_dim, base=base, n_layers=n_layers, norm="none"
        )

    def forward(self, x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(tile_style(x, self.encoder(ref)) if self.encoder is not None else x)
