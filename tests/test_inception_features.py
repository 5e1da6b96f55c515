"""Real features for NST offline (cytoray.nets.inception_features): the verified FID InceptionV3
layer by layer, gradients to the pixels, and no silent random features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cytoray.errors import CytorayError
from cytoray.nets import inception_features as I


def blobs(size: int, seed: int, palette: tuple) -> torch.Tensor:
    """float [1, 3, size, size] in [0, 1]: coloured discs on a tinted background (seeded)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.empty((size, size, 3))
    img[:] = palette[0]
    for _ in range(6):
        cy, cx, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(2, size / 5)]
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = palette[1]
    img += rng.normal(0, 0.03, img.shape)
    return torch.from_numpy(np.clip(img, 0, 1)).permute(2, 0, 1)[None].float().contiguous()


def gram(f: torch.Tensor) -> torch.Tensor:
    b, c, h, w = f.shape
    x = f.reshape(b, c, h * w)
    return x @ x.transpose(1, 2) / (c * h * w)


def test_stages_are_the_fid_network():
    from cytoray.metrics import fidelity as F

    img = (
        (torch.rand(1, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 255)
        .round()
        .to(torch.uint8)
    )
    feats = I.InceptionFeatures(I.LAYERS, scale=1, min_side=None)(img.float() / 255)
    assert list(feats) == list(I.LAYERS)
    for name, _, channels in I.STAGES:  # names, channels and sizes as in TF's graph at 299 px
        assert feats[name].shape == (1, channels, I.out_side(name, 299), I.out_side(name, 299)), (
            name
        )
    # Mean-pooled Mixed_7c is the verified 2048-d FID feature of the same image.
    np.testing.assert_allclose(
        feats["Mixed_7c"].mean((2, 3)).numpy(), F.inception_features(img), rtol=1e-4, atol=1e-5
    )


def test_sizes_and_errors():
    assert (
        I.min_side_for(["Mixed_6b"]) == 43 and I.min_side_for(["Mixed_7c"]) == 75
    )  # torchvision: 75 px
    tiny = I.InceptionFeatures(["Mixed_6b"], scale=1, min_side=None)
    assert tiny(torch.rand(1, 3, 43, 43))["Mixed_6b"].shape[-2:] == (1, 1)
    with pytest.raises(CytorayError, match="need >= 43 px"):
        tiny(torch.rand(1, 3, 42, 42))
    up = I.InceptionFeatures(
        ["Conv2d_1a_3x3"]
    )  # defaults: 2x, and at least 150 px on the short side
    side = lambda n: I.out_side("Conv2d_1a_3x3", n)  # noqa: E731
    assert up(torch.rand(1, 3, 32, 48))["Conv2d_1a_3x3"].shape[-2:] == (side(150), side(225))
    assert up(torch.rand(1, 3, 100, 100))["Conv2d_1a_3x3"].shape[-1] == side(200)
    with pytest.raises(CytorayError, match="Mixed_9x.*valid: Conv2d_1a_3x3"):
        I.InceptionFeatures(["Mixed_9x"])
    with pytest.raises(CytorayError, match="min_side=20"):
        I.InceptionFeatures(["Mixed_6b"], min_side=20)
    with pytest.raises(CytorayError, match="float"):
        up(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_gradients_reach_the_pixels_and_weights_stay_frozen():
    feats, ident = I.real_features()  # the default: inception, offline
    assert ident == f"inception-v3-nv-torchscript:sha1={I.WEIGHTS_SHA1}" and not I.is_random(ident)
    x = blobs(40, 0, ((0.9, 0.8, 0.85), (0.3, 0.2, 0.5))).requires_grad_(True)
    out = feats(x)
    assert set(out) == {I.CONTENT_LAYER, *I.STYLE_LAYERS}
    sum(v.pow(2).mean() for v in out.values()).backward()
    assert (
        x.grad is not None and x.grad.shape == x.shape and x.grad.is_contiguous()
    )  # L-BFGS views it flat
    assert torch.isfinite(x.grad).all() and x.grad.abs().mean() > 0
    net = I.load_net("cpu")
    assert all(not p.requires_grad and p.grad is None for p in net.parameters())


def test_style_transfer_on_these_features_moves_the_style():
    # Gatys on a pair of synthetic images, 20 L-BFGS steps from the content image (as NST does).
    content = blobs(32, 1, ((0.95, 0.85, 0.9), (0.35, 0.25, 0.55)))  # pale, purple nuclei
    style = blobs(32, 2, ((0.55, 0.25, 0.35), (0.1, 0.45, 0.3)))  # dark pink, green blobs
    feats, _ = I.real_features()
    with torch.no_grad():
        tc = feats(content)[I.CONTENT_LAYER]
        ts = {n: gram(f) for n, f in feats(style).items() if n in I.STYLE_LAYERS}

    def losses(x):
        f = feats(x)
        return (f[I.CONTENT_LAYER] - tc).pow(2).mean(), sum(
            (gram(f[n]) - ts[n]).pow(2).mean() for n in I.STYLE_LAYERS
        )

    x = content.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], max_iter=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        lc, ls = losses(x)
        loss = lc + I.STYLE_WEIGHT * ls
        loss.backward()
        return loss

    with torch.no_grad():
        before = losses(content)[1].item()
    opt.step(closure)
    out = x.detach().clamp(0, 1)
    with torch.no_grad():
        after = losses(out)[1].item()
    dist = lambda a: (a.mean((0, 2, 3)) - style.mean((0, 2, 3))).abs().sum().item()  # noqa: E731
    assert after < before / 20, (before, after)  # measured: /132
    assert (
        out - content
    ).abs().mean() > 0.05  # the picture changed, not its last bits (measured 0.44)
    # ... towards the style's colours: mean-RGB distance to the style 1.31 -> 0.02 measured
    assert dist(out) < dist(content) / 4


def test_real_features_choices(tmp_path, capsys):
    with pytest.raises(CytorayError, match="--allow-random-features"):
        I.real_features("random")
    feats, ident = I.real_features("random", allow_random=True, seed=3)
    assert ident.startswith("vgg19-random-seed3") and I.RANDOM_LABEL in ident and I.is_random(ident)
    assert I.RANDOM_LABEL in capsys.readouterr().err
    assert set(feats(torch.rand(1, 3, 32, 32))) == {
        "conv4_2",
        "conv1_1",
        "conv2_1",
        "conv3_1",
        "conv4_1",
        "conv5_1",
    }
    with pytest.raises(CytorayError, match="random-weight features"):
        I.check_real(ident, what="nst")
    I.check_real(ident, allow_random=True)
    I.check_real("vgg19-random-seed0", allow_random=True)  # the legacy name counts as random too
    with pytest.raises(CytorayError, match="random"):
        I.check_real("vgg19-random-seed0")
    I.check_real(I.inception_identity())
    with pytest.raises(CytorayError, match="local ImageNet VGG-19"):
        I.real_features("vgg19")
    from torchvision.models.vgg import cfgs, make_layers

    path = tmp_path / "vgg19.pth"
    torch.save(
        make_layers(cfgs["E"]).state_dict(), path
    )  # a bare `features` state dict, built fast
    feats, ident = I.real_features("vgg19", ["conv1_1"], vgg_weights=path)
    assert ident == f"vgg19-imagenet:{path.resolve()}" and not I.is_random(ident)
    with pytest.raises(CytorayError, match="inception, vgg19, random"):
        I.real_features("resnet")
