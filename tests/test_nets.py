"""Shape table and behaviour tests for cytoray.nets (CPU, tiny widths)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from cytoray.errors import CytorayError
from cytoray.nets import (
    CLASSIFIERS,
    MaskGenerator,
    PatchDiscriminator,
    ResnetGenerator,
    UNet,
    VanillaGenerator,
    build_classifier,
    classifier_logits,
    min_image_size,
    output_size,
    receptive_field,
    unet_depth,
)

torch.set_num_threads(1)

SIZES = (32, 64, 128, 256)
B, Z = 2, 16


# ----------------------------------------------------------------------------- shape table

# name → (builder(size), input(size), expected output shape(size), output bounded to [-1, 1])
NETS: dict[str, tuple[Callable, Callable, Callable, bool]] = {
    "unet_mask2rgb": (
        lambda s: UNet(in_ch=1, out_ch=3, base=8, depth=unet_depth(s)),
        lambda s: torch.randn(B, 1, s, s),
        lambda s: (B, 3, s, s),
        True,
    ),
    "unet_instance_raw": (
        lambda s: UNet(
            in_ch=3, out_ch=1, base=8, depth=unet_depth(s), norm="instance", out_act="none"
        ),
        lambda s: torch.randn(B, 3, s, s),
        lambda s: (B, 1, s, s),
        False,
    ),
    "mask_generator": (
        lambda s: MaskGenerator(z_dim=Z, out_size=s, base=8),
        lambda s: torch.randn(B, Z),
        lambda s: (B, 1, s, s),
        False,
    ),
    "vanilla_generator": (
        lambda s: VanillaGenerator(z_dim=Z, out_size=s, base=8),
        lambda s: torch.randn(B, Z),
        lambda s: (B, 3, s, s),
        True,
    ),
    "resnet_generator": (
        lambda s: ResnetGenerator(base=8, n_blocks=2),
        lambda s: torch.randn(B, 3, s, s),
        lambda s: (B, 3, s, s),
        True,
    ),
    "patchgan_conditional": (
        lambda s: PatchDiscriminator(in_ch=4, base=8),
        lambda s: torch.randn(B, 4, s, s),
        lambda s: (B, 1, s // 8 - 2, s // 8 - 2),
        False,
    ),
    "patchgan_mask_instance": (
        lambda s: PatchDiscriminator(in_ch=1, base=8, norm="instance"),
        lambda s: torch.randn(B, 1, s, s),
        lambda s: (B, 1, s // 8 - 2, s // 8 - 2),
        False,
    ),
    "patchgan_rgb_nonorm": (
        lambda s: PatchDiscriminator(in_ch=3, base=8, norm="none"),
        lambda s: torch.randn(B, 3, s, s),
        lambda s: (B, 1, s // 8 - 2, s // 8 - 2),
        False,
    ),
}
GENERATORS = [k for k in NETS if not k.startswith("patchgan")]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", list(NETS))
def test_shape_table(name: str, size: int) -> None:
    build, make_input, expected, bounded = NETS[name]
    torch.manual_seed(0)
    net = build(size).train()
    y = net(make_input(size))
    assert tuple(y.shape) == expected(size)
    assert torch.isfinite(y).all()
    if bounded:
        assert y.min() >= -1 and y.max() <= 1
    else:  # raw logits are not squashed into [-1, 1] by a hidden tanh
        assert y.abs().max() > 0


@pytest.mark.parametrize("name", GENERATORS)
def test_no_transposed_convolutions(name: str) -> None:
    net = NETS[name][0](64)
    kinds = {type(m) for m in net.modules()}
    assert not kinds & {nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d}
    assert nn.Upsample in kinds  # the bilinear path is really there


@pytest.mark.parametrize("name", list(NETS))
def test_gradients_reach_first_layer(name: str) -> None:
    build, make_input, _, _ = NETS[name]
    net = build(32).train()
    net(make_input(32)).square().mean().backward()
    first = next(m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- UNet


def test_unet_depth_helper() -> None:
    assert [unet_depth(s) for s in (32, 64, 128, 256, 512, 96)] == [5, 6, 7, 8, 8, 5]
    with pytest.raises(ValueError):
        unet_depth(33)


def test_unet_rejects_indivisible_size() -> None:
    net = UNet(base=8, depth=6)
    with pytest.raises(ValueError, match="48x48"):
        net(torch.randn(1, 1, 48, 48))


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_unet_batch_one_train_mode(norm: str) -> None:
    # innermost map is 1x1 at full depth: must not hit BatchNorm/InstanceNorm there
    net = UNet(base=8, depth=6, norm=norm).train()
    y = net(torch.randn(1, 1, 64, 64))
    y.mean().backward()
    assert y.shape == (1, 3, 64, 64)


def test_unet_dropout_is_stochastic_in_train_only() -> None:
    torch.manual_seed(0)
    net = UNet(base=8, depth=5, norm="instance")
    x = torch.randn(1, 1, 32, 32)
    net.train()
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))


def test_latent_generator_rejects_bad_size_and_z() -> None:
    with pytest.raises(ValueError):
        MaskGenerator(out_size=100)
    g = MaskGenerator(z_dim=Z, out_size=32, base=8)
    with pytest.raises(ValueError):
        g(torch.randn(2, Z + 1))
    z = g.sample_latent(3, generator=torch.Generator().manual_seed(1))
    assert z.shape == (3, Z)


# ----------------------------------------------------------------------------- PatchGAN


def test_patchgan_receptive_field() -> None:
    assert receptive_field(3) == 70
    assert [receptive_field(n) for n in (1, 2)] == [16, 34]


def test_patchgan_output_size_matches_network() -> None:
    for n in (2, 4):
        net = PatchDiscriminator(in_ch=3, base=4, n_layers=n)
        assert net(torch.randn(1, 3, 64, 64)).shape[-1] == output_size(64, n)


def test_patchgan_too_small_input() -> None:
    with pytest.raises(ValueError, match="at least"):
        PatchDiscriminator(in_ch=3, base=4, n_layers=5)(torch.randn(2, 3, 32, 32))


# ----------------------------------------------------------------------------- classifiers

SLOW_FORWARD = ("resnet152",)  # measured ~4 s on one CPU thread; the others < 1 s


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_constructs(name: str) -> None:
    model = build_classifier(name, 2, min_image_size(name))
    assert isinstance(model, nn.Module)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_FORWARD else n for n in CLASSIFIERS],
)
def test_classifier_forward_at_min_size(name: str) -> None:
    size = min_image_size(name)
    model = build_classifier(name, 2, size).train()
    logits, aux = classifier_logits(model, model(torch.randn(2, 3, size, size)))
    assert logits.shape == (2, 2)
    assert aux is None  # below 299 px Inception runs without its aux head
    logits.sum().backward()


@pytest.mark.slow
def test_inception_aux_head_at_native_size() -> None:
    model = build_classifier("inception_v3", 2, 299).train()
    logits, aux = classifier_logits(model, model(torch.randn(2, 3, 299, 299)))
    assert logits.shape == aux.shape == (2, 2)


def test_classifier_logits_unwraps_inception_outputs() -> None:
    from torchvision.models.inception import InceptionOutputs

    main, aux = torch.zeros(2, 2), torch.ones(2, 2)
    got_main, got_aux = classifier_logits(nn.Identity(), InceptionOutputs(main, aux))
    assert got_main is main and got_aux is aux
    with pytest.raises(TypeError):
        classifier_logits(nn.Identity(), [main])


def test_classifier_errors() -> None:
    with pytest.raises(CytorayError, match="smallcnn"):  # lists the valid names
        build_classifier("vgg16", 2, 64)
    with pytest.raises(CytorayError, match="inception_v3.*75"):
        build_classifier("inception_v3", 2, 64)
    with pytest.raises(CytorayError, match="unknown classifier"):
        min_image_size("nope")


@pytest.mark.parametrize("name", ["smallcnn", "resnet18"])
def test_classifier_weights_roundtrip(name: str, tmp_path) -> None:
    src = build_classifier(name, 2, 32)
    path = tmp_path / f"{name}.pt"
    torch.save(src.state_dict(), path)
    same = build_classifier(name, 2, 32, weights_path=path)
    for k, v in src.state_dict().items():
        assert torch.equal(v, same.state_dict()[k]), k
    # different class count: body loads, head is replaced and keeps its fresh shape
    other = build_classifier(name, 5, 32, weights_path=path)
    assert other.fc.out_features == 5
    body = next(k for k in src.state_dict() if not k.startswith("fc."))
    assert torch.equal(src.state_dict()[body], other.state_dict()[body])


def test_classifier_weights_errors(tmp_path) -> None:
    with pytest.raises(CytorayError, match="missing.pt"):
        build_classifier("smallcnn", 2, 32, weights_path=tmp_path / "missing.pt")
    wrong = tmp_path / "resnet18.pt"
    torch.save(build_classifier("resnet18", 2, 32).state_dict(), wrong)
    with pytest.raises(CytorayError, match="resnet18.pt"):  # another architecture's file
        build_classifier("smallcnn", 2, 32, weights_path=wrong)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CytorayError, match="junk.pt"):
        build_classifier("smallcnn", 2, 32, weights_path=junk)


def test_densenet_loads_torchvision_style_file(tmp_path) -> None:
    # torchvision's published DenseNet files: 1000-class head, old "norm.1" key names and
    # (older than BatchNorm's counter) no num_batches_tracked entries
    src = build_classifier("densenet161", 1000, 32).state_dict()
    old = {
        k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v
        for k, v in src.items()
        if not k.endswith("num_batches_tracked")
    }
    assert old.keys() != src.keys()
    path = tmp_path / "densenet161-imagenet.pth"
    torch.save(old, path)
    model = build_classifier("densenet161", 2, 32, weights_path=path)
    key = "features.denseblock1.denselayer1.norm1.weight"
    assert torch.equal(model.state_dict()[key], src[key])
    assert model.classifier.out_features == 2


def test_inception_aux_weights_load_without_aux_head(tmp_path) -> None:
    path = tmp_path / "inception.pt"
    torch.save(build_classifier("inception_v3", 2, 299).state_dict(), path)
    model = build_classifier("inception_v3", 2, 75, weights_path=path)
    assert model.AuxLogits is None


def test_unet_full_res_path_shapes_and_old_layout() -> None:
    """full_res adds a full-resolution path; full_res=0 keeps pix2pix's layout (older bundles load)."""
    plain = UNet(in_ch=6, out_ch=3, base=8, depth=5)
    assert not any(k.startswith(("stem.", "out.")) for k in plain.state_dict())
    sharp = UNet(in_ch=6, out_ch=3, base=8, depth=5, full_res=8, noise=1).eval()
    x = torch.randn(2, 6, 32, 32)
    assert sharp(x).shape == (2, 3, 32, 32)
    assert sharp.stem[0].in_channels == 7  # the condition plus one noise channel
    with pytest.raises(ValueError, match="noise needs full_res"):
        UNet(in_ch=1, base=8, depth=5, noise=1)


def test_unet_noise_is_per_pixel_and_seedable() -> None:
    """The noise channel stays on in eval mode (texture at sampling), is reproducible from torch's
    seed, and reaches the output pixel by pixel: the full-resolution path makes detail finer than
    the half-resolution level the plain UNet ends on."""
    torch.manual_seed(0)
    g = UNet(in_ch=1, base=8, depth=5, full_res=8, noise=1).eval()
    x = torch.zeros(1, 1, 32, 32)
    with torch.no_grad():
        torch.manual_seed(1)
        a = g(x)
        torch.manual_seed(1)
        b = g(x)
        c = g(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # neighbouring pixels differ by more than a smooth x2 upsample allows: a 1-pixel checker pattern shows
    diff = (a - c)[0]
    assert diff.abs().mean() > 1e-4
    assert (diff[:, 1:, :] - diff[:, :-1, :]).abs().mean() > 0.3 * diff.abs().mean()


def test_unet_takes_its_noise_from_the_caller() -> None:
    """A caller's noise (the CGAN stage draws it from its own generator) decides the output whatever
    torch's global seed; a tensor of the wrong shape is refused with the shape expected."""
    torch.manual_seed(0)
    g = UNet(in_ch=1, base=8, depth=5, full_res=8, noise=1).eval()
    x = torch.zeros(2, 1, 32, 32)
    assert (
        g.noise_shape(x) == (2, 1, 32, 32) and UNet(in_ch=1, base=8, depth=5).noise_shape(x) == ()
    )
    n = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.manual_seed(1)
        a = g(x, n)
        torch.manual_seed(2)
        b = g(x, n)
        c = g(x, torch.randn_like(n))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match=r"expected \(2, 1, 32, 32\)"):
        g(x, n[:1])


def test_unet_out_blur_low_passes_the_output_and_keeps_the_keys() -> None:
    """`out_blur` filters G's output with a fixed binomial kernel: the same parameters as without it
    (a bundle's keys do not change), a constant image passes unchanged, and a one-pixel checker
    pattern, the finest texture there is, is removed."""
    from cytoray.nets.unet import Blur, high_pass

    plain = UNet(in_ch=1, base=8, depth=5, full_res=8, noise=1)
    blurred = UNet(in_ch=1, base=8, depth=5, full_res=8, noise=1, out_blur=True)
    assert plain.state_dict().keys() == blurred.state_dict().keys()
    blurred.load_state_dict(plain.state_dict())
    x, n = torch.zeros(1, 1, 32, 32), torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        a, b = plain.eval()(x, n), blurred.eval()(x, n)
    assert a.shape == b.shape and not torch.allclose(a, b)
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None]) % 2 * 2.0 - 1
    img = checker.expand(1, 3, 32, 32).clone()
    assert Blur()(img)[..., 2:-2, 2:-2].abs().max() < 1e-6  # [1, 2, 1] cancels (-1)^x
    flat = torch.full((1, 3, 8, 8), 0.3)
    assert torch.allclose(Blur()(flat), flat) and high_pass(flat).abs().max() < 1e-6
    with pytest.raises(ValueError, match="out_blur needs full_res"):
        UNet(in_ch=1, base=8, depth=5, out_blur=True)


def test_patchgan_high_pass_input() -> None:
    """`high_pass` adds the image's high-pass as 3 more input channels of the first layer: same
    logits map, and only the texture, not a flat colour, reaches those channels."""
    d = PatchDiscriminator(in_ch=4, base=8, n_layers=3, high_pass=True).eval()
    assert d.model[0].in_channels == 7
    x = torch.randn(2, 4, 64, 64)
    ref = PatchDiscriminator(in_ch=4, base=8, n_layers=3).eval()
    assert d(x).shape == ref(x).shape
    assert len(d.features(x)) == len(ref.features(x))
    flat = torch.cat([torch.randn(1, 1, 64, 64), torch.full((1, 3, 64, 64), 0.5)], 1)
    assert d._input(flat)[:, 4:].abs().max() < 1e-6
