"""Offline ImageNet weights: torchvision's own files, found locally and checked by the hash in their name.

Air-gapped users keep torchvision's weight files in a pre-filled torch cache
(`$TORCH_HOME/hub/checkpoints/<name>-<hash>.pth`, `torch.hub.get_dir()` without TORCH_HOME) or
in a folder they name (`classifier.weights_dir`). The file name is the one torchvision's weights
enum publishes (`get_model_weights(net).IMAGENET1K_V1.url`), and its `<hash>` part is the first
hex digits of the file's sha256: torch.hub's `check_hash` convention, which torchvision relies
on when it downloads. cytoray applies the same check to a file it did not download, so a
truncated copy, a renamed file or another network's weights are refused by name instead of
half-loading into a model. Nothing here downloads: the enum is read only for the file name.

`find_imagenet(net)` returns the verified path or raises a `ConfigError` that says where the
file must go and how it is named; classify/weights.py's `inventory()` is what `cytoray weights` prints.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from urllib.parse import urlparse

from ..errors import ConfigError
from ..io import sha256_file

# Networks with torchvision ImageNet weights, by cytoray's use: the classifiers of
# cytoray/nets/classifiers.py and the style-transfer features of cytoray/nets/vgg.py.
IMAGENET_NETS = {
    "resnet152": "classifier",
    "densenet161": "classifier",
    "inception_v3": "classifier",
    "resnet18": "classifier",
    "vgg19": "NST features (nst.features: vgg19, nst.vgg_weights)",
}
HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")  # torch.hub.HASH_REGEX: the hash prefix in a file name

_DIGESTS: dict[
    tuple[str, int, int], str
] = {}  # (path, size, mtime) -> sha256: a 230 MB file is hashed once


def expected(net: str) -> tuple[str, str]:
    """(file name, torchvision's URL) of `net`'s ImageNet weights; ConfigError for a network without any."""
    if net not in IMAGENET_NETS:
        raise ConfigError(
            f"{net!r} has no torchvision ImageNet weights (networks with them: "
            f"{', '.join(IMAGENET_NETS)}); train it from scratch (classifier.weights: scratch)"
        )
    import torchvision

    url = torchvision.models.get_model_weights(
        net
    ).IMAGENET1K_V1.url  # a constant: reading it downloads nothing
    return Path(urlparse(url).path).name, url


def torch_cache_dir() -> Path:
    """torch's checkpoint cache: $TORCH_HOME/hub/checkpoints (~/.cache/torch/hub/checkpoints by default)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def search_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where a weights file is looked for, in order: the user's folder (if named), then torch's cache."""
    return [*([Path(weights_dir).expanduser()] if weights_dir else []), torch_cache_dir()]


def sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def hash_ok(path: Path) -> tuple[bool, str]:
    """(the sha256 starts with the hash prefix in the file name, the sha256). A name without a
    prefix cannot be checked and is refused: torchvision's files all carry one."""
    m = HASH_REGEX.search(path.name)
    digest = sha256(path)
    return bool(m and m.group(1) and digest.startswith(m.group(1))), digest


@dataclasses.dataclass
class Found:
    """One network's weights: what is expected, where it was looked for, and what was found."""

    net: str
    use: str
    file_name: str
    url: str
    searched: list[Path]
    path: Path | None = None  # the first candidate that verifies, else the first candidate found
    status: str = "missing"  # verified | mismatch | missing
    sha256: str | None = None

    def where(self) -> str:
        """The sentence that tells a user where the file must go and how it is named."""
        dirs = " or ".join(str(d) for d in self.searched)
        return (
            f"put torchvision's file {self.file_name} (the one at {self.url}, "
            f"copied from a machine with network access) in {dirs} (torch's "
            "cache is $TORCH_HOME/hub/checkpoints; classifier.weights_dir "
            "names another folder); cytoray never downloads it"
        )


def locate(net: str, weights_dir: str | os.PathLike | None = None) -> Found:
    """Look for `net`'s ImageNet file under its torchvision name in `search_dirs`; hash-check what is there."""
    name, url = expected(net)
    found = Found(net, IMAGENET_NETS[net], name, url, search_dirs(weights_dir))
    for d in found.searched:
        p = d / name
        if not p.is_file():
            continue
        ok, digest = hash_ok(p)
        if ok:
            found.path, found.status, found.sha256 = p, "verified", digest
            return found
        if found.path is None:  # a bad copy is reported unless a good one turns up further down
            found.path, found.status, found.sha256 = p, "mismatch", digest
    return found


def find_imagenet(
    net: str, weights_dir: str | os.PathLike | None = None, key: str = "classifier.weights"
) -> Path:
    """The verified local ImageNet file of `net`; ConfigError (saying where it goes and how it is named) otherwise."""
    f = locate(net, weights_dir)
    if f.status == "verified":
        return f.path
    if f.status == "mismatch":
        prefix = HASH_REGEX.search(f.file_name).group(1)
        raise ConfigError(
            f"{key}=imagenet: {f.path} has sha256 {f.sha256[:12]}…, not the {prefix}… "
            f"its name promises: a damaged or different file, refused; {f.where()}"
        )
    raise ConfigError(f"{key}=imagenet: no {f.file_name} for {net!r} found; {f.where()}")
