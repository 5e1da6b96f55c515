"""UNet generator (mask → RGB) and latent generators (z → mask, z → RGB).

SynCGAN §3.3–3.4 replaces the pix2pix UNet's transposed convolutions with bilinear
upsampling followed by a 3x3 convolution: transposed convolutions with stride 2 and
kernel 4 overlap unevenly and leave checkerboard artifacts. Every generator in this
package upsamples with the same `UpBlock`, so no `ConvTranspose` appears anywhere.

Layout follows pix2pix (`UnetGenerator`, `UnetSkipConnectionBlock`) written as explicit
encoder/decoder lists instead of recursion, in post-activation form (conv → norm → act):

    encoder  e0 = conv4x4/2(x)                               no norm on the outermost layer
             e_i = LReLU(norm(conv4x4/2(e_{i-1})))           i = 1 .. depth-2
             e_inner = LReLU(conv4x4/2(e_{depth-2}))         no norm: the map may be 1x1
    decoder  d = UpBlock(e_inner)
             d = UpBlock(cat(e_i, d))                        dropout in the blocks just
             out = act(conv3x3(up(cat(e0, d))))              below the innermost one

That output layer sees nothing finer than the half-resolution level e0: every output pixel is a
3x3 mix of bilinearly upsampled features, so the image is as smooth as one downsampled x2 and
upsampled again (on real Pap cells at 64 px that alone costs KID ~0.06, more than the distance
between the two real classes). `full_res > 0` adds a path at full resolution:

    stem   s = LReLU(conv3x3(LReLU(conv3x3(cat(x, noise)))))   `noise` channels of N(0, 1) per pixel
    head   h = ReLU(norm(conv3x3(up(cat(e0, d)))))
    out    = act(conv3x3(ReLU(conv3x3(cat(h, s)))))

The noise is the generator's source of texture (chromatin, glass grain) that a flat label map does
not determine; unlike dropout it stays on in eval mode. A caller may pass it (`forward(x, noise)`:
the CGAN stage draws it from the stage's generator, as it draws z and the augmentation, so a
checkpoint resumes the same stream and 2 DDP workers draw the rows 1 worker would); otherwise it comes
from torch's global generator, so seed that to sample reproducibly (`torch.random.fork_rng`).
"""

from __future__ import annotations

import torch
from torch import nn

NORMS = ("batch", "instance", "none")


# ----------------------------------------------------------------------------- shared pieces


def make_norm(kind: str, ch: int) -> nn.Module:
    """A 2-d normalisation layer by name ("batch", "instance" or "none").

    Instance norm is affine-free with no running statistics, as in pix2pix/CycleGAN: the
    convolution before it keeps its bias instead.
    """
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "instance":
        return nn.InstanceNorm2d(ch, affine=False, track_running_stats=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


def conv_bias(norm: str) -> bool:
    """BatchNorm has its own shift, so the preceding conv needs no bias (pix2pix `use_bias`)."""
    return norm != "batch"


def _check_act(out_act: str) -> None:
    if out_act not in ("tanh", "none"):
        raise ValueError(f"out_act must be 'tanh' or 'none', got {out_act!r}")


class UpBlock(nn.Sequential):
    """Bilinear x2 upsample → 3x3 conv → norm → [dropout] → ReLU.

    The decoder block shared by the UNet, the latent generators and the CycleGAN
    ResNet generator. `align_corners=False` keeps pixel centres fixed, so repeated
    upsampling does not drift the image towards one corner.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        norm: str = "batch",
        dropout: float = 0.0,
        padding_mode: str = "zeros",
    ) -> None:
        layers: list[nn.Module] = [
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=conv_bias(norm), padding_mode=padding_mode),
            make_norm(norm, out_ch),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def _out_act(out_act: str) -> nn.Module:
    return nn.Tanh() if out_act == "tanh" else nn.Identity()


def binomial_blur(x: torch.Tensor) -> torch.Tensor:
    """A fixed binomial low-pass, [1, 2, 1] x [1, 2, 1] / 16 per channel (a Gaussian of σ ~0.7 px),
    same size out (reflected border)."""
    k = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype)
    w = (k[:, None] * k[None, :] / 16).expand(x.shape[1], 1, 3, 3)
    return nn.functional.conv2d(
        nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"), w, groups=x.shape[1]
    )


class Blur(nn.Module):
    """`binomial_blur` as a layer. No parameters and no state: adding one leaves a state dict as it
    was."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return binomial_blur(x)


def high_pass(x: torch.Tensor) -> torch.Tensor:
    """What `binomial_blur` removes: the image minus its low-pass (the pixel-scale texture)."""
    return x - binomial_blur(x)


# ----------------------------------------------------------------------------- UNet


def unet_depth(size: int) -> int:
    """Number of stride-2 levels for a `size`-pixel input: log2(size) capped at 8.

    256 → 8 (the pix2pix `unet_256`), 64 → 6, 32 → 5. For a size that is not a power of
    two, the number of times it halves evenly (96 → 5), so `size % 2**depth == 0` holds.
    """
    if size < 2 or size % 2:
        raise ValueError(f"UNet input size must be an even number of pixels >= 2, got {size}")
    depth = 0
    while size % 2 == 0 and depth < 8:
        size //= 2
        depth += 1
    return depth


class UNet(nn.Module):
    """pix2pix UNet with bilinear-upsample decoders (SynCGAN mask → RGB generator).

    Args:
        in_ch: input channels (1 for a binary nucleus mask).
        out_ch: output channels (3 for RGB).
        base: channels of the outermost encoder layer (pix2pix `ngf`).
        depth: number of stride-2 levels; inputs must be divisible by 2**depth
            (use `unet_depth(size)`).
        max_ch: channel cap for the deep levels (pix2pix: ngf * 8).
        norm: "batch" or "instance" (or "none").
        dropout: dropout rate in up to `n_dropout` decoder blocks just below the innermost one
            (pix2pix's source of noise in the conditional GAN).
        out_act: "tanh" for images in [-1, 1], "none" for raw outputs.
        n_dropout: how many decoder blocks carry dropout (pix2pix: 3).
        full_res: channels of a path at full resolution into the output layer (0: pix2pix's layout).
        noise: per-pixel N(0, 1) channels fed to that path (needs full_res > 0).
        out_blur: a fixed binomial low-pass (`Blur`) before the output activation, so G cannot
            paint texture finer than ~1.5 px (needs full_res > 0).
    """

    def __init__(
        self,
        in_ch: int = 1,
        out_ch: int = 3,
        base: int = 64,
        depth: int = 6,
        max_ch: int = 512,
        norm: str = "batch",
        dropout: float = 0.5,
        out_act: str = "tanh",
        n_dropout: int = 3,
        full_res: int = 0,
        noise: int = 0,
        out_blur: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"UNet depth must be >= 1, got {depth}")
        if out_blur and not full_res:
            raise ValueError(
                "UNet out_blur needs full_res > 0 (it filters that path's output layer)"
            )
        if full_res < 0 or noise < 0 or (noise and not full_res):
            raise ValueError(
                f"UNet full_res={full_res}, noise={noise}: both >= 0, and noise needs full_res > 0"
            )
        make_norm(norm, 1)  # validates the name before any layer is built
        _check_act(out_act)
        self.depth = depth
        chs = [min(base * 2**i, max_ch) for i in range(depth)]
        bias = conv_bias(norm)

        # 1. Encoder. The innermost level has no norm: its map is 1x1 at full depth, where
        #    BatchNorm with batch 1 in train mode fails and InstanceNorm is undefined.
        self.down = nn.ModuleList()
        for i, ch in enumerate(chs):
            cin = in_ch if i == 0 else chs[i - 1]
            outer, inner = i == 0, i == depth - 1
            layers: list[nn.Module] = [
                nn.Conv2d(cin, ch, 4, stride=2, padding=1, bias=bias or outer or inner)
            ]
            if not (outer or inner):
                layers.append(make_norm(norm, ch))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            self.down.append(nn.Sequential(*layers))

        # 2. Decoder, innermost first. Block j takes level (depth-1-j) and produces the
        #    channels of the next skip it is concatenated with. Dropout skips the innermost
        #    block (as pix2pix) and never reaches the output layer.
        self.up = nn.ModuleList()
        for j in range(depth - 1):
            level = depth - 1 - j
            cin = chs[level] if j == 0 else 2 * chs[level]
            drop = dropout if 1 <= j <= n_dropout else 0.0
            self.up.append(UpBlock(cin, chs[level - 1], norm=norm, dropout=drop))

        # 3. Output layer: same upsample + 3x3 conv, no norm, bounded
        # activation; with a full-resolution
        #    path, the upsampled features meet the stem's before two 3x3 convolutions.
        self.noise = noise
        head_in = chs[0] if depth == 1 else 2 * chs[0]
        if full_res:
            self.stem = nn.Sequential(
                nn.Conv2d(in_ch + noise, full_res, 3, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(full_res, full_res, 3, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
            )
            self.head = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(head_in, chs[0], 3, padding=1, bias=bias),
                make_norm(norm, chs[0]),
                nn.ReLU(inplace=True),
            )
            self.out = nn.Sequential(
                nn.Conv2d(chs[0] + full_res, chs[0], 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(chs[0], out_ch, 3, padding=1),
                *([Blur()] if out_blur else []),  # no parameters: the keys stay those without it
                _out_act(out_act),
            )
        else:
            self.stem = self.out = None
            self.head = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(head_in, out_ch, 3, padding=1),
                _out_act(out_act),
            )

    def noise_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        """The shape of the per-pixel noise `forward` takes with input `x` (empty when there is none)."""
        return (x.shape[0], self.noise, *x.shape[-2:]) if self.noise else ()

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        h, w = x.shape[-2:]
        k = 2**self.depth
        if h % k or w % k:
            raise ValueError(
                f"UNet(depth={self.depth}) needs H and W divisible by {k}, got {h}x{w}; "
                f"resize the images or use depth=unet_depth(size)"
            )
        stem = None
        if self.stem is not None:
            inp = x
            if self.noise:
                if noise is None:
                    noise = torch.randn(self.noise_shape(x), device=x.device, dtype=x.dtype)
                elif tuple(noise.shape) != self.noise_shape(x):
                    raise ValueError(
                        f"UNet noise of shape {tuple(noise.shape)}, expected {self.noise_shape(x)}"
                    )
                inp = torch.cat([x, noise.to(x.device, x.dtype)], 1)
            stem = self.stem(inp)
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            x = block(x)
            x = torch.cat([skips.pop(), x], dim=1)
        x = self.head(x)
        return x if stem is None else self.out(torch.cat([x, stem], 1))


# ----------------------------------------------------------------------------- latent generators


def _start_side(out_size: int) -> tuple[int, int]:
    """Split `out_size` into start side (4..7) x 2**n_up; DCGAN-style 4x4 start for powers of 2."""
    side, n_up = out_size, 0
    while side > 7 and side % 2 == 0:
        side //= 2
        n_up += 1
    if not 4 <= side <= 7 or n_up < 1:
        raise ValueError(
            f"latent generator out_size must be s * 2**k with 4 <= s <= 7 and k >= 1 "
            f"(e.g. 32, 48, 64, 128, 256), got {out_size}"
        )
    return side, n_up


class LatentGenerator(nn.Module):
    """z ~ N(0, I) → image: Linear → (C, s, s) → [UpBlock] x n → 3x3 conv → activation.

    The SynCGAN mask GAN generator (1 channel, logits) and the end-to-end RGB GAN control
    (3 channels, tanh) share this body, so the two differ only where the paper says so.

    Args:
        z_dim: latent size.
        out_size: output side in pixels (32, 64, 128, 256, ...).
        out_ch: output channels.
        base: channels at the output resolution; doubled per level going inwards.
        max_ch: channel cap.
        out_act: "tanh" or "none" (logits).
    """

    def __init__(
        self,
        z_dim: int = 128,
        out_size: int = 64,
        out_ch: int = 3,
        base: int = 64,
        max_ch: int = 512,
        out_act: str = "tanh",
    ) -> None:
        super().__init__()
        _check_act(out_act)
        side, n_up = _start_side(out_size)
        self.z_dim, self.out_size, self._side = z_dim, out_size, side
        chs = [min(base * 2 ** (n_up - j), max_ch) for j in range(n_up + 1)]
        self._ch0 = chs[0]
        # 1. Project z to the starting feature map; BN over the (C, s, s) map keeps the
        #    projected activations on the scale the first conv expects.
        self.project = nn.Linear(z_dim, chs[0] * side * side, bias=False)
        self.project_norm = nn.Sequential(nn.BatchNorm2d(chs[0]), nn.ReLU(inplace=True))
        # 2. Same decoder block as the UNet, one per doubling.
        self.blocks = nn.Sequential(
            *[UpBlock(chs[j], chs[j + 1], norm="batch") for j in range(n_up)]
        )
        # 3. Output conv at full resolution.
        self.head = nn.Sequential(nn.Conv2d(chs[-1], out_ch, 3, padding=1), _out_act(out_act))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"expected z of shape [B, {self.z_dim}], got {list(z.shape)}")
        x = self.project(z).view(z.shape[0], self._ch0, self._side, self._side)
        return self.head(self.blocks(self.project_norm(x)))

    def sample_latent(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n latent vectors z ~ N(0, I) on this module's device (seedable via `generator`)."""
        device = next(self.parameters()).device
        return torch.randn(n, self.z_dim, generator=generator, device=device)


class MaskGenerator(LatentGenerator):
    """SynCGAN mask GAN generator: z → 1-channel mask logits (threshold when sampling), or
    `out_ch` label logits of a label map (argmax when sampling)."""

    def __init__(
        self,
        z_dim: int = 128,
        out_size: int = 64,
        base: int = 64,
        max_ch: int = 512,
        out_ch: int = 1,
    ) -> None:
        super().__init__(
            z_dim=z_dim, out_size=out_size, out_ch=out_ch, base=base, max_ch=max_ch, out_act="none"
        )


class VanillaGenerator(LatentGenerator):
    """End-to-end RGB GAN control (SynCGAN Tab. 3 "GAN"): z → image in [-1, 1]."""

    def __init__(
        self,
        z_dim: int = 128,
        out_size: int = 64,
        out_ch: int = 3,
        base: int = 64,
        max_ch: int = 512,
    ) -> None:
        super().__init__(
            z_dim=z_dim, out_size=out_size, out_ch=out_ch, base=base, max_ch=max_ch, out_act="tanh"
        )


def count_params(module: nn.Module) -> int:
    """Number of trainable parameters (reported in run params)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
