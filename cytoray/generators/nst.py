"""Neural style transfer (Gatys, Ecker & Bethge, CVPR 2016): histology content, cytology style.

The image itself is optimised with L-BFGS to match the content image's activations at one
layer and the style image's Gram matrices at several:

    L(x) = α · Σ_content MSE(F_l(x), F_l(c)) + β · Σ_style MSE(Gram_l(x), Gram_l(s)),
    Gram_l(x) = F_l F_lᵀ / (C_l·H_l·W_l)

F are real pretrained features that need no network: by default the stages of the FID
InceptionV3 (SHA-1 verified, shipped in a wheel; `nets/inception_features.py`), or ImageNet
VGG-19 from a local file. Random-weight features are refused unless explicitly allowed for
debugging, and are then labelled in every output. Starting from the content image (not noise)
keeps the layout and needs far fewer L-BFGS steps, which matters on a CPU.

No training stage: `train()` records, per class, the cytology training images (styles) and
the histology training images (contents) in the bundle; `sample(n, cls, seed)` stylises n
histology images of class `cls`, each with a seeded cytology style image of the same class.
The features are named in the bundle meta (`features`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import torch

from ..bundle import load_arrays, npz_bytes, read_bundle
from ..errors import ConfigError, CytorayError
from ..nets.vgg import LAYERS
from .base import Generator, GeneratorConfig
from .domains import DomainPair, check_domains

IMAGES_FILE = "nst_images.npz"


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass
class NSTConfig(GeneratorConfig):
    """Gatys style transfer (keys and reasons: configs/models/nst.yaml)."""

    name: str = "nst"
    # real pretrained features offline: the verified FID InceptionV3
    features: Literal["inception", "vgg19", "random"] = "inception"
    content_weight: float = 1.0  # α (Gatys: α/β ratios of 1e-3 … 1e-4 under their normalisation)
    # β under Gram / (C·H·W); null = the features' own (Inception 1e4, VGG 1e6)
    style_weight: float | None = None
    # L-BFGS iterations per image batch; 30–50 suffice at 32–64 px from the content image
    steps: int = 40
    # null = the features' own (Inception Mixed_5c, VGG conv4_2 as Gatys)
    content_layer: str | None = None
    # null = the features' own (one per resolution, like Gatys' convK_1)
    style_layers: list[str] | None = None
    pool: Literal["avg", "max"] = "avg"  # VGG only; Gatys: average pooling gives better gradients
    # features=vgg19: a local torchvision vgg19 state dict (ImageNet); nothing downloads
    vgg_weights: str | None = None
    random_seed: int = 0  # features=random (debugging only): seed of the random-weight VGG-19
    # random features are refused unless set (debugging only; labelled in every output)
    allow_random_features: bool = False
    batch: int = 16  # images optimised together (independent objectives, one L-BFGS)

    def validate(self) -> None:
        from ..nets.inception_features import ALLOW_RANDOM_FLAG
        from ..nets.inception_features import LAYERS as INCEPTION_LAYERS

        for k in ("steps", "batch"):
            if getattr(self, k) < 1:
                raise ConfigError(f"nst.{k}={getattr(self, k)}: must be >= 1")
        if self.content_weight < 0 or (self.style_weight is not None and self.style_weight < 0):
            raise ConfigError("nst.content_weight and nst.style_weight must be >= 0")
        if self.features == "random" and not self.allow_random_features:
            raise ConfigError(
                "nst.features=random: random-weight features are for debugging "
                "only (their FID would sit next to real methods); use inception "
                f"(offline) or vgg19 with vgg_weights, or pass {ALLOW_RANDOM_FLAG}"
            )
        if self.features == "vgg19" and not self.vgg_weights:
            raise ConfigError(
                "nst.features=vgg19 needs nst.vgg_weights (a local "
                "ImageNet VGG-19 state dict); nothing is downloaded"
            )
        valid = INCEPTION_LAYERS if self.features == "inception" else LAYERS
        content, style = self.layers()
        bad = [n for n in [content, *style] if n not in valid]
        if bad:
            raise ConfigError(
                f"nst layers {bad} are not {self.features} layers (valid: {', '.join(valid)})"
            )
        if not style:
            raise ConfigError("nst.style_layers: give at least one layer")

    def layers(self) -> tuple[str, list[str]]:
        """(content layer, style layers): the configured ones, else the features' own."""
        from ..nets.inception_features import default_layers

        content, style = default_layers(self.features)
        return self.content_layer or content, list(
            self.style_layers
        ) if self.style_layers is not None else style

    def beta(self) -> float:
        """The style weight: the configured one, else the features' own."""
        from ..nets.inception_features import STYLE_WEIGHT

        return (
            self.style_weight
            if self.style_weight is not None
            else (STYLE_WEIGHT if self.features == "inception" else 1e6)
        )


def build_features(cfg: NSTConfig) -> tuple[torch.nn.Module, str]:
    """(feature module, identity): real features, or random ones only when explicitly allowed."""
    from ..nets.inception_features import real_features

    content, style = cfg.layers()
    return real_features(
        cfg.features,
        [content, *style],
        vgg_weights=cfg.vgg_weights,
        allow_random=cfg.allow_random_features,
        pool=cfg.pool,
        seed=cfg.random_seed,
    )


# ----------------------------------------------------------------------------- optimisation


def gram(f: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] → [B, C, C] Gram matrices normalised by C·H·W."""
    b, c, h, w = f.shape
    x = f.reshape(b, c, h * w)
    return torch.bmm(x, x.transpose(1, 2)) / (c * h * w)


def _per_image_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image, summed over the batch: each image keeps its own objective."""
    return (a - b).pow(2).flatten(1).mean(1).sum()


def stylise(
    content: np.ndarray, style: np.ndarray, feats: torch.nn.Module, cfg: NSTConfig
) -> tuple[np.ndarray, list[dict]]:
    """uint8 content [n,S,S,3] rendered in the style of uint8 style [n,S,S,3] (pairwise).

    Returns the uint8 results and the loss history of every L-BFGS evaluation
    ({"batch", "content", "style", "total"}).
    """
    if content.shape != style.shape:
        raise CytorayError(
            f"stylise: content {content.shape} and style {style.shape} must have one shape"
        )
    outs, history = [], []
    (content_layer, style_layers), beta = cfg.layers(), cfg.beta()
    for start in range(0, len(content), cfg.batch):
        c = (
            torch.from_numpy(content[start : start + cfg.batch])
            .permute(0, 3, 1, 2)
            .contiguous()
            .float()
            / 255
        )
        s = torch.from_numpy(style[start : start + cfg.batch]).permute(0, 3, 1, 2).float() / 255
        # 1. Targets: content activations and style Gram matrices (fixed).
        with torch.no_grad():
            target_c = feats(c)[content_layer]
            fs = feats(s)
            target_s = {n: gram(fs[n]) for n in style_layers}
        # 2. The image is the variable, started from the content image.
        x = c.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([x], lr=1.0, max_iter=cfg.steps, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            f = feats(x)
            lc = _per_image_mse(f[content_layer], target_c)
            ls = sum(_per_image_mse(gram(f[n]), target_s[n]) for n in style_layers)
            loss = cfg.content_weight * lc + beta * ls
            loss.backward()
            history.append(
                {
                    "batch": start // cfg.batch,
                    "content": lc.item(),
                    "style": ls.item(),
                    "total": loss.item(),
                }
            )
            return loss

        # 3. L-BFGS on the pixels (strong-Wolfe line search: no step size to tune), then clamp
        # to the displayable range once at the end (clamping inside
        # would break L-BFGS's curvature pairs).
        opt.step(closure)
        outs.append((x.detach().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy())
    return (np.concatenate(outs) if outs else np.zeros((0, *content.shape[1:]), np.uint8)), history


# ----------------------------------------------------------------------------- generator


class NST(Generator):
    """Per-class style transfer: histology of class c in the style of cytology of class c."""

    name, Config, consumes = "nst", NSTConfig, "domains"

    def __init__(
        self,
        content: dict[str, np.ndarray],
        style: dict[str, np.ndarray],
        cfg: NSTConfig,
        meta: dict,
    ) -> None:
        self.content, self.style, self.cfg, self.meta = content, style, cfg, meta
        self.classes = list(meta["classes"])
        # random features: only when allowed, warned and labelled
        self.feats, self.features = build_features(cfg)

    @classmethod
    def check(cls, train: DomainPair, val: DomainPair, cfg: NSTConfig) -> None:
        check_domains(train.source, train.target, 2)

    @classmethod
    def assemble(cls, train: DomainPair, cfg: NSTConfig, results: dict, data_key: str):
        """No optimisation here: record contents and styles per class, and the features' identity."""
        features = build_features(cfg)[
            1
        ]  # a bad weights file or refused random features fail here, before any image
        names = train.source.class_names
        arrays = {
            f"content_{n}": train.source.images[train.source.labels == c]
            for c, n in enumerate(names)
        }
        arrays.update(
            {
                f"style_{n}": train.target.images[train.target.labels == c]
                for c, n in enumerate(names)
            }
        )
        meta = {
            "classes": list(names),
            "size": int(train.source.images.shape[1]),
            "features": features,
            "nst": dataclasses.asdict(cfg),
            "images": IMAGES_FILE,
        }
        return meta, {}, {IMAGES_FILE: npz_bytes(**arrays)}

    @classmethod
    def load(cls, path) -> NST:
        meta, path = read_bundle(path)
        with load_arrays(path / meta["images"]) as z:
            content = {n: z[f"content_{n}"] for n in meta["classes"]}
            style = {n: z[f"style_{n}"] for n in meta["classes"]}
        return cls(content, style, NSTConfig(**meta["nst"]), meta)

    def translate(self, images: np.ndarray, cls: str, seed: int = 0) -> np.ndarray:
        """uint8 histology of class `cls` → stylised with seeded cytology styles of that class."""
        self.check_class(cls)
        pick = np.random.default_rng(seed).integers(0, len(self.style[cls]), len(images))
        out, _ = stylise(images, self.style[cls][pick], self.feats, self.cfg)
        return out

    def display_name(self) -> str:
        # which features styled it (random ones are labelled in every output)
        return f"NST [{self.features}]"

    def sample(self, n: int, cls: str, seed: int = 0) -> tuple[np.ndarray, None]:
        """n stylised images of class `cls`: training histology drawn with replacement (seeded)."""
        self.check_class(cls)
        idx = np.random.default_rng(seed).integers(0, len(self.content[cls]), n)
        return self.translate(self.content[cls][idx], cls, seed + 1), None
