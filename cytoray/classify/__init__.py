"""Downstream classification: training-set policies, traditional augmentation, training.

    from cytoray.classify import ClassifierConfig, compose_training_set, train_classifier

    ts = compose_training_set("syncgan", real_train, ratio=2.0, samplers={"syncgan": gen}, rng_seed=0)
    res = train_classifier(ts, val, test, ClassifierConfig(name="resnet18"), label="syncgan-r18",
                           cache_root="out/cache", data_key=manifest.hash, run_cfg=RunConfig(), seed=0)
    res.test_prob  # [N_test, C], from the best-on-validation epoch, computed once

Ray is imported only inside the functions that launch or run training.
"""

from __future__ import annotations

from .augment import augment_batch, augment_pair, traditional_copies
from .config import AugmentConfig, ClassifierConfig
from .policies import (
    ALIASES,
    POLICIES,
    Policy,
    compose_training_set,
    generators_needed,
    parse_policy,
    set_key,
)
from .train import ClassifierResult, selection_metrics, train_classifier

__all__ = [
    "ALIASES",
    "AugmentConfig",
    "ClassifierConfig",
    "ClassifierResult",
    "POLICIES",
    "Policy",
    "augment_batch",
    "augment_pair",
    "compose_training_set",
    "generators_needed",
    "parse_policy",
    "selection_metrics",
    "set_key",
    "traditional_copies",
    "train_classifier",
]
