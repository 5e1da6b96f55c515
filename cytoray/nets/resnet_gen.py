"""CycleGAN ResNet generator (Johnson et al., as in pytorch-CycleGAN-and-pix2pix).

Reflection padding (no zero borders for the residual blocks to learn around), two stride-2
downsamples, `n_blocks` residual blocks at 1/4 resolution, and two upsamples. The upsamples
use the package's bilinear + 3x3 conv `UpBlock` instead of transposed convolutions, for the
same checkerboard reason as the SynCGAN UNet.
"""

from __future__ import annotations

import torch
from torch import nn

from .unet import UpBlock, conv_bias, make_norm

# ----------------------------------------------------------------------------- blocks


class ResnetBlock(nn.Module):
    """x + [pad → conv3x3 → norm → ReLU → (dropout) → pad → conv3x3 → norm](x)."""

    def __init__(self, ch: int, *, norm: str = "instance", dropout: float = 0.0) -> None:
        super().__init__()
        bias = conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(ch, ch, 3, bias=bias),
            make_norm(norm, ch),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=bias), make_norm(norm, ch)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


# ----------------------------------------------------------------------------- generator


class ResnetGenerator(nn.Module):
    """CycleGAN generator G: A → B (and F: B → A), images in [-1, 1].

    Args:
        in_ch / out_ch: image channels.
        base: channels after the stem (CycleGAN `ngf`); 2x and 4x after the downsamples.
        n_blocks: residual blocks (CycleGAN: 6 for 128 px, 9 for 256 px).
        norm: "instance" (CycleGAN default), "batch" or "none".
        dropout: dropout inside the residual blocks (CycleGAN default: none).
    """

    n_down = 2

    def __init__(
        self,
        in_ch: int = 3,
        out_ch: int = 3,
        base: int = 64,
        n_blocks: int = 6,
        norm: str = "instance",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        make_norm(norm, 1)  # validates the name
        bias = conv_bias(norm)
        # 1. Stem: 7x7 conv over a reflected border keeps the full-resolution context.
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_ch, base, 7, bias=bias),
            make_norm(norm, base),
            nn.ReLU(inplace=True),
        ]
        # 2. Two stride-2 downsamples.
        ch = base
        for _ in range(self.n_down):
            layers += [
                nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1, bias=bias),
                make_norm(norm, ch * 2),
                nn.ReLU(inplace=True),
            ]
            ch *= 2
        # 3. Residual blocks at 1/4 resolution.
        layers += [ResnetBlock(ch, norm=norm, dropout=dropout) for _ in range(n_blocks)]
        # 4. Bilinear + 3x3 conv upsamples (reflect padding, matching the rest of the net).
        for _ in range(self.n_down):
            layers.append(UpBlock(ch, ch // 2, norm=norm, padding_mode="reflect"))
            ch //= 2
        # 5. Output: 7x7 conv to image channels, tanh.
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_ch, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        k = 2**self.n_down
        if h % k or w % k:
            raise ValueError(f"ResnetGenerator needs H and W divisible by {k}, got {h}x{w}")
        return self.model(x)
