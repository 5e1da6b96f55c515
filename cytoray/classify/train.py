"""Classifier training under Ray Train, selection on validation, one test evaluation.

`train_classifier` runs `ClassifierStage` on the one training loop (`training/loop.py`), so it
shares the generator stages' content-keyed cache and resume: the run name hashes the
classifier config, the caller's data key, the exact composition of the train/val sets
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
same number of steps); train loss/accuracy are all-reduced by the loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.folder import ImageSet
from ..errors import CytorayError
from ..io import atomic_path, sha256_file
from ..metrics import names
from ..training.runner import StageResult, run_stages
from ..training.stage import Stage, StageSpec, unwrap
from .config import ClassifierConfig
from .policies import set_key

# ImageNet statistics: what torchvision weights expect, harmless from scratch
_MEAN = (
    0.485,
    0.456,
    0.406,
)
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
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        ).clamp_(0, 1)
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
    return {
        "accuracy": m["accuracy"],
        "balanced_accuracy": m["balanced_accuracy"],
        "loss": float(nll.mean()),
    }


def epoch_order(labels: torch.Tensor, sampler: str, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's index sequence (CPU), identical on every rank: seeded by (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    n = len(labels)
    if sampler == "balanced":
        counts = torch.bincount(labels.cpu())
        w = 1.0 / counts[labels.cpu()].double()
        return torch.multinomial(w, n, replacement=True, generator=g)
    return torch.randperm(n, generator=g)


# ----------------------------------------------------------------------------- the stage


class ClassifierStage(Stage):
    """One classifier on the shared loop: cross-entropy (+ Inception's auxiliary head), optional
    on-device augmentation, best epoch = highest validation balanced accuracy, ties → lower loss."""

    kind, keep = "classifier", "net"

    def __init__(self, params: dict) -> None:
        from ..config import from_dict

        super().__init__(params)
        self.cfg = from_dict(ClassifierConfig, params["classifier"], "classifier params")
        self.size, self.n_cls = int(params["input_size"]), int(params["num_classes"])

    @property
    def epochs(self) -> int:
        return self.cfg.epochs

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size

    def prepare(self, arrays, device):
        if not arrays:
            return {}
        return {
            "x": to_input(arrays["x"], self.size, device),
            "y": torch.as_tensor(np.array(arrays["y"])).to(device),
        }

    def order(self, train, epoch, seed):
        return epoch_order(train["y"], self.cfg.sampler, seed, epoch)

    def rng(self, device, seed, rank):
        # augmentation draws on the device
        return torch.Generator(device=device).manual_seed(seed * 7919 + rank)

    def build(self, device):
        from ..nets.classifiers import build_classifier

        return {
            "net": build_classifier(
                self.cfg.name,
                self.n_cls,
                self.size,
                self.cfg.weights_file(),
                transform_input=self.cfg.transform_input(),
            ).to(device)
        }

    def optimizers(self, models):
        opt_cls = torch.optim.AdamW if self.cfg.optimizer == "adamw" else torch.optim.Adam
        return {
            "net": opt_cls(
                models["net"].parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay
            )
        }

    def train_step(self, models, opts, batch, gen, amp):
        from ..nets.classifiers import classifier_logits
        from .augment import augment_batch

        cfg, net = self.cfg, models["net"]
        xb, yb = batch["x"], batch["y"]
        if cfg.online_augment:
            xb = augment_batch(xb, gen, cfg.augment)
        net.train()
        with amp():
            logits, aux = classifier_logits(unwrap(net), net(normalize(xb)))
            loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
            if aux is not None:  # Inception-V3 at >= 299 px
                loss = loss + cfg.aux_weight * F.cross_entropy(
                    aux.float(), yb, label_smoothing=cfg.label_smoothing
                )
        opts["net"].zero_grad(set_to_none=True)
        loss.backward()
        opts["net"].step()
        # device tensors: the loop sums them on the device and syncs once per epoch
        return {
            "train_loss": loss.detach(),
            "train_accuracy": (logits.argmax(1) == yb).double().mean(),
        }

    def validate(self, models, val, amp):
        """Float32, like the test evaluation."""
        vm = selection_metrics(
            predict_proba(models["net"], val["x"], self.cfg.eval_batch_size), val["y"].cpu().numpy()
        )
        return {f"val_{k}": v for k, v in vm.items()}

    def selection(self, metrics, epoch):
        return (-round(metrics[names.VAL_BACC], 9), metrics[names.VAL_LOSS])

    def progress(self, m):
        return f"loss {m['train_loss']:.4f} val_bacc {m['val_balanced_accuracy']:.3f} val_loss {m['val_loss']:.4f}"


# ----------------------------------------------------------------------------- driver


def _check_sets(train: ImageSet, val: ImageSet, test: ImageSet | None) -> None:
    for what, ds in (("validation", val), ("test", test)):
        if ds is None:
            continue
        if tuple(ds.class_names) != tuple(train.class_names):
            raise CytorayError(
                f"{what} classes {list(ds.class_names)} differ "
                f"from training classes {list(train.class_names)}"
            )
        if len(ds) == 0:
            raise CytorayError(
                f"the {what} split is empty; the classifier needs it (check data.split_ratios)"
            )
        if ds.images.shape[1:] != train.images.shape[1:]:
            raise CytorayError(
                f"{what} images are {ds.images.shape[1:]} but "
                f"training images are {train.images.shape[1:]}"
            )
    absent = [c for c, n in train.counts().items() if n == 0]
    if absent:
        raise CytorayError(
            f"training set has no images of class {absent[0]!r}; check the policy and the split"
        )


def _result(res: StageResult, params: dict, test_file: str | None) -> ClassifierResult:
    if test_file is None:  # not evaluated on test (a search trial)
        t = {
            "prob": np.zeros((0, 0)),
            "labels": np.zeros(0, np.int64),
            "names": np.array([], dtype=str),
        }
    else:
        t = np.load(res.dir / test_file)
    best = res.meta["best_metrics"]
    return ClassifierResult(
        history=res.history,
        best_epoch=int(res.meta["best_epoch"]),
        val_metrics={
            k[len("val_") :]: best[k] for k in (names.VAL_ACCURACY, names.VAL_BACC, names.VAL_LOSS)
        },
        test_prob=t["prob"],
        test_labels=t["labels"],
        model_state=res.best_state(),
        params=params,
        test_names=t["names"].tolist(),
        cached=res.cached,
        seconds=res.seconds,
        dir=res.dir,
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

    `run_cfg` is a `training.config.RunConfig` (workers, GPU, storage); `seed` replaces its
    seed. Everything that can be rejected (config, image size, mismatched splits) is rejected
    before any job starts. `test=None` trains (or reuses) the model without touching the test
    split: a search trial selects on validation only, and the study evaluates the chosen
    configuration's test split once at the end through the same cached model. `callbacks`
    go to Ray Train (e.g. Tune's report callback, so ASHA sees each validation epoch).
    """
    from ..nets.classifiers import build_classifier

    # 1. Checks before any job: config, sizes, splits.
    cfg.validate()
    _check_sets(train, val, test)
    size = cfg.check_size(int(train.images.shape[1]))
    params = {
        "classifier": dataclasses.asdict(cfg),
        "input_size": size,
        "num_classes": len(train.class_names),
    }
    if (
        weights := cfg.weights_file()
    ) is not None:  # the weights' content, not their path, shapes the run
        params["weights_sha256"] = sha256_file(weights)
    run_params = {
        **cfg.params(int(train.images.shape[1])),
        "seed": seed,
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test) if test is not None else 0,
        **{f"n_train.{c}": n for c, n in train.counts().items()},
        "train_source": train.source,
    }

    # 2. Cache key: config, caller's data key, train/val compositions, seed. The test split does
    #    not shape the model, so it is not in the key; its predictions are stored per test set.
    dkey = f"{data_key}|train={set_key(train)}|val={set_key(val)}"
    test_file = None if test is None else f"test-{set_key(test)}.npz"

    # 3. Train under Ray Train, or reuse the finished run (the stage cache).
    spec = StageSpec(
        label,
        ClassifierStage(params),
        train={"x": train.images, "y": train.labels},
        val={"x": val.images, "y": val.labels},
        fixed={},
        data_key=dkey,
        seed=seed,
    )
    res = run_stages(
        [spec],
        cache_root=cache_root,
        run_cfg=dataclasses.replace(run_cfg, seed=seed),
        use_cache=use_cache,
        callbacks=callbacks,
    )[label]
    if test_file is None or (res.dir / test_file).is_file():
        return _result(res, run_params, test_file)

    # 4. The one test evaluation: best-on-validation model, on the driver, stored with the run.
    device = torch.device("cuda" if run_cfg.use_gpu and torch.cuda.is_available() else "cpu")
    model = build_classifier(
        cfg.name, len(train.class_names), size, transform_input=cfg.transform_input()
    )
    model.load_state_dict(res.best_state())
    prob = predict_proba(model.to(device), to_input(test.images, size, device), cfg.eval_batch_size)
    with atomic_path(res.dir / test_file) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, prob=prob, labels=test.labels, names=np.array(test.names))
    return _result(res, run_params, test_file)
