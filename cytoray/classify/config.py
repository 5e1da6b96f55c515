"""Classifier and augmentation configs: every key has a default and a one-line reason.

`ClassifierConfig.validate()` rejects what can be rejected without data (unknown network,
non-positive budgets, a weights file that is not there); `check_size(data_size)` rejects a
network that cannot take the images (e.g. Inception-V3 below 75 px) before any job starts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from ..config import ConfigError, flatten, to_dict


@dataclasses.dataclass
class AugmentConfig:
    """Traditional augmentation (SynCGAN Tab. 2 "Trad"): flips, rotation, Gaussian noise."""

    hflip: float = 0.5  # probability of a horizontal flip (paper: random horizontal flips)
    vflip: float = 0.5  # probability of a vertical flip (paper: random vertical flips)
    rot90: bool = True  # random multiple of 90 degrees: smears have no "up", and it is lossless
    max_angle: float = 15.0  # extra rotation drawn from [-max_angle, max_angle] degrees; 0 = off
    # Gaussian noise std as a fraction of the intensity range (~8 of 255 levels)
    noise_std: float = 0.03

    def validate(self) -> None:
        for k in ("hflip", "vflip"):
            p = getattr(self, k)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"augment.{k}={p}: a probability must lie in [0, 1]")
        if not 0.0 <= self.max_angle <= 180.0:
            raise ConfigError(f"augment.max_angle={self.max_angle}: must lie in [0, 180] degrees")
        if not 0.0 <= self.noise_std <= 0.5:
            raise ConfigError(
                f"augment.noise_std={self.noise_std}: must lie in [0, 0.5] (fraction of the range)"
            )


@dataclasses.dataclass
class ClassifierConfig:
    """One downstream classifier run (SynCGAN §4: ResNet-152, DenseNet-161, Inception-V3)."""

    # one of cytoray.nets.classifiers.CLASSIFIERS; smallcnn for CPU smoke runs
    name: str = "resnet18"
    # the best epoch is chosen on validation, so extra epochs cost time, not test accuracy
    epochs: int = 30
    batch_size: int = 16  # 90 real + 180 synthetic images → ~17 steps an epoch
    lr: float = 1e-3  # Adam default; fine from scratch on small sets
    weight_decay: float = 1e-4  # mild regularisation for 90-image training sets
    optimizer: Literal["adam", "adamw"] = "adam"  # adam: L2 in the gradient; adamw: decoupled decay
    # network input side; None = the data's size (resized on the device otherwise)
    image_size: int | None = None
    # local ImageNet state dict; None trains from scratch (nothing downloads)
    weights_path: str | None = None
    # imagenet: torchvision's file, found locally and hash-checked
    weights: Literal["scratch", "imagenet"] = "scratch"
    # weights=imagenet: a folder searched before the torch cache ($TORCH_HOME/hub/checkpoints)
    weights_dir: str | None = None
    # per-batch flips/rotation/noise on the device (on top of any policy)
    online_augment: bool = False
    label_smoothing: float = 0.0  # cross-entropy label smoothing; 0 = plain CE as in the paper
    # Inception-V3 auxiliary-logit loss weight (Szegedy et al.); used at >= 299 px
    aux_weight: float = 0.4
    # shuffle: policies are class-balanced by construction
    sampler: Literal["shuffle", "balanced"] = "shuffle"
    eval_batch_size: int = 64  # inference batch for validation/test (no gradients, so larger)
    # online augment settings
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)

    def validate(self) -> None:
        from ..nets.classifiers import CLASSIFIERS

        if self.name not in CLASSIFIERS:
            raise ConfigError(
                f"classifier.name={self.name!r}: unknown network (valid: {', '.join(CLASSIFIERS)})"
            )
        for k in ("epochs", "batch_size", "lr", "eval_batch_size"):
            if getattr(self, k) <= 0:
                raise ConfigError(f"classifier.{k}={getattr(self, k)}: must be > 0")
        if self.batch_size < 2:
            raise ConfigError(
                f"classifier.batch_size={self.batch_size}: BatchNorm needs batches of at least 2"
            )
        if self.weight_decay < 0 or self.aux_weight < 0:
            raise ConfigError("classifier.weight_decay and classifier.aux_weight must be >= 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(
                f"classifier.label_smoothing={self.label_smoothing}: must lie in [0, 1)"
            )
        if self.image_size is not None:
            self.check_size(self.image_size)
        if self.weights_path is not None and not Path(self.weights_path).is_file():
            raise ConfigError(
                f"classifier.weights_path={self.weights_path}: file not "
                "found; point it to a local state dict (e.g. torchvision's "
                "ImageNet .pth) or set it to null to train from scratch"
            )
        if self.weights not in ("scratch", "imagenet"):
            raise ConfigError(f"classifier.weights={self.weights!r}: scratch or imagenet")
        if self.weights == "imagenet" and self.weights_path is not None:
            raise ConfigError(
                "classifier.weights=imagenet and classifier.weights_path "
                "both name weights; keep one (weights_path: a file of your "
                "own; weights: imagenet: torchvision's file, hash-checked)"
            )
        if self.weights_dir is not None and not Path(self.weights_dir).expanduser().is_dir():
            raise ConfigError(
                f"classifier.weights_dir={self.weights_dir}: no such folder; "
                "name the folder that holds torchvision's <network>-<hash>.pth "
                "files, or set it to null (the torch cache is searched)"
            )
        self.weights_file()  # weights=imagenet: found and verified now, before any job starts
        self.augment.validate()

    def check_size(self, data_size: int) -> int:
        """The network's input side for images of `data_size` px; ConfigError if it cannot take it."""
        from ..nets.classifiers import min_image_size

        size = int(self.image_size or data_size)
        need = min_image_size(self.name)
        if size < need:
            where = "classifier.image_size" if self.image_size else "the data size (data.size)"
            raise ConfigError(
                f"classifier {self.name!r} needs images of at least {need} "
                f"px but {where} is {size}; set classifier.image_size >= "
                f"{need} (resized on the device) or pick a smaller network"
            )
        return size

    def weights_file(self) -> Path | None:
        """The weights to start from: weights_path as given, torchvision's verified ImageNet file for
        weights=imagenet (nets/imagenet.py; ConfigError saying where it goes), or None (scratch)."""
        if self.weights_path:
            return Path(self.weights_path)
        if self.weights == "imagenet":
            from ..nets.imagenet import find_imagenet

            return find_imagenet(self.name, self.weights_dir)
        return None

    def transform_input(self) -> bool:
        """Inception-V3 from torchvision's ImageNet file takes its inputs as torchvision sets it up for
        those weights (transform_input: ImageNet-normalised → the [-1, 1] Google trained on)."""
        return self.name == "inception_v3" and self.weights == "imagenet"

    def weights_tag(self) -> str:
        """What the run's params record: 'imagenet:<path>' or 'scratch'."""
        w = self.weights_file()
        return f"imagenet:{w.resolve()}" if w else "scratch"

    def params(self, data_size: int) -> dict[str, Any]:
        """Flat params for tracking: every key, the effective input size, and the weights source."""
        p = flatten(to_dict(self))
        p.update(
            weights=self.weights_tag(),
            input_size=self.check_size(data_size),
            transform_input=self.transform_input(),
        )
        w = self.weights_file()
        if (
            w is not None
        ):  # the content, not the path, is what shaped the run (hashed once per file)
            from ..nets.imagenet import sha256

            p["weights_sha256"] = sha256(w)
        return p
