"""A trained nucleus segmenter (a U-Net giving nucleus probabilities) and its bundle folder.

Both masks (`masks.segmenter`: a study's nucleus masks from a trained segmenter) and the
refined-sim generator (which trains one beside its refiner) use it, so it lives here, under both.
A segmenter bundle is segmenter.json (written last) + segmenter.pt; a refined-sim generator bundle
holds the same network as segmenter.pt beside generator.json, and loads as a segmenter too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..bundle import BUNDLE_META, build_net, load_weights, read_meta, require
from ..errors import CytorayError
from ..io import atomic_path, write_json
from ..nets import UNet
from ..nets.images import pad_to, to_unit

# the generator whose bundles hold a segmenter (generators/refined_sim.py)
REFINED_SIM = "refined-sim"


@torch.no_grad()
def nucleus_probabilities(net: UNet, images: np.ndarray, depth: int, batch: int = 8) -> np.ndarray:
    """float32 [N,H,W] nucleus probabilities of uint8 [N,H,W,3] images by a U-Net segmenter (padded to its stride)."""
    net.eval()
    out = []
    for i in range(0, len(images), batch):
        x, h, w = pad_to(torch.from_numpy(to_unit(np.asarray(images[i : i + batch]))), 2**depth)
        out.append(torch.sigmoid(net(x)[:, 0, :h, :w]).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, *np.shape(images)[1:3]), np.float32)


def segment_with(
    net: UNet, images: np.ndarray, depth: int, threshold: float, batch: int = 8
) -> np.ndarray:
    """bool [N,H,W] masks of uint8 [N,H,W,3] images by a U-Net segmenter: probability above `threshold`."""
    return nucleus_probabilities(net, images, depth, batch) > threshold


# written last: a folder holding it is a complete segmenter bundle
SEGMENTER_META = "segmenter.json"


class Segmenter:
    """A trained nucleus segmenter, from a segmenter bundle (segmenter.json + segmenter.pt) or a
    refined-sim generator bundle. `scale` is the resize factor from a native image to the
    resolution it was trained at (e.g. 0.25 for 1360x1024 BreCaHAD tiles held at 340x256)."""

    def __init__(self, net: UNet, depth: int, threshold: float, scale: float, meta: dict) -> None:
        self.net, self.depth, self.threshold, self.scale, self.meta = (
            net.eval(),
            depth,
            threshold,
            scale,
            meta,
        )

    def masks(self, images: np.ndarray, batch: int = 8) -> np.ndarray:
        """bool [N,H,W] masks of uint8 [N,H,W,3] images already at the working resolution."""
        return segment_with(self.net, images, self.depth, self.threshold, batch)

    def segment_image(
        self, rgb: np.ndarray, scale: float | None = None, probability: bool = False
    ) -> np.ndarray:
        """bool [H,W] mask of one native-resolution uint8 image: resized by `scale` (default:
        the bundle's), segmented, and the mask resized back to the image's own size. With
        `probability`, the float32 nucleus probabilities instead (resized bilinearly)."""
        from PIL import Image

        s = self.scale if scale is None else float(scale)
        h, w = rgb.shape[:2]
        small = (
            rgb
            if s == 1
            else np.asarray(
                Image.fromarray(rgb).resize(
                    (max(8, round(w * s)), max(8, round(h * s))), Image.BICUBIC
                )
            )
        )
        if probability:
            p = nucleus_probabilities(self.net, small[None], self.depth)[0]
            return (
                p
                if p.shape == (h, w)
                else np.asarray(Image.fromarray(p).resize((w, h), Image.BILINEAR))
            )
        m = self.masks(small[None])[0]
        return (
            m if m.shape == (h, w) else np.asarray(Image.fromarray(m).resize((w, h), Image.NEAREST))
        )

    def predict(self, images: np.ndarray, output: str = "mask") -> np.ndarray:
        """What the registered pyfunc returns for uint8 images [N,H,W,3] at their native resolution
        (each resized by the bundle's scale, as `cytoray segment` does): uint8 0/1 masks [N,H,W], or
        with output="probability" float32 nucleus probabilities [N,H,W]."""
        if output not in ("mask", "probability"):
            raise CytorayError(
                f"output={output!r}: use mask (0/1 at the bundle's threshold) or probability"
            )
        images = np.asarray(images, dtype=np.uint8)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise CytorayError(
                f"images of shape {images.shape}: give uint8 RGB images [N, H, W, 3]"
            )
        prob = output == "probability"
        out = [self.segment_image(im, probability=prob) for im in images]
        return (
            np.stack(out).astype(np.float32 if prob else np.uint8)
            if out
            else np.zeros(images.shape[:3], np.float32 if prob else np.uint8)
        )


def write_segmenter_bundle(
    out, state: dict, kwargs: dict, threshold: float, scale: float, meta: dict
):
    """A folder with the segmenter's weights and segmenter.json (what `load_segmenter` reads)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "segmenter.pt") as tmp:
        torch.save(state, tmp)
    write_json(
        out / SEGMENTER_META,
        {**meta, "segmenter_kwargs": kwargs, "threshold": threshold, "scale": scale},
    )
    return out


def segmenter_net(kwargs: dict, where: Path, weights: Path) -> UNet:
    """The segmenter U-Net built from a bundle's stored arguments (absurd or unknown ones: one
    line naming `where`) with the weights of `weights`."""
    net = build_net(UNet, kwargs, where)
    net.load_state_dict(load_weights(weights))
    return net


def load_segmenter(path) -> Segmenter:
    """A Segmenter from a segmenter bundle or a refined-sim generator bundle folder (its segmenter's
    weights and settings, read from the bundle's files without loading the generator)."""
    path = Path(path)
    weights = path / "segmenter.pt"
    # a damaged file or a truncated .pt: one line naming it (bundle.py)
    if (path / SEGMENTER_META).is_file():
        what = "segmenter bundle file"
        meta = read_meta(path / SEGMENTER_META, ("segmenter_kwargs", "threshold"), what)
        try:
            net = segmenter_net(meta["segmenter_kwargs"], path / SEGMENTER_META, weights)
            threshold = float(meta["threshold"])
            return Segmenter(
                net,
                int(meta["segmenter_kwargs"]["depth"]),
                threshold,
                float(meta.get("scale", 1.0)),
                meta,
            )
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CytorayError(
                f"{path / SEGMENTER_META}: does not describe {weights} ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:120]}); re-copy the bundle or retrain"
            ) from None
    file = path / BUNDLE_META
    if file.is_file():
        what = "generator bundle file"
        meta = read_meta(file, ("generator",), what)
        if meta["generator"] == REFINED_SIM:
            kwargs = require(meta, ("segmenter_kwargs",), file, what)["segmenter_kwargs"]
            net = segmenter_net(kwargs, file, weights)
            config = require(meta, ("config",), file, what)["config"]
            threshold, scale = (
                float(config["segmenter"]["threshold"]),
                float(meta.get("scale", 1.0)),
            )
            return Segmenter(net, int(kwargs["depth"]), threshold, scale, meta)
    raise CytorayError(
        f"{path}: not a nucleus segmenter (no {SEGMENTER_META}, and not "
        f"a {REFINED_SIM} generator bundle); pass a folder written by "
        "studies/refined_segmentation.py or `cytoray train refined-sim`"
    )
