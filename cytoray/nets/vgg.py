"""VGG-19 feature extractor for neural style transfer (Gatys et al. 2016).

The torchvision `vgg19(weights=None)` architecture, cut after the last layer a loss needs.
Layer names follow the paper ("conv4_2" = block 4, conv 2) and denote that conv's ReLU
output, as in Gatys' Caffe model where the ReLUs run in place on the conv blobs.

Offline first: ImageNet weights are used only from a local file the user names (a torchvision
`vgg19` state dict, or its `features.*` part). Without one, the documented fallback is a
random-weight VGG-19 with a fixed seed: random CNN features are a working texture/style
representation (Ustyuzhaninov et al., "What does it take to generate natural textures?",
ICLR 2017; He, Wang & Hopcroft, "A powerful generative model using random weights for the deep
image representation", NeurIPS 2016, who transfer style with an untrained VGG-19). The choice
is returned as a name ("vgg19-imagenet:<path>" | "vgg19-random-seed<k>") that callers put in
their params and figure labels, and the fallback prints a warning line on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import torch
import torchvision
from torch import nn

from ..errors import CytorayError

# torchvision's VGG-19 ("E") feature layout: channel counts, "M" = max pool.
_CFG_E = [
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def layer_names() -> dict[str, int]:
    """'convB_K' → index of its ReLU in `vgg19().features` (e.g. conv4_2 → 22)."""
    names, block, k, idx = {}, 1, 1, 0
    for v in _CFG_E:
        if v == "M":
            block, k, idx = block + 1, 1, idx + 1
        else:
            names[f"conv{block}_{k}"] = idx + 1  # conv at idx, its ReLU at idx + 1
            k, idx = k + 1, idx + 2
    return names


LAYERS = layer_names()


class VGGFeatures(nn.Module):
    """Images in [0, 1] → {layer name: ReLU activation} for the requested layers.

    Args:
        features: torchvision `vgg19().features` (any weights).
        layers: names from `LAYERS` to return.
        pool: "avg" replaces max pooling by average pooling (Gatys et al.: better gradient
            flow, slightly more appealing images) or "max" keeps it.
    """

    def __init__(self, features: nn.Sequential, layers: list[str], pool: str = "avg") -> None:
        super().__init__()
        unknown = [n for n in layers if n not in LAYERS]
        if unknown:
            raise CytorayError(f"unknown VGG-19 layer(s) {unknown}; valid: {', '.join(LAYERS)}")
        if pool not in ("avg", "max"):
            raise CytorayError(f"pool must be 'avg' or 'max', got {pool!r}")
        last = max(LAYERS[n] for n in layers)
        mods = []
        for m in list(features)[: last + 1]:
            if isinstance(m, nn.MaxPool2d) and pool == "avg":
                m = nn.AvgPool2d(kernel_size=2, stride=2)
            if isinstance(m, nn.ReLU):
                m = nn.ReLU(inplace=False)  # in-place would overwrite activations a loss keeps
            mods.append(m)
        self.body = nn.Sequential(*mods)
        self.wanted = {LAYERS[n]: n for n in layers}
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (x - self.mean) / self.std
        out = {}
        for i, m in enumerate(self.body):
            x = m(x)
            if i in self.wanted:
                out[self.wanted[i]] = x
        return out


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CytorayError(
            f"VGG-19 weights file {path} not found; set "
            "nst.vgg_weights to a local torchvision vgg19 state dict"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, pickled code, not a torch file
        raise CytorayError(
            f"VGG-19 weights file {path} is not a loadable "
            f"PyTorch state dict ({type(e).__name__}: {e})"
        ) from e
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise CytorayError(f"VGG-19 weights file {path} does not hold a state dict")
    out = {}
    for k, v in obj.items():
        k = k.removeprefix("module.")
        if k.startswith("features."):
            out[k.removeprefix("features.")] = v
        elif k[:1].isdigit():  # a bare `features` state dict
            out[k] = v
    return out


def random_features_name(seed: int) -> str:
    return f"vgg19-random-seed{seed}"


def random_vgg19_features(layers: list[str], pool: str = "avg", seed: int = 0) -> VGGFeatures:
    """A random-weight VGG-19 drawn with `seed` (no notice printed: callers label it themselves).

    Prefer `cytoray.nets.inception_features.real_features`, which refuses these unless asked.
    """
    with torch.random.fork_rng(devices=[]):  # a fixed draw that leaves the caller's RNG alone
        torch.manual_seed(seed)
        net = torchvision.models.vgg19(weights=None)
    return VGGFeatures(net.features, layers, pool)


def vgg19_features(
    weights: str | Path | None, layers: list[str], pool: str = "avg", seed: int = 0
) -> tuple[VGGFeatures, str]:
    """(feature extractor, its name for params and labels).

    `weights` = a local torchvision VGG-19 state dict (or "imagenet": torchvision's file in the
    torch cache, hash-checked) → ImageNet features, named "vgg19-imagenet:<path>"; None → random weights drawn with `seed` (the documented fallback,
    warned on stderr), named "vgg19-random-seed<seed>". Kept for the current NST generator;
    new callers use `inception_features.real_features`, where random features must be asked for.
    """
    if weights is None:
        name = random_features_name(seed)
        print(
            "WARNING: nst.vgg_weights not set: neural style transfer uses "
            f"random-weight VGG-19 features ({name}), not ImageNet ones; point "
            "nst.vgg_weights at a local vgg19 state dict for the paper's setup",
            file=sys.stderr,
            flush=True,
        )
        return random_vgg19_features(layers, pool, seed), name
    if (
        str(weights) == "imagenet"
    ):  # torchvision's vgg19 file from the torch cache, hash-checked (nets/imagenet.py)
        from .imagenet import find_imagenet

        weights = find_imagenet("vgg19", key="nst.vgg_weights")
    path = Path(weights)
    state = _read_weights(path)
    net = torchvision.models.vgg19(weights=None)
    last = max(LAYERS[n] for n in layers)
    need = {k: v for k, v in net.features.state_dict().items() if int(k.split(".")[0]) <= last}
    missing = [k for k in need if k not in state]
    bad = [k for k in need if k in state and state[k].shape != need[k].shape]
    if missing or bad:
        what = f"missing {missing[:3]}" if missing else f"shape mismatch at {bad[:3]}"
        raise CytorayError(
            f"VGG-19 weights file {path} does not fit torchvision vgg19 features ({what})"
        )
    net.features.load_state_dict({**net.features.state_dict(), **{k: state[k] for k in need}})
    return VGGFeatures(net.features, layers, pool), f"vgg19-imagenet:{path.resolve()}"
