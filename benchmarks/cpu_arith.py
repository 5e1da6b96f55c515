"""CPU arithmetic for the training stages: float32 vs bf16 autocast vs channels_last, side by side in one run.

    python benchmarks/cpu_arith.py [--size 64] [--steps 24] [--threads 1] [--out OUT]

Each stage (mask GAN, vanilla GAN, CGAN, CycleGAN, refined-sim, the diffusion denoiser, and the CPU
studies' classifiers smallcnn and resnet18) is built from its config's defaults
(the CPU-sized settings the studies use) at `--size` px and trained `--steps` steps from the same seed on
the same batch sequence in five arms: fp32, bf16, fp32+channels_last, bf16+channels_last, and fp32 from
another seed (the control: how far two equally valid float32 runs drift apart). The arms advance in
interleaved blocks of `--block` steps, so load from other processes falls on all of them alike.
images/s counts training steps only. "Trains as well" is judged on the stage's key loss averaged over the
second half of the steps: an arm passes when its distance from fp32 is no larger than the control's
(plus 10% of fp32's value), which is a sanity check over a few steps, not a convergence study.
Data: the embedded simulator (cytology masks and images; histology as CycleGAN's source); refined-sim
gets uniform-noise crops (its inputs need reference tiles; the arithmetic does not care).

The processor matters: bf16 pays only where the CPU has native bf16 dot products (AVX-512 BF16 or AMX).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from gpu_packing import CL, Bench, Runner  # noqa: E402

KEY = {
    "mask_gan": "loss_d",
    "gan": "loss_d",
    "cgan": "mse",
    "cyclegan": "cycle",
    "refined_sim": "loss_s",
    "smallcnn": "train_loss",  # the classifiers of the CPU studies (make run; the baselines study)
    "resnet18": "train_loss",
    "diffusion": "loss",  # the denoiser (MONAI's diffusion U-Net) on nucleus masks as its label maps
}
ARMS = {
    "fp32": (False, False, 0),
    "bf16": (True, False, 0),
    "fp32_cl": (False, True, 0),
    "bf16_cl": (True, True, 0),
    "fp32_seed1": (False, False, 1),
}


def data(size: int, n: int) -> dict:
    from cytoray.data.source import simulated_set
    from cytoray.generators.gan import masks_to_unit
    from cytoray.nets.images import to_unit

    cyto, histo = simulated_set("cytology", n, size, 0), simulated_set("histology", n, size, 1)
    return {
        "mask": torch.from_numpy(masks_to_unit(cyto.masks)),
        "image": torch.from_numpy(to_unit(cyto.images)),
        "A": torch.from_numpy(to_unit(histo.images)),
        "B": torch.from_numpy(to_unit(cyto.images)),
        "x": torch.from_numpy(cyto.images).permute(0, 3, 1, 2).float().div(255),
        "y": torch.from_numpy(cyto.labels.astype("int64")),
        "labels": torch.from_numpy((cyto.masks > 0).astype("int64")),
    }


def bench(name: str, size: int, d: dict) -> tuple[Bench, dict]:
    """A stage at its config's defaults and the arrays its batches are drawn from."""
    if name in ("mask_gan", "gan"):
        from cytoray.generators.gan import (
            LatentGANConfig,
            MaskGANStage,
            VanillaGANStage,
            stage_params,
        )

        cfg = LatentGANConfig()
        st = (MaskGANStage if name == "mask_gan" else VanillaGANStage)(stage_params(cfg, size))
        return Bench(name, st, {}, cfg.batch_size), {st.input_key: d[st.input_key]}
    if name == "cgan":
        from cytoray.generators.gan import CGANConfig, CGANStage, stage_params

        cfg = CGANConfig()
        return Bench(name, CGANStage(stage_params(cfg, size)), {}, cfg.batch_size), {
            "mask": d["mask"],
            "image": d["image"],
        }
    if name == "cyclegan":
        from cytoray.generators.cyclegan import CycleGANConfig, CycleGANStage, stage_params

        cfg = CycleGANConfig()
        return Bench(
            name, CycleGANStage(stage_params(cfg, size, len(d["A"]))), {}, cfg.batch_size
        ), {
            "A": d["A"],
            "B": d["B"],
        }
    if name in ("smallcnn", "resnet18"):
        import dataclasses

        from cytoray.classify.config import ClassifierConfig
        from cytoray.classify.train import ClassifierStage

        cfg = ClassifierConfig(name=name)
        params = {"classifier": dataclasses.asdict(cfg), "input_size": size, "num_classes": 2}
        return Bench(name, ClassifierStage(params), {}, cfg.batch_size), {"x": d["x"], "y": d["y"]}
    if name == "diffusion":
        from cytoray.generators.diffusion import DenoiserParams, DenoiserStage, DiffusionConfig
        from cytoray.training.stage import extend

        cfg = DiffusionConfig().denoiser
        st = DenoiserStage(extend(cfg, DenoiserParams, size=size, labels=2, classes=2))
        arr = {"image": d["image"], "labels": d["labels"], "cls": d["y"]}
        return Bench(name, st, {}, cfg.batch_size), arr
    from cytoray.config import to_plain
    from cytoray.generators.refined_sim import RefinedSimConfig
    from cytoray.generators.refined_stage import RefinedSimStage

    cfg = RefinedSimConfig()
    st = RefinedSimStage({**to_plain(cfg), "size": size})
    st._epoch = next(e for e in range(st.epochs) if st.phase(e) == "joint")
    g, n, P = torch.Generator().manual_seed(0), len(d["A"]), cfg.patch
    arr = {k: torch.rand((n, 3, P, P), generator=g) * 2 - 1 for k in ("init", "real", "style")}
    arr["mask"] = (torch.rand((n, 1, P, P), generator=g) < 0.2).float()
    return Bench(name, st, {}, cfg.batch_size), arr


def run_stage(name: str, a, d: dict) -> dict:
    dev = torch.device("cpu")
    arms = {}
    for arm, (bf16, cl, seed) in ARMS.items():
        b, arr = bench(name, a.size, d)
        b.batch = {k: v[: b.images] for k, v in arr.items()}
        arms[arm] = {
            "r": Runner(b, dev, bf16, cl, seed=seed),
            "arr": arr,
            "cl": cl,
            "t": 0.0,
            "n": 0,
            "loss": [],
        }
    n = len(next(iter(arms["fp32"]["arr"].values())))
    order = torch.Generator().manual_seed(0)
    seq = [
        torch.randperm(n, generator=order)[: arms["fp32"]["r"].b.images]
        for _ in range(a.steps + a.warm)
    ]
    for start in range(0, a.steps + a.warm, a.block):
        for arm, s in arms.items():
            for i in range(start, min(start + a.block, a.steps + a.warm)):
                batch = {k: v[seq[i]] for k, v in s["arr"].items()}
                s["r"].batch = {
                    k: v.contiguous(memory_format=CL) if s["cl"] and v.dim() == 4 else v
                    for k, v in batch.items()
                }
                t0 = time.perf_counter()
                out = s["r"].step()
                dt = time.perf_counter() - t0
                if i >= a.warm:
                    s["t"] += dt
                    s["n"] += 1
                    s["loss"].append({k: float(v) for k, v in out.items()})
    res = {}
    for arm, s in arms.items():
        half = s["loss"][len(s["loss"]) // 2 :]
        res[arm] = {
            "images_per_s": s["n"] * s["r"].b.images / s["t"],
            "steps": s["n"],
            "late_losses": {k: float(np.mean([x[k] for x in half])) for k in half[0]},
        }
    key, ref = KEY[name], res["fp32"]["late_losses"][KEY[name]]
    tol = abs(res["fp32_seed1"]["late_losses"][key] - ref) + 0.1 * abs(ref)
    for arm, m in res.items():
        m["speedup_vs_fp32"] = m["images_per_s"] / res["fp32"]["images_per_s"]
        m["key_loss"], m["key_diff"] = m["late_losses"][key], abs(m["late_losses"][key] - ref)
        m["trains_as_well"] = bool(m["key_diff"] <= tol)
    res["_key"], res["_tolerance"] = key, tol
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--warm", type=int, default=2)
    ap.add_argument("--block", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=64, help="simulated images the batches are drawn from")
    ap.add_argument("--stages", nargs="+", default=list(KEY), choices=list(KEY))
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    d = data(a.size, a.n)
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").exists() else ""
    info = {
        "torch": torch.__version__,
        "threads": a.threads,
        "size": a.size,
        "steps": a.steps,
        "avx512_bf16": " avx512_bf16" in flags,
        "amx_bf16": " amx_bf16" in flags,
    }
    print(json.dumps(info), flush=True)
    result = {"info": info}
    rows = [
        "",
        f"stage        arm          img/s   x fp32  key loss ({'late mean'})  |diff|  tol    trains as well",
    ]
    for name in a.stages:
        t0 = time.perf_counter()
        r = result[name] = run_stage(name, a, d)
        for arm in ARMS:
            m = r[arm]
            rows.append(
                f"{name:12s} {arm:11s} {m['images_per_s']:7.1f}  {m['speedup_vs_fp32']:5.2f}  {r['_key']:7s} {m['key_loss']:9.4f}"
                f"  {m['key_diff']:7.4f}  {r['_tolerance']:.4f}  {m['trains_as_well']}"
            )
        print("\n".join(rows[-len(ARMS) :]) + f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
    print("\n".join(rows))
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "cpu_arith.json").write_text(json.dumps(result, indent=1))
        (Path(a.out) / "cpu_arith.txt").write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
