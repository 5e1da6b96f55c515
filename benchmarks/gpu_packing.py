"""Paper-size training steps on one GPU: images/s per stage (fp32 / bf16 / bf16 + channels_last), then
packed trials (1, 2, 4, 8 processes sharing the GPU), the GPU's busy share and peak memory per process.

    python benchmarks/gpu_packing.py --out OUT [--compile cgan]      # on a GPU (~6.5 min on an H200)
    python benchmarks/gpu_packing.py --out OUT --device cpu --tiny   # the same code paths, tiny, on a CPU

Needs only torch/torchvision/numpy and cytoray's stage modules (no Ray, no MLflow), so it runs where
only PyTorch is installed. Every figure comes from the stages' own `build` / `optimizers` /
`train_step` on synthetic tensors held on the device (the loop holds a split on the device too).

A packed "trial" is the paper study's per-trial training work (configs/studies/syncgan_ratio_paper.yaml:
the search varies the mask GANs' and the CGAN's settings, so every trial trains all of them):
2 class mask GANs x 1600 epochs x 3 steps (45 masks, batch 16) = 9600 steps, the CGAN 200 epochs x
6 steps (90 pairs) = 1200 steps and ResNet-152 50 epochs x 17 steps (90 real + 180 synthetic) = 850
steps, all at 256 px and batch 16. Validation, synthesis, FID and checkpoints are not counted.
Each worker runs that mix step by step (per classifier step 1200/850 CGAN and 9600/850 mask-GAN
steps), so "trials/hour" = work units done per hour / 850.

Processes sharing a GPU are time-sliced unless an MPS daemon runs (`nvidia-cuda-mps-control -d` before, `echo quit |
nvidia-cuda-mps-control` after): results for both are in benchmarks/gpu_packing_h200.md.

Busy share is nvidia-smi's utilization.gpu: the share of time at least one kernel ran, sampled every
0.2 s; it is not SM occupancy (that needs DCGM's sm_active or ncu).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # run from a plain checkout, nothing installed

import torch  # noqa: E402

TRIAL = {
    "mask_gan": 9600,
    "cgan": 1200,
    "classifier": 850,
}  # steps per paper trial (module docstring)
CL = torch.channels_last


# ----------------------------------------------------------------------------- stages at paper size


@dataclasses.dataclass
class Bench:
    """A stage, a batch on the device and how many images one `train_step` consumes."""

    name: str
    stage: object
    batch: dict
    images: int


def _pm1(shape, dev, gen) -> torch.Tensor:
    return (torch.rand(shape, generator=gen) * 2 - 1).to(dev)


# configs/models/syncgan_paper.yaml: the paper's GANs see their images as they are, no EMA of G
PAPER_GAN = {"augment": "none", "diffaug": "", "ema": 0.0}


def _known(cls, **kw) -> dict:
    """The keyword arguments `cls` has fields for (the GAN configs grow small-data keys over time)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in kw.items() if k in names}


def make_bench(name: str, dev: torch.device, tiny: bool, bs: int | None = None) -> Bench:
    """One stage, built from its config dataclass as the code does (new config keys join by default)."""
    g = torch.Generator().manual_seed(0)
    S, width = (32, 8) if tiny else (256, 64)
    if name in ("mask_gan", "gan"):
        from cytoray.generators.gan import (
            LatentGANConfig,
            MaskGANStage,
            VanillaGANStage,
            stage_params,
        )

        cfg = LatentGANConfig(
            **_known(LatentGANConfig, g_base=width, d_base=width, batch_size=bs or 16, **PAPER_GAN)
        )
        st = (MaskGANStage if name == "mask_gan" else VanillaGANStage)(stage_params(cfg, S))
        key, ch = st.input_key, int(st.channels() if hasattr(st, "channels") else st.out_ch)
        x = (
            torch.sign(_pm1((cfg.batch_size, 1, S, S), dev, g))
            if ch == 1
            else _pm1((cfg.batch_size, ch, S, S), dev, g)
        )
        return Bench(name, st, {key: x}, cfg.batch_size)
    if name == "cgan":
        from cytoray.generators.gan import CGANConfig, CGANStage, stage_params

        cfg = CGANConfig(
            **_known(
                CGANConfig,
                g_base=width,
                d_base=width,
                batch_size=bs or 16,
                lam=100.0,
                recon="mse",
                select="val_loss",
                **PAPER_GAN,
            )
        )
        st = CGANStage(stage_params(cfg, S))
        c = int(st.generator_kwargs()["in_ch"])  # 1: a ±1 nucleus mask; more: a one-hot label map
        if c == 1:
            y = torch.sign(_pm1((cfg.batch_size, 1, S, S), dev, g))
        else:
            lab = torch.randint(0, c, (cfg.batch_size, S, S), generator=g)
            y = (torch.nn.functional.one_hot(lab, c).permute(0, 3, 1, 2).float() * 2 - 1).to(dev)
        return Bench(
            name, st, {"mask": y, "image": _pm1((cfg.batch_size, 3, S, S), dev, g)}, cfg.batch_size
        )
    if name == "cyclegan":
        from cytoray.generators.cyclegan import CycleGANConfig, CycleGANStage, stage_params

        cfg = CycleGANConfig(
            g_base=width, d_base=width, n_blocks=2 if tiny else 9, batch_size=bs or 4
        )
        st = CycleGANStage(stage_params(cfg, S, 90))
        b = {k: _pm1((cfg.batch_size, 3, S, S), dev, g) for k in ("A", "B")}
        return Bench(name, st, b, cfg.batch_size)
    if name == "refined_sim":
        from cytoray.config import to_plain
        from cytoray.generators.refined_sim import RefinedSimConfig
        from cytoray.generators.refined_stage import RefinedSimStage

        P = 32 if tiny else 128  # the config: 64-128 px crops and a 32-wide refiner on a GPU
        cfg = RefinedSimConfig(patch=P, batch_size=bs or 8)
        if not tiny:
            cfg.refiner.width = 32
        st = RefinedSimStage({**to_plain(cfg), "size": S})
        st._epoch = next(
            e for e in range(st.epochs) if st.phase(e) == "joint"
        )  # the costliest phase: R, D and S steps
        n = cfg.batch_size
        b = {
            "init": _pm1((n, 3, P, P), dev, g),
            "mask": (torch.rand((n, 1, P, P), generator=g) < 0.2).float().to(dev),
            "real": _pm1((n, 3, P, P), dev, g),
            "style": _pm1((n, 3, P, P), dev, g),
        }
        return Bench(name, st, b, n)
    # the paper classifiers at their input sizes (Inception-V3 at 299 with its auxiliary loss)
    from cytoray.classify.config import ClassifierConfig
    from cytoray.classify.train import ClassifierStage

    net, size = name, (299 if name == "inception_v3" else S)
    if tiny:
        net, size = ("smallcnn", 32) if name != "resnet152" else ("resnet18", 32)
    cfg = ClassifierConfig(name=net, batch_size=bs or 16)
    st = ClassifierStage(
        {"classifier": dataclasses.asdict(cfg), "input_size": size, "num_classes": 2}
    )
    b = {
        "x": torch.rand((cfg.batch_size, 3, size, size), generator=g).to(dev),
        "y": torch.randint(0, 2, (cfg.batch_size,), generator=g).to(dev),
    }
    return Bench(name, st, b, cfg.batch_size)


STAGES = (
    "mask_gan",
    "gan",
    "cgan",
    "cyclegan",
    "refined_sim",
    "resnet152",
    "densenet161",
    "inception_v3",
)


class Runner:
    """A bench's models, optimisers and step under one arithmetic mode."""

    def __init__(
        self,
        b: Bench,
        dev: torch.device,
        bf16: bool,
        cl: bool,
        compile_: bool = False,
        seed: int = 0,
    ):
        from cytoray.training.stage import amp_context

        torch.manual_seed(seed)
        self.b, self.dev = b, dev
        self.models = b.stage.build(dev)
        if cl:
            self.models = {k: m.to(memory_format=CL) for k, m in self.models.items()}
            self.batch = {
                k: v.contiguous(memory_format=CL) if v.dim() == 4 else v for k, v in b.batch.items()
            }
        else:
            self.batch = b.batch
        self.opts = b.stage.optimizers(self.models)
        if compile_:
            self.models = {k: torch.compile(m) for k, m in self.models.items()}
        self.gen = b.stage.rng(dev, seed, 0)
        self.amp = amp_context(dev, bf16, cpu_bf16=bf16)

    def step(self) -> dict:
        return self.b.stage.train_step(self.models, self.opts, self.batch, self.gen, self.amp)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def losses_of(out: dict) -> dict:
    return {k: float(v) for k, v in out.items()}


def time_steps(r: Runner, warm: int, min_s: float, min_steps: int) -> dict:
    """Warm-up steps (cuDNN autotuning, allocator), then steps until min_s and min_steps have passed."""
    for _ in range(warm):
        r.step()
    sync(r.dev)
    if r.dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(r.dev)
    n, t0 = 0, time.perf_counter()
    while True:
        out = r.step()
        n += 1
        if n >= min_steps and time.perf_counter() - t0 >= min_s:
            break
    sync(r.dev)
    dt = time.perf_counter() - t0
    res = {
        "steps": n,
        "seconds": dt,
        "images_per_s": n * r.b.images / dt,
        "last_losses": losses_of(out),
    }
    if r.dev.type == "cuda":
        res["peak_mem_gib"] = torch.cuda.max_memory_allocated(r.dev) / 2**30
    return res


# ----------------------------------------------------------------------------- GPU busy share


class BusySampler:
    """nvidia-smi's utilization.gpu every 0.2 s while running (no samples where there is no nvidia-smi)."""

    def __init__(self, on: bool):
        self.p = None
        if on:
            try:
                self.p = subprocess.Popen(
                    [
                        "nvidia-smi",
                        "--query-gpu=utilization.gpu,memory.used",
                        "--format=csv,noheader,nounits",
                        "-lms",
                        "200",
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            except OSError:
                self.p = None

    def stop(self) -> dict:
        if self.p is None:
            return {}
        self.p.terminate()
        text, _ = self.p.communicate(timeout=10)
        rows = [
            [float(x) for x in line.split(",")]
            for line in text.splitlines()
            if line.count(",") == 1
        ]
        rows = rows[2:-1] or rows  # drop the ramp at either end
        if not rows:
            return {}
        util = [r[0] for r in rows]
        return {
            "busy_pct_mean": sum(util) / len(util),
            "busy_pct_median": sorted(util)[len(util) // 2],
            "mem_used_gib_max": max(r[1] for r in rows) / 1024,
            "samples": len(rows),
        }


# ----------------------------------------------------------------------------- part A: one stage at a time


def per_stage(a, dev: torch.device, log) -> dict:
    modes = {"fp32": (False, False), "bf16": (True, False), "bf16_cl": (True, True)}
    res: dict = {}
    for name in a.stages:
        res[name] = {}
        for mode, (bf16, cl) in modes.items():
            try:
                r = Runner(make_bench(name, dev, a.tiny), dev, bf16, cl)
                s = BusySampler(dev.type == "cuda")
                res[name][mode] = {**time_steps(r, a.warm, a.min_s, 3), **s.stop()}
                del r
            except Exception as e:  # one stage's failure must not cost the other figures
                res[name][mode] = {
                    "error": f"{type(e).__name__}: {e}",
                    "trace": traceback.format_exc()[-1500:],
                }
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            log(f"{name:12s} {mode:8s} " + _fmt(res[name][mode]))
    return res


def _fmt(m: dict) -> str:
    if "error" in m:
        return "ERROR " + m["error"][:200]
    s = f"{m['images_per_s']:9.1f} img/s"
    s += f"  peak {m['peak_mem_gib']:6.2f} GiB" if "peak_mem_gib" in m else ""
    s += f"  busy {m['busy_pct_mean']:5.1f}%" if "busy_pct_mean" in m else ""
    return s


# ----------------------------------------------------------------------------- part B: packed trials


def worker(a) -> None:
    """One packed process: the trial mix (module docstring) in the phases the parent announces."""
    dev = torch.device(a.device)
    torch.set_num_threads(a.threads)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    cl = json.loads(a.cl)
    d, i = Path(a.sync_dir), a.index
    runners = {
        k: Runner(make_bench(n, dev, a.tiny), dev, True, cl.get(n, False), seed=i)
        for k, n in (("mask_gan", "mask_gan"), ("cgan", "cgan"), ("classifier", "resnet152"))
    }
    for r in runners.values():
        for _ in range(a.warm):
            r.step()
    sync(dev)
    (d / f"ready_{i}").write_text("1")
    per = {k: TRIAL[k] / TRIAL["classifier"] for k in TRIAL}
    for phase in a.phases:
        go = d / f"go_{phase}.json"
        while not go.exists():
            time.sleep(0.02)
        g = json.loads(go.read_text())
        if i >= g["n"]:
            continue
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        while time.time() < g["t0"]:
            time.sleep(0.002)
        acc = {k: 0.0 for k in TRIAL}
        units, t0 = 0, time.perf_counter()
        while time.time() < g["t1"]:
            for k in ("mask_gan", "cgan", "classifier"):
                acc[k] += per[k]
                while acc[k] >= 1:
                    runners[k].step()
                    acc[k] -= 1
            units += 1
        sync(dev)
        dt = time.perf_counter() - t0
        out = {"units": units, "seconds": dt, "units_per_s": units / dt}
        if dev.type == "cuda":
            out["peak_mem_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
            out["peak_reserved_gib"] = torch.cuda.max_memory_reserved(dev) / 2**30
        tmp = d / f"res_{phase}_{i}.tmp"
        tmp.write_text(json.dumps(out))
        tmp.rename(d / f"res_{phase}_{i}.json")


def packing(a, cl: dict, left_s, log) -> dict:
    """Start max(procs) workers once (each warmed up), then let 1, 2, 4, 8 of them run at once."""
    import tempfile

    nmax = max(a.procs)
    d = Path(tempfile.mkdtemp(prefix="packing-"))
    phases = [str(n) for n in a.procs]
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--device",
        a.device,
        "--sync-dir",
        str(d),
        "--cl",
        json.dumps(cl),
        "--threads",
        str(a.threads),
        "--warm",
        str(a.warm),
        "--phases",
        *phases,
    ]
    cmd += ["--tiny"] if a.tiny else []
    t_start = time.perf_counter()
    logs = [open(d / f"worker_{i}.log", "w") for i in range(nmax)]
    procs = [
        subprocess.Popen([*cmd, "--index", str(i)], stdout=logs[i], stderr=subprocess.STDOUT)
        for i in range(nmax)
    ]
    res: dict = {"trial_units": TRIAL, "procs": {}}
    try:
        while sum((d / f"ready_{i}").exists() for i in range(nmax)) < nmax:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a worker died during start-up:\n" + _tails(d, nmax))
            if time.perf_counter() - t_start > a.start_timeout:
                raise RuntimeError(
                    f"workers not ready after {a.start_timeout} s:\n" + _tails(d, nmax)
                )
            time.sleep(0.1)
        res["startup_s"] = time.perf_counter() - t_start
        log(f"packing: {nmax} workers ready in {res['startup_s']:.0f} s")
        for n in a.procs:
            if left_s() < a.window + 15:
                res["skipped"] = res.get("skipped", []) + [n]
                log(f"packing {n} proc: skipped ({left_s():.0f} s of the budget left)")
                (d / f"go_{n}.json").write_text(
                    json.dumps({"n": 0, "t0": 0, "t1": 0})
                )  # no worker runs it
                continue
            t0 = time.time() + 0.5
            tmp = d / f"go_{n}.tmp"
            tmp.write_text(json.dumps({"n": n, "t0": t0, "t1": t0 + a.window}))
            s = BusySampler(a.device == "cuda")
            tmp.rename(d / f"go_{n}.json")
            while sum((d / f"res_{n}_{i}.json").exists() for i in range(n)) < n:
                if any(p.poll() not in (None, 0) for p in procs[:n]):
                    raise RuntimeError("a worker died:\n" + _tails(d, nmax))
                time.sleep(0.05)
            busy = s.stop()
            per = [json.loads((d / f"res_{n}_{i}.json").read_text()) for i in range(n)]
            tot = sum(p["units_per_s"] for p in per)
            res["procs"][n] = {
                "units_per_s": tot,
                "trials_per_hour": tot * 3600 / TRIAL["classifier"],
                "per_process": per,
                **busy,
            }
            log(
                f"packing {n} proc: {res['procs'][n]['trials_per_hour']:.3f} trials/h  "
                + _fmt_pack(res["procs"][n])
            )
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
        log("packing ERROR " + res["error"][:2000])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for f in logs:
            f.close()
    return res


def _fmt_pack(m: dict) -> str:
    mem = max((p.get("peak_mem_gib", 0.0) for p in m["per_process"]), default=0.0)
    busy = f"busy {m['busy_pct_mean']:.0f}%" if "busy_pct_mean" in m else ""
    return f"{m['units_per_s']:.3f} units/s  peak/proc {mem:.2f} GiB  {busy}"


def _tails(d: Path, n: int) -> str:
    return "\n".join(
        f"[worker {i}] " + (d / f"worker_{i}.log").read_text()[-800:] for i in range(n)
    )


# ----------------------------------------------------------------------------- part C: torch.compile


def compile_child(a, dev: torch.device) -> None:
    """One stage under torch.compile (bf16), in its own process so the parent can stop a slow compile."""
    name = a.compile_child
    t0 = time.perf_counter()
    r = Runner(make_bench(name, dev, a.tiny), dev, True, False, compile_=True)
    for _ in range(2):  # compiles forward and backward
        r.step()
    sync(dev)
    comp_s = time.perf_counter() - t0
    print("RESULT " + json.dumps({**time_steps(r, 1, a.min_s, 3), "compile_s": comp_s}), flush=True)


def compiled(a, dev: torch.device, plain: dict, left_s, log) -> dict:
    res = {}
    for name in a.compile:
        limit = left_s() - 15
        if limit < 60:
            res[name] = {"error": f"skipped: {limit + 15:.0f} s of the budget left"}
        else:
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--compile-child",
                name,
                "--device",
                a.device,
                "--min-s",
                str(a.min_s),
                *(["--tiny"] if a.tiny else []),
            ]
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
                line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
                if not line:
                    raise RuntimeError(f"exit {p.returncode}: {p.stderr[-1500:]}")
                m = json.loads(line[-1][7:])
                base = plain.get(name, {}).get("bf16", {}).get("images_per_s")
                res[name] = {**m, "speedup_vs_bf16": m["images_per_s"] / base if base else None}
            except subprocess.TimeoutExpired:
                res[name] = {"error": f"compile and timing did not finish within {limit:.0f} s"}
            except Exception as e:
                res[name] = {"error": f"{type(e).__name__}: {e}"}
        log(f"{name:12s} bf16+compile {_fmt(res[name])}")
    return res


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="folder for gpu_packing.json and gpu_packing.txt")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--tiny",
        action="store_true",
        help="32 px, narrow nets, small classifiers: a quick CPU check",
    )
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--procs", nargs="*", type=int, default=[1, 2, 4, 8])
    ap.add_argument(
        "--window", type=float, default=25.0, help="seconds each packing phase is measured"
    )
    ap.add_argument(
        "--min-s",
        type=float,
        default=1.5,
        help="seconds each per-stage figure is measured (at least)",
    )
    ap.add_argument("--warm", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads per process")
    ap.add_argument("--start-timeout", type=float, default=150.0)
    ap.add_argument(
        "--compile",
        nargs="*",
        default=[],
        choices=STAGES,
        help="also time these stages under torch.compile",
    )
    ap.add_argument("--skip-stages", action="store_true")
    ap.add_argument(
        "--budget", type=float, default=420.0, help="seconds: later parts are skipped or cut to fit"
    )
    # worker-only
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--sync-dir", help=argparse.SUPPRESS)
    ap.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument(
        "--cl",
        default="{}",
        help="JSON {stage: bool}: channels_last in the packed workers (default: measured)",
    )
    ap.add_argument("--phases", nargs="*", default=[], help=argparse.SUPPRESS)
    ap.add_argument("--compile-child", choices=STAGES, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    if a.compile_child:
        return compile_child(a, torch.device(a.device))
    t_begin = time.perf_counter()

    def left_s() -> float:
        return a.budget - (time.perf_counter() - t_begin)

    dev = torch.device(a.device)
    torch.set_num_threads(a.threads if dev.type == "cuda" else torch.get_num_threads())
    if dev.type == "cuda":
        # fixed shapes: autotuned convolutions (the warm-up pays for it)
        torch.backends.cudnn.benchmark = True
    out = Path(a.out or ".")
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def log(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    info = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "tiny": a.tiny,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "fp32_means": "float32 tensors; cuDNN convolutions may use TF32 (torch.backends.cudnn.allow_tf32="
        f"{torch.backends.cudnn.allow_tf32}), matmuls {torch.get_float32_matmul_precision()}",
    }
    log(json.dumps(info))
    result: dict = {"info": info}

    def save() -> None:
        (out / "gpu_packing.json").write_text(json.dumps(result, indent=1, default=str))
        (out / "gpu_packing.txt").write_text("\n".join(lines) + "\n")

    t0 = time.perf_counter()
    result["stages"] = {} if a.skip_stages else per_stage(a, dev, log)
    result["stages_s"] = time.perf_counter() - t0
    save()
    # channels_last for a packed stage only where it measured faster under bf16 here
    cl = {}
    for n in ("mask_gan", "cgan", "resnet152"):
        m = result["stages"].get(n, {})
        x, y = m.get("bf16", {}).get("images_per_s"), m.get("bf16_cl", {}).get("images_per_s")
        cl[n] = bool(x and y and y > 1.02 * x)
    cl.update(json.loads(a.cl))  # --cl '{"cgan": true}' decides instead of this run's figures
    result["packing_channels_last"] = cl
    t1 = time.perf_counter()
    result["packing"] = packing(a, cl, left_s, log) if a.procs else {}
    result["packing_s"] = time.perf_counter() - t1
    save()
    if a.compile:
        result["compile"] = compiled(a, dev, result["stages"], left_s, log)
    log(summary(result))
    save()


def summary(r: dict) -> str:
    rows = [
        "",
        "stage         fp32 img/s   bf16 img/s  bf16+CL img/s  bf16/fp32  peak GiB (bf16)  busy% (bf16)",
    ]
    for name, m in r.get("stages", {}).items():
        f = [m.get(k, {}).get("images_per_s") for k in ("fp32", "bf16", "bf16_cl")]
        cell = ["%10.1f" % v if v else "%10s" % "err" for v in f]
        ratio = "%9.2f" % (f[1] / f[0]) if f[0] and f[1] else "%9s" % "-"
        pk, busy = m.get("bf16", {}).get("peak_mem_gib"), m.get("bf16", {}).get("busy_pct_mean")
        rows.append(
            f"{name:12s} {cell[0]}   {cell[1]}     {cell[2]}  {ratio}  {pk or 0:14.2f}  {busy or 0:11.0f}"
        )
    p = r.get("packing", {}).get("procs", {})
    if p:
        one = p.get(1, {}).get("trials_per_hour")
        rows += ["", "procs  trials/hour  x one  busy% mean  peak GiB/proc (max)"]
        for n, m in p.items():
            mem = max((q.get("peak_mem_gib", 0.0) for q in m["per_process"]), default=0.0)
            x = m["trials_per_hour"] / one if one else float("nan")
            rows.append(
                f"{n:5d}  {m['trials_per_hour']:11.3f}  {x:5.2f}  {m.get('busy_pct_mean', float('nan')):10.1f}  {mem:10.2f}"
            )
    if r.get("packing", {}).get("error"):
        rows.append("packing error: " + r["packing"]["error"][:300])
    for name, m in r.get("compile", {}).items():
        rows.append(
            f"compile {name}: "
            + (
                _fmt(m)
                + f" ({m['speedup_vs_bf16'] or 0:.2f}x bf16, compile {m['compile_s']:.0f} s)"
                if "error" not in m
                else m["error"][:200]
            )
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
