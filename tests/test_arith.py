"""The arithmetic run options: bf16 autocast on the CPU only when asked (run.cpu_bf16; by default where
the processor multiplies bf16 natively), and channels_last models that train to the same numbers as the
default layout (run.channels_last; by default on the CPU)."""

from __future__ import annotations

import torch

from cytoray.generators.gan import CGANConfig, CGANStage, stage_params
from cytoray.training import stage as stage_mod
from cytoray.training.config import RunConfig
from cytoray.training.stage import amp_context, use_channels_last

CPU = torch.device("cpu")


def _conv_dtype(amp) -> torch.dtype:
    conv = torch.nn.Conv2d(3, 4, 3)
    with amp():
        return conv(torch.randn(1, 3, 8, 8)).dtype


def test_cpu_bf16_only_when_asked():
    assert _conv_dtype(amp_context(CPU, True)) == torch.float32  # mixed_precision alone: CUDA only
    assert (
        _conv_dtype(amp_context(CPU, False, cpu_bf16=True)) == torch.float32
    )  # mixed_precision off wins
    assert _conv_dtype(amp_context(CPU, True, cpu_bf16=True)) == torch.bfloat16
    assert _conv_dtype(amp_context(CPU, True, cpu_bf16=False)) == torch.float32


def test_cpu_bf16_auto_follows_the_processor(monkeypatch):
    """auto: bf16 only where the CPU has native bf16 dot products (emulated bf16 is slower)."""
    assert RunConfig().cpu_bf16 == "auto" and RunConfig().channels_last == "auto"
    for native, dtype in ((False, torch.float32), (True, torch.bfloat16)):
        monkeypatch.setattr(stage_mod, "native_cpu_bf16", lambda native=native: native)
        assert _conv_dtype(amp_context(CPU, True, cpu_bf16="auto")) == dtype
        assert _conv_dtype(amp_context(CPU, False, cpu_bf16="auto")) == torch.float32
    probes = [
        getattr(torch.cpu, p, None) for p in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    assert any(probes), "torch.cpu no longer has the probes native_cpu_bf16 reads"


def test_channels_last_auto_is_on_for_the_cpu_only():
    assert use_channels_last(CPU, "auto") is True
    assert use_channels_last(torch.device("cuda"), "auto") is False
    assert use_channels_last(torch.device("cuda"), True) is True
    assert use_channels_last(CPU, False) is False


def _losses(channels_last: bool, steps: int = 3) -> list[float]:
    torch.manual_seed(0)
    stage = CGANStage(stage_params(CGANConfig(g_base=4, d_base=4, batch_size=2, dropout=0.0), 32))
    models = stage.build(CPU)
    if channels_last:  # what the loop does with run.channels_last
        models = {k: m.to(memory_format=torch.channels_last) for k, m in models.items()}
    opts, gen = stage.optimizers(models), torch.Generator().manual_seed(0)
    g = torch.Generator().manual_seed(1)
    batch = {
        "mask": torch.sign(torch.rand(2, 1, 32, 32, generator=g) - 0.8),
        "image": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1,
    }
    out = []
    for _ in range(steps):
        out.append(stage.train_step(models, opts, batch, gen, amp_context(CPU, False))["loss_g"])
    return out


def test_channels_last_trains_to_the_same_losses():
    """NHWC changes the order of the sums only: float32 losses agree to rounding after a few steps."""
    a, b = _losses(False), _losses(True)
    assert all(abs(x - y) <= 1e-3 * abs(x) for x, y in zip(a, b)), (a, b)
