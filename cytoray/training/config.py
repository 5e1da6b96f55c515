"""How a stage runs under Ray Train (workers, devices, checkpoints, seed): shared by every trainer."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..errors import ConfigError


@dataclasses.dataclass
class RunConfig:
    num_workers: int = 1  # Ray Train workers; > 1 runs DDP
    use_gpu: bool = False  # one GPU per worker
    cpus_per_worker: int = 1  # CPU slots a worker reserves (and its torch threads)
    # GPU share per worker when use_gpu (0.25: four small trials share a GPU)
    gpus_per_worker: float = 1.0
    mixed_precision: bool = True  # bf16 autocast on CUDA (and on the CPU when cpu_bf16)
    # bf16 autocast on the CPU too; auto: where the processor multiplies bf16 natively (AVX-512 BF16
    # or AMX), 1.4-2.1x there at equal losses; emulated elsewhere (benchmarks/cpu_arith_epyc.md)
    cpu_bf16: bool | Literal["auto"] = "auto"
    # NHWC weights (convolutions follow); auto: on the CPU (with bf16 1.31-2.06x fp32 on every stage
    # measured), off on CUDA (GAN stages gain, Inception-V3 lost 40%: set it per study there)
    channels_last: bool | Literal["auto"] = "auto"
    sample_every: int = 5  # epochs between logged sample grids
    # epochs between checkpoints (resume points); the last epoch of a stage always
    checkpoint_every: int = 5
    keep_checkpoints: int = 2  # Ray Train checkpoints kept per job
    storage_path: str | None = None  # Ray Train storage (absolute path or URI); None = <cache>/ray
    # restarts of a job (and retries of a trial) after
    # a lost worker or node, from the last checkpoint
    max_failures: int = 2
    seed: int = 0  # seeds init, batches and latent draws

    def validate(self) -> None:
        for k in (
            "num_workers",
            "cpus_per_worker",
            "sample_every",
            "checkpoint_every",
            "keep_checkpoints",
        ):
            if getattr(self, k) < 1:
                raise ConfigError(f"run.{k}={getattr(self, k)}: must be >= 1")
        if not 0.0 < self.gpus_per_worker <= 8.0:
            raise ConfigError(f"run.gpus_per_worker={self.gpus_per_worker}: a share in (0, 8]")
        if self.max_failures < 0:
            raise ConfigError(f"run.max_failures={self.max_failures}: must be >= 0")
        if self.seed < 0:
            raise ConfigError(f"run.seed={self.seed}: must be >= 0")
