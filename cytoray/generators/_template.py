"""A generator template: the smallest complete generator, commented, to copy when you add one.

Copy this file to `cytoray/generators/<yours>.py` (a name without the leading underscore: the
registry imports every module of this package whose name does not start with "_", so this file
itself is never registered and `toy` appears in no list). Then:

  1. rename `Toy` / `ToyConfig` / `ColourStage` and set `name` to your generator's name;
  2. write `configs/models/<yours>.yaml` (a `generator:` section with `name: <yours>`; the keys
     you leave out take the dataclass defaults);
  3. optionally `configs/search/<study>_<yours>.yaml`, the search space a study uses for it
     (`Generator.default_search`);
  4. write `tests/test_<yours>.py`; tests/test_generator_contract.py already trains every
     registered generator for one epoch under Ray Train, loads its bundle and samples it.

Nothing else is edited: `python studies/syncgan_ratio.py --set generator.name=<yours>` searches it,
and `<yours>`, `orig+<yours>`, `<yours>-only` are policies of the augmentation baselines study.
tests/test_engine.py trains, samples and searches this Toy exactly so (it is the engine's test).

What the engine does for you (`Generator.train`, base.py): checks the data, hashes the config,
data and seed into the bundle key, trains in one Ray Train job only the stages the stage cache
lacks (each stage resumable from its checkpoints, with DDP over `run.num_workers`, bf16 autocast
on CUDA, a grid per `sample_every` epochs in MLflow), then writes the bundle that `assemble`
describes. A real example with adversarial stages: vanilla.py (62 lines) on gan.py's stages.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn as nn

from ..bundle import load_state, read_bundle
from ..training.stage import Stage, StageSpec
from .base import Generator, GeneratorConfig

# ----------------------------------------------------------------------------- 1. the config


@dataclasses.dataclass
class ToyConfig(GeneratorConfig):
    """The generator's typed YAML section. Every key has a default and a one-line reason: the
    dataclass is where a default lives; a YAML only says what differs from it."""

    name: str = "toy"  # the registered name: `generator.name` in a config picks this dataclass
    epochs: int = 4  # enough for the colour to move
    batch_size: int = 8  # a few steps an epoch on 20 images per class
    lr: float = 0.05  # Adam step on a 3-number model


# ----------------------------------------------------------------------------- 2. a stage


class ColourStage(Stage):
    """Learns a class's mean colour in [-1, 1]: the smallest trainer with a falling loss.

    A stage is what one training loop runs (training/loop.py): the loop puts the arrays on the
    device once, builds the models (same seed on every worker), shards each epoch's batches over
    the workers, calls `train_step` per batch, then `validate`, `selection` (the best epoch) and
    `grid`, and checkpoints. `Params` is the stage's typed settings: the stage reads them as
    `self.cfg.<name>` (`Stage.epochs` and `Stage.batch_size` read `epochs` and `batch_size` there),
    and they are part of its cache key. A stage whose settings hold more than its config section
    (the image size, a label count) declares a subclass of the config with those fields
    (gan.py's CGANParams).
    """

    kind = "toy_colour"  # names the stage in logs and in its cache key
    Params = ToyConfig  # its typed settings (a plain mapping passed instead is read into them)
    keep = "G"  # the model(s) whose weights the result keeps (GAN stages keep their EMA copy)

    def build(self, device):
        """The models, by role. Modules with trainable weights are wrapped in DDP by the loop."""
        g = nn.Module()
        g.colour = nn.Parameter(torch.zeros(3, device=device))
        return {"G": g}

    def optimizers(self, models):
        """One optimiser per trained model, checkpointed and resumed with it."""
        return {"G": torch.optim.Adam(models["G"].parameters(), lr=self.cfg.lr)}

    def train_step(self, models, opts, batch, gen, amp):
        """One optimiser step on `batch` (the training arrays indexed by this step's images).
        `gen` is the stage's seeded random stream (draw noise from it, so a resumed run repeats);
        `amp()` is the autocast context (bf16 on CUDA). Returns the losses to log."""
        target = batch["image"].mean(dim=(0, 2, 3))
        loss = (models["G"].colour - target).pow(2).mean()
        opts["G"].zero_grad()
        loss.backward()
        opts["G"].step()
        return {"loss_g": loss.item()}

    # Optional hooks (see training/stage.py): validate (metrics on the validation arrays),
    # selection (the sort key of the best epoch: the last one by default), grid (a uint8 picture
    # per sample_every epochs), meta (what sampling needs besides the weights).


# ----------------------------------------------------------------------------- 3. the generator


class Toy(Generator):
    """Samples each class's learned colour plus noise. Subclassing `Generator` registers it."""

    name, Config = "toy", ToyConfig

    def __init__(self, colours: dict[str, torch.Tensor], size: int) -> None:
        # an instance is a trained sampler; `classes` is what `check_class` accepts
        self.colours, self.size, self.classes = colours, size, list(colours)

    @classmethod
    def stages(cls, train, val, cfg, data_key, seed):
        """What to train: one StageSpec per independent stage (here one per class). Its
        `data_key` must name the data the stage sees (the split's hash, plus the class): two
        specs with the same stage settings and data key share one cached result."""
        return [
            StageSpec(
                label=f"toy/{c}",  # the stage's name in results, logs and checkpoints
                stage=ColourStage(cfg),
                train={"image": train.images[train.labels == i].transpose(0, 3, 1, 2) / 127.5 - 1},
                val=None,  # validation arrays, if `validate` uses them
                fixed={},  # arrays `grid` draws with every time
                data_key=f"{data_key}:{c}",
                seed=seed,
            )
            for i, c in enumerate(train.class_names)
        ]

    @classmethod
    def assemble(cls, train, cfg, results, data_key):
        """The bundle from the finished stages: (meta JSON, {file stem: state dict}, {file: bytes})."""
        meta = {"classes": list(train.class_names), "size": int(train.images.shape[1])}
        weights = {f"colour_{c}": results[f"toy/{c}"].best_state() for c in train.class_names}
        return meta, weights, {}

    @classmethod
    def load(cls, path):
        """A trained sampler from a bundle folder (weights load with weights_only=True)."""
        meta, path = read_bundle(path)
        colours = {c: load_state(path, f"colour_{c}")["colour"] for c in meta["classes"]}
        return cls(colours, meta["size"])

    def sample(self, n, cls, seed=0):
        """n images of class `cls`, uint8 [n, S, S, 3], and their nucleus masks (bool) or None.
        The same seed gives the same images."""
        self.check_class(cls)
        rng = np.random.default_rng(seed)
        base = (self.colours[cls].numpy() + 1) * 127.5
        noise = rng.normal(0, 8, (n, self.size, self.size, 3))
        return np.clip(base + noise, 0, 255).astype(np.uint8), None
