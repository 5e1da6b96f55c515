"""Downstream classifiers: the SynCGAN study's ResNet-152 / DenseNet-161 / Inception-V3,
plus ResNet-18 and a small CPU network for laptop-sized budgets.

Offline first: torchvision constructors always get `weights=None`, so nothing is ever
downloaded. ImageNet (or any other) weights are used only when the caller passes a local
`weights_path`; the final layer(s) are then replaced for `num_classes` and every other
tensor must load, or a `CytorayError` names the file and the keys that did not fit.
(`classifier.weights: imagenet` finds torchvision's own file locally and checks its hash first:
cytoray/nets/imagenet.py.)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torchvision
from torch import nn

from ..errors import CytorayError

CLASSIFIERS = ("resnet152", "densenet161", "inception_v3", "resnet18", "smallcnn")

# Smallest input side each network accepts. ResNets/DenseNet downsample by 32 (DenseNet's
# last transition pool fails below it); torchvision's Inception-V3 refuses < 75 px.
_MIN_SIZE = {"resnet152": 32, "densenet161": 32, "inception_v3": 75, "resnet18": 32, "smallcnn": 16}

# Inception's auxiliary head (5x5 avg-pool stride 3, then a 5x5 conv on the 17x17 Mixed_6e
# map) only fits at the native 299 px; measured: every smaller train-mode forward fails.
INCEPTION_AUX_MIN_SIZE = 299

# Final layer(s) replaced for num_classes; their tensors are skipped when shapes differ.
_HEADS = {
    "resnet152": ("fc.",),
    "resnet18": ("fc.",),
    "densenet161": ("classifier.",),
    "inception_v3": ("fc.", "AuxLogits.fc."),
    "smallcnn": ("fc.",),
}


# ----------------------------------------------------------------------------- small CPU net


class SmallCNN(nn.Module):
    """[conv3x3-BN-ReLU x2 → maxpool] x n_blocks → global average pool → dropout → fc.

    Fine at 32–64 px on a CPU; global pooling makes it size-agnostic above 2**n_blocks px.
    """

    def __init__(
        self,
        num_classes: int = 2,
        in_ch: int = 3,
        base: int = 32,
        n_blocks: int = 3,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_ch
        for i in range(n_blocks):
            out = base * 2**i
            for cin in (ch, out):
                layers += [
                    nn.Conv2d(cin, out, 3, padding=1, bias=False),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                ]
            layers.append(nn.MaxPool2d(2))
            ch = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))


# ----------------------------------------------------------------------------- registry


def _check_name(name: str) -> None:
    if name not in CLASSIFIERS:
        raise CytorayError(f"unknown classifier {name!r}; valid names: {', '.join(CLASSIFIERS)}")


def min_image_size(name: str) -> int:
    """Smallest image side in pixels the named classifier accepts."""
    _check_name(name)
    return _MIN_SIZE[name]


def _inception(num_classes: int, image_size: int, transform_input: bool = False) -> nn.Module:
    # aux_logits=True is the paper's training setup, but the aux head cannot run below
    # 299 px, so smaller images train on the main logits only. transform_input: torchvision's
    # ImageNet file is Google's, trained on inputs in [-1, 1]; torchvision turns it on with those
    # weights so that ImageNet-normalised inputs reach the network as it was trained.
    aux = image_size >= INCEPTION_AUX_MIN_SIZE
    return torchvision.models.inception_v3(
        weights=None,
        num_classes=num_classes,
        aux_logits=aux,
        init_weights=True,
        transform_input=transform_input,
    )


_BUILDERS: dict[str, Callable[[int, int], nn.Module]] = {
    "resnet152": lambda n, s: torchvision.models.resnet152(weights=None, num_classes=n),
    "densenet161": lambda n, s: torchvision.models.densenet161(weights=None, num_classes=n),
    "inception_v3": _inception,
    "resnet18": lambda n, s: torchvision.models.resnet18(weights=None, num_classes=n),
    "smallcnn": lambda n, s: SmallCNN(num_classes=n),
}


def build_classifier(
    name: str,
    num_classes: int,
    image_size: int,
    weights_path: str | Path | None = None,
    transform_input: bool = False,
) -> nn.Module:
    """Build a classifier by name with a `num_classes` head, from scratch or local weights.

    Args:
        name: one of `CLASSIFIERS`.
        num_classes: output logits.
        image_size: input side in pixels; checked against `min_image_size(name)`.
        weights_path: optional local state dict (e.g. torchvision ImageNet weights);
            everything but the replaced head must load.
        transform_input: Inception-V3 only, as torchvision sets it with its ImageNet weights
            (`ClassifierConfig.transform_input()`); ignored by the other networks.

    Raises:
        CytorayError: unknown name, too-small images, or an unusable weights file.
    """
    _check_name(name)
    if num_classes < 2:
        raise CytorayError(f"classifier {name!r} needs num_classes >= 2, got {num_classes}")
    if image_size < _MIN_SIZE[name]:
        raise CytorayError(
            f"classifier {name!r} needs images of at least {_MIN_SIZE[name]}x{_MIN_SIZE[name]} px, "
            f"got {image_size}; raise image_size or choose one of {', '.join(CLASSIFIERS)}"
        )
    if name == "inception_v3":
        model = _inception(num_classes, image_size, transform_input)
    else:
        model = _BUILDERS[name](num_classes, image_size)
    if weights_path is not None:
        load_classifier_weights(model, name, weights_path)
    return model


# ----------------------------------------------------------------------------- weights


# torchvision's published DenseNet files use old names ("norm.1" for "norm1"); torchvision's
# own loader rewrites them with this pattern, so a user's downloaded file loads here too.
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _read_state_dict(path: Path, name: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CytorayError(
            f"weights file {path} for classifier {name!r} not found; check weights_path"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, pickled code, not a torch file: all the same to the user
        raise CytorayError(
            f"weights file {path} is not a loadable PyTorch state dict ({type(e).__name__}: {e})"
        ) from e
    # Accept checkpoints that wrap the state dict ({"state_dict": ...} / {"model": ...}).
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CytorayError(
            f"weights file {path} does not hold a state dict of tensors for {name!r}"
        )
    out = {}
    for k, v in obj.items():
        k = k.removeprefix("module.")  # saved from DistributedDataParallel
        if name == "densenet161":
            k = _DENSENET_OLD_KEY.sub(r"\1\2", k)
        out[k] = v
    return out


def load_classifier_weights(model: nn.Module, name: str, weights_path: str | Path) -> None:
    """Load a local state dict into `model`, strict except the replaced final layer(s)."""
    path = Path(weights_path)
    state = _read_state_dict(path, name)
    heads = _HEADS[name]
    own = model.state_dict()
    keep: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        is_head = k.startswith(heads)
        if is_head and (k not in own or own[k].shape != v.shape):
            continue  # a head for another class count: replaced, stays freshly initialised
        if (
            name == "inception_v3"
            and k.startswith("AuxLogits.")
            and not any(o.startswith("AuxLogits.") for o in own)
        ):
            continue  # aux head dropped for < 299 px images
        keep[k] = v
    bad_shape = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in keep.items()
        if k in own and own[k].shape != v.shape
    ]
    if bad_shape:
        raise CytorayError(
            f"weights file {path} does not fit {name!r}: "
            f"shape mismatch at {'; '.join(bad_shape[:3])}"
        )
    result = model.load_state_dict(keep, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(heads)]
    if missing or result.unexpected_keys:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if result.unexpected_keys:
            extra = result.unexpected_keys
            parts.append(f"{len(extra)} unexpected keys (e.g. {', '.join(extra[:3])})")
        raise CytorayError(
            f"weights file {path} does not fit classifier {name!r}: {'; '.join(parts)}"
        )


# ----------------------------------------------------------------------------- outputs


def classifier_logits(model: nn.Module, output: object) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(main logits, aux logits or None) from a classifier's forward output.

    torchvision's Inception-V3 returns `InceptionOutputs(logits, aux_logits)` in train mode
    with its aux head; every other case is a plain tensor. Training adds the aux loss
    (weight 0.4 in the Inception paper) when the second element is not None.
    """
    if isinstance(output, torch.Tensor):
        return output, None
    if isinstance(output, torchvision.models.inception.InceptionOutputs):
        return output.logits, output.aux_logits
    raise TypeError(
        f"{type(model).__name__} returned {type(output).__name__}; "
        "expected a tensor or InceptionOutputs"
    )
