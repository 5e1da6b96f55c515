"""Networks: plain `nn.Module`s with typed keyword arguments (no config objects inside).

- `UNet`: SynCGAN mask → RGB generator (pix2pix UNet, bilinear + 3x3 conv decoder).
- `MaskGenerator` / `VanillaGenerator` (`LatentGenerator`): z → mask logits / RGB image.
- `PatchDiscriminator`: pix2pix 70x70 PatchGAN, logits map.
- `ResnetGenerator`: CycleGAN generator.
- `build_classifier`: ResNet-152 / DenseNet-161 / Inception-V3 / ResNet-18 / SmallCNN.
- `real_features` / `InceptionFeatures`: NST features, by default the verified FID InceptionV3
  layer by layer (offline); VGG-19 from a local file; random weights only when allowed.

No generator contains a transposed convolution; nothing here downloads weights.
"""

from .classifiers import (
    CLASSIFIERS,
    INCEPTION_AUX_MIN_SIZE,
    SmallCNN,
    build_classifier,
    classifier_logits,
    load_classifier_weights,
    min_image_size,
)
from .inception_features import InceptionFeatures, check_real, is_random, real_features
from .patchgan import PatchDiscriminator, min_input_size, output_size, receptive_field
from .resnet_gen import ResnetBlock, ResnetGenerator
from .unet import (
    NORMS,
    LatentGenerator,
    MaskGenerator,
    UNet,
    UpBlock,
    VanillaGenerator,
    count_params,
    make_norm,
    unet_depth,
)

__all__ = [
    "CLASSIFIERS",
    "INCEPTION_AUX_MIN_SIZE",
    "NORMS",
    "InceptionFeatures",
    "LatentGenerator",
    "MaskGenerator",
    "PatchDiscriminator",
    "ResnetBlock",
    "ResnetGenerator",
    "SmallCNN",
    "UNet",
    "UpBlock",
    "VanillaGenerator",
    "build_classifier",
    "check_real",
    "classifier_logits",
    "count_params",
    "is_random",
    "load_classifier_weights",
    "make_norm",
    "min_image_size",
    "min_input_size",
    "output_size",
    "real_features",
    "receptive_field",
    "unet_depth",
]
