"""Generator configs: every key has a default and a one-line reason (see configs/models/*.yaml)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..config import ConfigError, DataConfig


@dataclasses.dataclass
class CGANConfig:
    """Mask → RGB conditional GAN (SynCGAN §3.3)."""

    epochs: int = 30  # paper: 200 on a GPU; CPU budgets use tens
    batch_size: int = 16  # small sets: 90 training pairs → 6 steps an epoch
    lr: float = 2e-4  # pix2pix Adam learning rate
    beta1: float = 0.5  # pix2pix Adam beta1 (GANs dislike 0.9 momentum)
    lam: float = 100.0  # λ, weight of MSE(G(y), x) against the adversarial term (paper: 100)
    g_base: int = 32  # UNet width at the outermost level (pix2pix: 64)
    d_base: int = 32  # PatchGAN width (pix2pix: 64)
    d_layers: int = 3  # 3 → the 70x70 PatchGAN receptive field
    norm: Literal["batch", "instance"] = "batch"  # pix2pix default
    dropout: float = 0.5  # decoder dropout: pix2pix's noise source in G

    def validate(self) -> None:
        _positive(self, "epochs", "batch_size", "lr", "g_base", "d_base")
        if self.lam < 0:
            raise ConfigError(f"cgan.lam={self.lam}: λ must be >= 0")


@dataclasses.dataclass
class LatentGANConfig:
    """z → image GAN with the paper's stabilisers: the class mask GANs and the vanilla RGB control."""

    epochs: int = 60  # paper: ~1600 (until G loss saturates); CPU budgets use tens
    batch_size: int = 16  # per class: 45 training images → 3 steps an epoch
    lr_g: float = 2e-4  # Adam learning rate of G
    lr_d: float = 2e-4  # Adam learning rate of D
    beta1: float = 0.5  # DCGAN/pix2pix beta1
    z_dim: int = 64  # latent size; masks carry little information
    g_base: int = 32  # generator width at full resolution
    d_base: int = 32  # PatchGAN width
    d_layers: int = 3  # 70x70 receptive field
    smooth_real_low: float = 0.9  # real D targets ~ U[smooth_real_low, 1] (paper: 0.9)
    smooth_fake_high: float = 0.1  # fake D targets ~ U[0, smooth_fake_high] (paper: 0.1)
    flip_rate: float = 0.05  # probability a D target is swapped real↔fake (per sample)

    def validate(self) -> None:
        _positive(self, "epochs", "batch_size", "lr_g", "lr_d", "z_dim", "g_base", "d_base")
        if not 0.0 <= self.smooth_real_low <= 1.0:
            raise ConfigError(f"smooth_real_low={self.smooth_real_low}: must lie in [0, 1]")
        if not 0.0 <= self.smooth_fake_high <= 1.0:
            raise ConfigError(f"smooth_fake_high={self.smooth_fake_high}: must lie in [0, 1]")
        if self.smooth_fake_high >= self.smooth_real_low:
            raise ConfigError(
                f"smooth_fake_high={self.smooth_fake_high} >= smooth_real_low={self.smooth_real_low}: "
                "real and fake target ranges would overlap"
            )
        if not 0.0 <= self.flip_rate < 0.5:
            raise ConfigError(f"flip_rate={self.flip_rate}: must lie in [0, 0.5) (0.5 makes labels meaningless)")


@dataclasses.dataclass
class MasksConfig:
    source: Literal["unsupervised", "ground_truth"] = "unsupervised"  # paper: unsupervised §3.2 masks


@dataclasses.dataclass
class RunConfig:
    num_workers: int = 1  # Ray Train workers; > 1 runs DDP
    use_gpu: bool = False  # one GPU per worker
    cpus_per_worker: int = 1  # CPU slots a worker reserves
    gpus_per_worker: float = 1.0  # GPU share per worker when use_gpu (0.25: four small trials share a GPU)
    mixed_precision: bool = True  # bf16 autocast on CUDA only (CPU always float32)
    sample_every: int = 5  # epochs between logged sample grids
    checkpoint_every: int = 5  # epochs between checkpoints (resume points); the last epoch always
    keep_checkpoints: int = 2  # Ray Train checkpoints kept per stage
    storage_path: str | None = None  # Ray Train storage (absolute path or URI); None = <out>/ray
    seed: int = 0  # seeds init, batches and latent draws


@dataclasses.dataclass
class GeneratorTrainConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    masks: MasksConfig = dataclasses.field(default_factory=MasksConfig)
    cgan: CGANConfig = dataclasses.field(default_factory=CGANConfig)
    mask_gan: LatentGANConfig = dataclasses.field(default_factory=LatentGANConfig)
    gan: LatentGANConfig = dataclasses.field(default_factory=lambda: LatentGANConfig(z_dim=128))
    run: RunConfig = dataclasses.field(default_factory=RunConfig)


def _positive(obj, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        if v <= 0:
            raise ConfigError(f"{n}={v}: must be > 0")
