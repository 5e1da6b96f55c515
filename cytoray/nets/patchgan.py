"""PatchGAN discriminator (pix2pix `NLayerDiscriminator`).

Each output logit judges one overlapping patch (70x70 for n_layers=3), which penalises
local texture/structure and is what SynCGAN uses for both the mask GAN and the mask → RGB
conditional GAN. Outputs are raw logits: the losses use `BCEWithLogitsLoss` (numerically
stable, no sigmoid saturation). Conditional use: the caller concatenates (mask, image) on
the channel axis and passes in_ch = 1 + 3.
"""

from __future__ import annotations

import torch
from torch import nn

from .unet import conv_bias, high_pass, make_norm

_K, _PAD = 4, 1  # pix2pix kernel and padding for every layer


# ----------------------------------------------------------------------------- geometry


def _layer_specs(n_layers: int) -> list[tuple[int, int]]:
    """(kernel, stride) of every conv: n_layers stride-2, one stride-1, the 1-channel stride-1 head."""
    return [(_K, 2)] * n_layers + [(_K, 1), (_K, 1)]


def receptive_field(n_layers: int = 3) -> int:
    """Side in pixels of the input patch one output logit sees (n_layers=3 → 70)."""
    rf = 1
    for k, s in reversed(_layer_specs(n_layers)):
        rf = (rf - 1) * s + k
    return rf


def output_size(size: int, n_layers: int = 3) -> int:
    """Side of the logits map for a `size`-pixel input (256 → 30, 32 → 2 for n_layers=3)."""
    for k, s in _layer_specs(n_layers):
        size = (size + 2 * _PAD - k) // s + 1
    return size


def min_input_size(n_layers: int = 3) -> int:
    """Smallest input side that still yields a 1x1 logits map (n_layers=3 → 24)."""
    size = 1
    while output_size(size, n_layers) < 1:
        size += 1
    return size


# ----------------------------------------------------------------------------- network


class PatchDiscriminator(nn.Module):
    """pix2pix PatchGAN: C64-C128-C256-C512 (n_layers=3) → 1-channel logits map.

    Args:
        in_ch: input channels (3 RGB, 1 mask, 4 for a conditional (mask, RGB) pair).
        base: channels of the first layer (pix2pix `ndf`); later layers double, capped at 8x.
        n_layers: number of stride-2 convs; 3 gives the 70x70 PatchGAN.
        norm: "batch", "instance" or "none" (no norm on the first layer, as in pix2pix).
        high_pass: the last 3 input channels (the RGB image) also enter a second time as their
            high-pass (`nets.unet.high_pass`, x 4), so the first layer sees the pixel-scale texture
            apart from the colour it rides on.
    """

    def __init__(
        self,
        in_ch: int = 3,
        base: int = 64,
        n_layers: int = 3,
        norm: str = "batch",
        high_pass: bool = False,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"PatchDiscriminator n_layers must be >= 1, got {n_layers}")
        make_norm(norm, 1)  # validates the name
        self.n_layers = n_layers
        self.high_pass = high_pass
        bias = conv_bias(norm)

        # 1. First layer has no norm (pix2pix): normalising raw pixels of real and fake
        #    batches together would leak batch statistics between them.
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch + (3 if high_pass else 0), base, _K, stride=2, padding=_PAD),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        # 2. Stride-2 layers, then one stride-1 layer, channels doubling up to 8x base.
        ch = base
        for n in range(1, n_layers + 1):
            nxt = base * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ch, nxt, _K, stride=stride, padding=_PAD, bias=bias),
                make_norm(norm, nxt),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            ch = nxt
        # 3. One logit per patch.
        layers.append(nn.Conv2d(ch, 1, _K, stride=1, padding=_PAD))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        need = min_input_size(self.n_layers)
        if h < need or w < need:
            raise ValueError(
                f"PatchDiscriminator(n_layers={self.n_layers}) needs inputs of at least "
                f"{need}x{need} px, got {h}x{w}; use fewer layers for small images"
            )
        return self.model(self._input(x))

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, 4 * high_pass(x[:, -3:])], 1) if self.high_pass else x

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The activations after every LeakyReLU (pix2pixHD's feature-matching layers)."""
        out, x = [], self._input(x)
        for layer in self.model:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                out.append(x)
        return out
