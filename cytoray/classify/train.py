"""Classifier training under Ray Train, selection on validation, one test evaluation.

`train_classifier` runs `classifier_loop` through `distributed.runner.run_stage`, so it
shares the generator stages' content-keyed cache and resume: the run name hashes the
classifier config, the caller's data key, the exact composition of the train/val/test sets
(names, image hashes, labels: `policies.set_key`) and the seed. A rerun of a study finds a
finished cell by name and returns it, test probabilities included, without training again.

Protocol (honest evaluation, ARCHITECTURE.md):
- each epoch reports validation accuracy, balanced accuracy and loss; the best epoch has the
  highest validation balanced accuracy, ties broken by the lower validation loss;
- the training loop never sees the test split. After training the driver loads the best
  model and predicts the test split once; the probabilities are stored with the cached run,
  so a cache hit returns them instead of touching the test split again.

Batches: the whole training set sits on the device as one float tensor (resized once if
`image_size` differs), a batch is an index into it. `sampler: shuffle` permutes the set each
epoch (policies are class-balanced by construction); `sampler: balanced` draws n indices
with replacement, weighted 1/count(class), for imbalanced real data.

Distributed: with `run_cfg.num_workers > 1` the model is wrapped in DDP and each rank trains
on an equal shard of the shared epoch order (the remainder is dropped so every rank takes the
same number of steps); train loss/accuracy are all-reduced. Checkpoints use the generator
loop's file names because `run_stage` copies them: `best_generator.pt` holds the best classifier.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.folder import ImageSet
from ..errors import CytorayError
from ..io import atomic_path, sha256_file
from .config import ClassifierConfig
from .policies import set_key

STAGE = "classifier"
_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics: what torchvision weights expect, harmless from scratch
_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass
class ClassifierResult:
    history: list[dict]  # per-epoch train/val metrics
    best_epoch: int  # 0-based epoch chosen on validation
    val_metrics: dict  # accuracy, balanced_accuracy, loss at the best epoch
    test_prob: np.ndarray  # float [N_test, C] softmax of the best model
    test_labels: np.ndarray  # int [N_test]
    model_state: dict  # best model's state dict, on the CPU
    params: dict  # flat run params incl. "weights": "imagenet:<path>" | "scratch"
    test_names: list[str] = dataclasses.field(default_factory=list)  # ids for paired comparisons
    cached: bool = False
    seconds: float = 0.0
    dir: Path | None = None  # cache folder of the finished run


# ----------------------------------------------------------------------------- tensors and metrics


def to_input(images, size: int, device: torch.device) -> torch.Tensor:
    """uint8 [N,H,W,3] → float [N,3,size,size] in [0, 1] on `device` (resized there if needed)."""
    x = torch.as_tensor(np.array(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
    return x


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def predict_proba(model: torch.nn.Module, x: torch.Tensor, batch: int, amp=None) -> np.ndarray:
    """Softmax probabilities [N, C] of an eval-mode model on [0,1] inputs `x`."""
    from ..nets.classifiers import classifier_logits

    model.eval()
    out = []
    for i in range(0, len(x), batch):
        with (amp or contextlib.nullcontext)():
            logits, _ = classifier_logits(model, model(normalize(x[i : i + batch])))
        out.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(out).numpy()


def selection_metrics(prob: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Validation metrics for model selection: accuracy, balanced accuracy, mean NLL loss.

    Accuracy and balanced accuracy come from `metrics.classification`, so selection and the
    reported test numbers share one definition (balanced accuracy: mean recall over classes present).
    """
    from ..metrics.classification import classification_metrics

    labels = np.asarray(labels)
    m = classification_metrics(labels, prob)
    nll = -np.log(np.clip(prob[np.arange(len(labels)), labels], 1e-12, None))
    return {"accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"], "loss": float(nll.mean())}


def better(m: dict, best: dict | None) -> bool:
    """Higher validation balanced accuracy wins; equal → lower validation loss."""
    if best is None:
        return True
    if not math.isclose(m["balanced_accuracy"], best["balanced_accuracy"], abs_tol=1e-9):
        return m["balanced_accuracy"] > best["balanced_accuracy"]
    return m["loss"] < best["loss"]


def epoch_order(labels: torch.Tensor, sampler: str, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's index sequence (CPU), identical on every rank: seeded by (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    n = len(labels)
    if sampler == "balanced":
        counts = torch.bincount(labels.cpu())
        w = 1.0 / counts[labels.cpu()].double()
        return torch.multinomial(w, n, replacement=True, generator=g)
    return torch.randperm(n, generator=g)


# ----------------------------------------------------------------------------- worker loop


def classifier_loop(config: dict) -> None:
    """`train_loop_per_worker` for one classifier (config built by `run_stage`)."""
    import ray.train
    import ray.train.torch

    from ..config import from_dict
    from ..distributed.train_loop import BEST_FILE, META_FILE, STATE_FILE, quiet_report_log
    from ..generators.stages import amp_context
    from ..nets.classifiers import build_classifier, classifier_logits
    from .augment import augment_batch

    # 1. Context: rank, device, seeds, the config rebuilt from plain params.
    quiet_report_log()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    p, seed, label = config["params"], int(config["seed"]), config["label"]
    cfg = from_dict(ClassifierConfig, p["classifier"], f"{label} params")
    size, n_cls = int(p["input_size"]), int(p["num_classes"])
    amp = amp_context(device, bool(config.get("mixed_precision", True)))

    # 2. Data: both splits on the device once, resized there; batches index into them.
    x, y = to_input(config["train"]["x"], size, device), torch.as_tensor(np.array(config["train"]["y"])).to(device)
    xv, yv = to_input(config["val"]["x"], size, device), np.asarray(config["val"]["y"])

    # 3. Model (same init on every rank), optimiser, loss, and the checkpoint to resume from.
    torch.manual_seed(seed)
    model = build_classifier(cfg.name, n_cls, size, cfg.weights_path).to(device)
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ce = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    aug_gen = torch.Generator(device=device).manual_seed(seed * 7919 + rank)
    state: dict = {"epoch": -1, "best_epoch": -1, "best_val": None, "history": []}
    best: dict = {}
    ckpt = ray.train.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            st = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["opt"])
            aug_gen.set_state(st["aug_rng"])
            state = st["state"]
            best = torch.load(Path(d) / BEST_FILE, map_location="cpu")
        if rank == 0:
            print(f"[{label}] resumed after epoch {state['epoch'] + 1}", flush=True)
    net = ray.train.torch.prepare_model(model, move_to_device=False) if world > 1 else model

    meta = {"stage": STAGE, "label": label, "params": p}
    for epoch in range(state["epoch"] + 1, cfg.epochs):
        # 4. One epoch: shared order, equal shards (DDP needs equal step counts), batches >= 2 (BatchNorm).
        t0 = time.perf_counter()
        torch.manual_seed(seed * 1000003 + epoch * world + rank)  # dropout stream: resumable per epoch
        order = epoch_order(y, cfg.sampler, seed, epoch)
        shard = order[: len(order) - len(order) % world][rank::world].to(device)
        net.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # on device: one sync per epoch
        correct = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        for i in range(0, len(shard), cfg.batch_size):
            idx = shard[i : i + cfg.batch_size]
            if len(idx) < 2:
                continue
            xb, yb = x[idx], y[idx]
            if cfg.online_augment:
                xb = augment_batch(xb, aug_gen, cfg.augment)
            with amp():
                logits, aux = classifier_logits(model, net(normalize(xb)))
                loss = ce(logits.float(), yb)
                if aux is not None:  # Inception-V3 at >= 299 px
                    loss = loss + cfg.aux_weight * ce(aux.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach().double() * len(idx)
            correct += (logits.argmax(1) == yb).sum()
            seen += len(idx)
        tot = torch.stack([loss_sum, correct, torch.tensor(float(seen), dtype=torch.float64, device=device)])
        if world > 1:  # the history shows the whole epoch, not rank 0's shard
            torch.distributed.all_reduce(tot)
        loss_sum, correct, seen = tot.tolist()
        dt = time.perf_counter() - t0

        # 5. Validation (float32, like the test evaluation) and best-epoch selection.
        vm = selection_metrics(predict_proba(model, xv, cfg.eval_batch_size), yv)
        if better(vm, state["best_val"]):
            state["best_val"], state["best_epoch"] = vm, epoch
            best = {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
        metrics = {
            "epoch": epoch,
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            **{f"val_{k}": v for k, v in vm.items()},
            "best_epoch": state["best_epoch"],
            "images_per_s": seen / dt,
            "epoch_s": dt,
        }
        state["epoch"] = epoch
        state["history"].append(metrics)

        # 6. Report every epoch; rank 0 attaches a checkpoint every `checkpoint_every` epochs and
        #    at the end (model + Adam state + best model is ~4x the weights: ~1 GB for ResNet-152).
        last = epoch == cfg.epochs - 1
        with_ckpt = rank == 0 and (last or (epoch + 1) % int(config.get("checkpoint_every", 1)) == 0)
        if rank == 0:
            print(
                f"[{label}] epoch {epoch + 1}/{cfg.epochs} loss {metrics['train_loss']:.4f} "
                f"val_bacc {vm['balanced_accuracy']:.3f} val_loss {vm['loss']:.4f} ({metrics['images_per_s']:.1f} img/s)",
                flush=True,
            )
        if with_ckpt:
            with tempfile.TemporaryDirectory() as d:
                d = Path(d)
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "aug_rng": aug_gen.get_state(), "state": state}, d / STATE_FILE)
                torch.save(best, d / BEST_FILE)
                info = {**meta, "epoch": epoch, "best_epoch": state["best_epoch"], "val_metrics": state["best_val"]}
                (d / META_FILE).write_text(json.dumps(info, indent=2, default=str))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)


# ----------------------------------------------------------------------------- driver


def _check_sets(train: ImageSet, val: ImageSet, test: ImageSet | None) -> None:
    for what, ds in (("validation", val), ("test", test)):
        if ds is None:
            continue
        if tuple(ds.class_names) != tuple(train.class_names):
            raise CytorayError(f"{what} classes {list(ds.class_names)} differ from training classes {list(train.class_names)}")
        if len(ds) == 0:
            raise CytorayError(f"the {what} split is empty; the classifier needs it (check data.split_ratios)")
        if ds.images.shape[1:] != train.images.shape[1:]:
            raise CytorayError(f"{what} images are {ds.images.shape[1:]} but training images are {train.images.shape[1:]}")
    absent = [c for c, n in train.counts().items() if n == 0]
    if absent:
        raise CytorayError(f"training set has no images of class {absent[0]!r}; check the policy and the split")


def _result(final: Path, cached: bool, seconds: float, params: dict, test_file: str | None) -> ClassifierResult:
    from ..distributed.train_loop import BEST_FILE, META_FILE

    done = json.loads((final / "done.json").read_text())
    meta = json.loads((final / META_FILE).read_text())
    if test_file is None:  # not evaluated on test (a search trial)
        t = {"prob": np.zeros((0, 0)), "labels": np.zeros(0, np.int64), "names": np.array([], dtype=str)}
    else:
        t = np.load(final / test_file)
    return ClassifierResult(
        history=done["history"],
        best_epoch=int(meta["best_epoch"]),
        val_metrics=meta["val_metrics"],
        test_prob=t["prob"],
        test_labels=t["labels"],
        model_state=torch.load(final / BEST_FILE, map_location="cpu"),
        params=params,
        test_names=t["names"].tolist(),
        cached=cached,
        seconds=seconds,
        dir=final,
    )


def train_classifier(
    train: ImageSet,
    val: ImageSet,
    test: ImageSet | None,
    cfg: ClassifierConfig,
    *,
    label: str,
    cache_root: str | Path,
    data_key: str,
    run_cfg,
    seed: int,
    use_cache: bool = True,
    callbacks: list | None = None,
) -> ClassifierResult:
    """Train one classifier on `train` (Ray Train), pick its best epoch on `val`, predict `test` once.

    `run_cfg` is a `generators.config.RunConfig` (workers, GPU, storage); `seed` replaces its
    seed. Everything that can be rejected (config, image size, mismatched splits) is rejected
    before any job starts. `test=None` trains (or reuses) the model without touching the test
    split: a search trial selects on validation only, and the study evaluates the chosen
    configuration's test split once at the end through the same cached model. `callbacks`
    go to Ray Train (e.g. Tune's report callback, so ASHA sees each validation epoch).
    """
    from ..distributed.runner import run_stage
    from ..distributed.train_loop import BEST_FILE
    from ..nets.classifiers import build_classifier

    # 1. Checks before any job: config, sizes, splits.
    cfg.validate()
    _check_sets(train, val, test)
    size = cfg.check_size(int(train.images.shape[1]))
    params = {"classifier": dataclasses.asdict(cfg), "input_size": size, "num_classes": len(train.class_names)}
    if cfg.weights_path:  # the weights' content, not their path, shapes the run
        params["weights_sha256"] = sha256_file(cfg.weights_path)
    run_params = {
        **cfg.params(int(train.images.shape[1])),
        "seed": seed, "n_train": len(train), "n_val": len(val), "n_test": len(test) if test is not None else 0,
        **{f"n_train.{c}": n for c, n in train.counts().items()},
        "train_source": train.source,
    }

    # 2. Cache key: config, caller's data key, train/val compositions, seed. The test split does
    #    not shape the model, so it is not in the key; its predictions are stored per test set.
    dkey = f"{data_key}|train={set_key(train)}|val={set_key(val)}"
    test_file = None if test is None else f"test-{set_key(test)}.npz"

    # 3. Train under Ray Train, or reuse the finished run (run_stage's cache).
    res = run_stage(
        STAGE,
        params,
        train={"x": train.images, "y": train.labels},
        val={"x": val.images, "y": val.labels},
        fixed={},
        label=label,
        data_key=dkey,
        cache_root=cache_root,
        run_cfg=dataclasses.replace(run_cfg, seed=seed),
        use_cache=use_cache,
        loop=classifier_loop,
        callbacks=callbacks,
    )
    if test_file is None or (res.dir / test_file).is_file():
        return _result(res.dir, res.cached, res.seconds, run_params, test_file)

    # 4. The one test evaluation: best-on-validation model, on the driver, stored with the run.
    device = torch.device("cuda" if run_cfg.use_gpu and torch.cuda.is_available() else "cpu")
    model = build_classifier(cfg.name, len(train.class_names), size)
    model.load_state_dict(torch.load(res.dir / BEST_FILE, map_location="cpu"))
    prob = predict_proba(model.to(device), to_input(test.images, size, device), cfg.eval_batch_size)
    with atomic_path(res.dir / test_file) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, prob=prob, labels=test.labels, names=np.array(test.names))
    return _result(res.dir, res.cached, res.seconds, run_params, test_file)
