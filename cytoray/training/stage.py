"""The Stage protocol: one trainer as plain PyTorch, with no Ray and no MLflow in it.

A stage owns its networks, optimisers, one training step, an optional validation and a
sample grid; the one worker loop (`loop.py`) runs every stage the same way on 1 CPU, 1 GPU
or under DDP. A `StageSpec` is a stage plus the arrays it trains on: its content key (what
shaped the result) names its cache folder, so a finished stage is trained once.

Hooks a stage may override, with the default in brackets:
- `prepare(arrays, device)` turns numpy arrays into device tensors [float32 copies];
- `order(train, epoch, seed)` gives the epoch's index order, the same on every rank [seeded permutation];
- `rng(device, seed, rank)` the generator `train_step` draws from (checkpointed) [CPU generator];
- `validate(models, val, amp)` metrics on the validation arrays [none];
- `selection(metrics, epoch)` a key, lower is better, that picks the best epoch [the last epoch];
- `grid(models, fixed)` a uint8 sample grid [none]; `meta()` what a bundle needs to rebuild `keep` [{}].
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn

from ..io import stable_hash


def native_cpu_bf16() -> bool:
    """Whether this processor multiplies bf16 in hardware (AVX-512 BF16 or AMX tiles). Elsewhere
    oneDNN emulates bf16 and autocast costs more than it saves."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, p, lambda: False)() for p in probes)


def amp_context(
    device: torch.device, enabled: bool, cpu_bf16: bool | str = False
) -> Callable[[], contextlib.AbstractContextManager]:
    """bf16 autocast on CUDA when `enabled` (no GradScaler needed: bf16 has float32's range); on the
    CPU only when `cpu_bf16` too (`run.cpu_bf16`; "auto": where `native_cpu_bf16()`, its speed
    differs by processor, see benchmarks/cpu_arith.py); plain float32 otherwise."""
    if enabled and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    if cpu_bf16 == "auto":
        cpu_bf16 = native_cpu_bf16()
    if enabled and cpu_bf16 and device.type == "cpu":
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext


def use_channels_last(device: torch.device, option: bool | str) -> bool:
    """`run.channels_last` on this device: "auto" is on for the CPU only (benchmarks/cpu_arith.py: with
    bf16, faster than fp32 on every stage; on CUDA it depends on the network, benchmarks/gpu_packing.py)."""
    return device.type == "cpu" if option == "auto" else bool(option)


def unwrap(m: nn.Module) -> nn.Module:
    """The bare module under a DDP wrapper."""
    return getattr(m, "module", m)


def to_uint8_grid(x: torch.Tensor, nrow: int = 4) -> np.ndarray:
    """[-1,1] tensor [B,C,H,W] → uint8 HxWx3 grid (masks shown grey)."""
    from torchvision.utils import make_grid

    x = x.detach().float().cpu().clamp(-1, 1).add(1).div(2)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    g = make_grid(x, nrow=nrow, padding=2, pad_value=1.0)
    return (g.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def adam(module: nn.Module | Any, lr: float, beta1: float) -> torch.optim.Optimizer:
    params = module.parameters() if isinstance(module, nn.Module) else module
    return torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999))


class Stage:
    """One trainer. `Params` is its typed settings (a dataclass: its config section plus what the
    data decides, e.g. the image size): the stage reads `self.cfg.<name>`. It is built from the
    dataclass itself or from a plain mapping (unknown keys refused, types checked); `self.params`
    is that mapping, which the stage's cache key hashes."""

    # names the trainer in cache keys ("cgan", "mask_gan", "classifier", ...)
    kind: ClassVar[str] = "stage"
    # the typed settings; None: the subclass reads its mapping itself (ClassifierStage)
    Params: ClassVar[type | None] = None
    # the model(s) whose best-epoch weights are the stage's product
    keep: ClassVar[str | tuple[str, ...]] = "G"
    ddp_kwargs: ClassVar[dict] = {}  # extra DistributedDataParallel arguments

    def __init__(self, params: dict | Any) -> None:
        from ..config import from_dict, to_plain

        if dataclasses.is_dataclass(params) and not isinstance(params, type):
            self.cfg = params
            self.params: dict = to_plain(params)
        else:
            # the caller's mapping as given: the cache key of a stage built before the typed
            # settings is unchanged
            self.params = dict(params)
            if self.Params is not None:
                self.cfg = from_dict(
                    self.Params, self.params, f"{self.kind} stage settings", check=False
                )

    @property
    def epochs(self) -> int:
        return int(self.cfg.epochs)

    @property
    def batch_size(self) -> int:
        return int(self.cfg.batch_size)

    # -- data ----------------------------------------------------------------------
    def prepare(self, arrays: dict | None, device: torch.device) -> dict[str, torch.Tensor]:
        # np.array copies: Ray hands the loop read-only arrays
        return {k: torch.as_tensor(np.array(v)).to(device) for k, v in (arrays or {}).items()}

    def order(self, train: dict[str, torch.Tensor], epoch: int, seed: int) -> torch.Tensor:
        n = len(next(iter(train.values())))
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))

    def rng(self, device: torch.device, seed: int, rank: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed * 7919 + rank)

    # -- training ------------------------------------------------------------------
    def begin_epoch(self, opts: dict[str, torch.optim.Optimizer], epoch: int) -> None:
        """Called before each epoch's first step (a learning-rate schedule sets its rate here)."""

    def build(self, device: torch.device) -> dict[str, nn.Module]:
        raise NotImplementedError

    def optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def train_step(
        self, models, opts, batch: dict[str, torch.Tensor], gen: torch.Generator, amp
    ) -> dict[str, float]:
        raise NotImplementedError

    def validate(self, models, val: dict[str, torch.Tensor] | None, amp) -> dict[str, float] | None:
        return None

    def selection(self, metrics: dict, epoch: int) -> tuple:
        return (-epoch,)

    def grid(self, models, fixed: dict[str, torch.Tensor]) -> np.ndarray | None:
        return None

    def meta(self) -> dict:
        return {}

    def progress(self, metrics: dict) -> str:
        """The per-epoch console line's figures."""
        return " ".join(
            f"{k} {metrics[k]:.4f}"
            for k in ("loss_d", "loss_g", "mse", "val_loss_g")
            if k in metrics
        )


def extend(cfg: Any, params_cls: type, **extra: Any) -> Any:
    """A config section as its stage's typed settings: `params_cls` (a subclass of the section's
    dataclass) with the section's values and the fields the data decides (`extra`: size, labels)."""
    return params_cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}, **extra)


def stage_key(kind: str, params: dict, data_key: str, seed: int) -> str:
    """Everything that shapes a stage's result: its trainer, every parameter, its data, its seed."""
    return stable_hash({"stage": kind, "params": params, "data": data_key, "seed": seed})


@dataclasses.dataclass
class StageSpec:
    """A stage and its data: `label` names progress lines and the cache folder `<label>-<key>`."""

    label: str
    stage: Stage
    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray] | None
    fixed: dict[str, np.ndarray]
    data_key: str  # what identifies the training data (split manifest hash, class, mask settings)
    seed: int = 0

    @property
    def key(self) -> str:
        return stage_key(self.stage.kind, self.stage.params, self.data_key, self.seed)

    @property
    def name(self) -> str:
        """`<label>-<key>` as one plain ASCII path component (class names may hold '/', spaces or 'é';
        the key, which hashes the real label's data key, keeps such names apart)."""
        return f"{re.sub(r'[^A-Za-z0-9._-]+', '-', self.label).strip('-') or 'stage'}-{self.key}"
