"""Train one benchmark candidate and keep what the study measures of it.

Every runner returns a `TrainedRun`: the eval-split predictions, the training wall time and the
images it saw, the learning curve when there is one, the size of the model, and `predict`, which
turns decoded images into class ids so latency and the probe measure the whole model (backbone,
head or classic estimator, and its feature extraction) the same way for every candidate.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from classifr.core.images import read_image
from classifr.core.labels import LabelSet
from classifr.inference.classifier import Classifier
from study import baselines
from training import head as head_training
from study.data import BenchmarkData
from training.versions import with_head

logger = logging.getLogger(__name__)

EMBED_BATCH = 32
Predict = Callable[[Sequence[Image.Image]], np.ndarray]


@dataclass(frozen=True)
class Candidate:
    """One cell of the grid: what is trained, on which features, with which settings."""

    name: str
    family: str  # backbone | fine-tune | scratch | classic
    strategy: str  # head | full | scratch | svm | random forest | dense
    features: str  # embeddings | pixels | images
    backbone: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "strategy": self.strategy, "features": self.features,
                "backbone": self.backbone, "hyperparameters": dict(self.hyperparameters)}


@dataclass
class TrainedRun:
    candidate: Candidate
    eval_predictions: np.ndarray  # class ids over the eval split
    train_seconds: float
    images_seen: int  # training images times epochs: what "images/s in training" divides
    predict: Predict
    parameters: int
    checkpoint_bytes: int
    history: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Embeddings:
    """A backbone's features of the train and eval images, and what computing the train ones cost."""

    classifier: Classifier
    train: np.ndarray
    eval: np.ndarray
    train_seconds: float


def decode(paths: Sequence[Path], min_side: int) -> list[Image.Image]:
    return [read_image(path, min_side=min_side).image for path in paths]


def embed(classifier: Classifier, paths: Sequence[Path], *, progress: Callable[[int], None] = lambda n: None) -> np.ndarray:
    """Pooled backbone features of `paths`, decoded at the size the backbone needs, in batches."""
    rows = []
    for start in range(0, len(paths), EMBED_BATCH):
        images = decode(paths[start : start + EMBED_BATCH], classifier.min_side)
        rows.append(classifier.features_and_logits(images)[0].numpy())
        progress(len(images))
    return np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)


def embeddings(classifier: Classifier, data: BenchmarkData, progress: Callable[[int], None]) -> Embeddings:
    started = time.perf_counter()
    train = embed(classifier, data.train_paths, progress=progress)
    train_seconds = time.perf_counter() - started
    return Embeddings(classifier, train, embed(classifier, data.eval_paths, progress=progress), train_seconds)


def _model_size(model: torch.nn.Module) -> tuple[int, int]:
    with tempfile.TemporaryDirectory() as folder:
        return baselines.parameter_count(model), baselines.checkpoint_bytes(model, Path(folder), "model")[1]


def _classifier_predict(classifier: Classifier) -> Predict:
    return lambda images: classifier.logits(list(images)).argmax(-1).numpy()


def run_head(candidate: Candidate, data: BenchmarkData, features: Embeddings) -> tuple[TrainedRun, head_training.HeadWeights]:
    """Logistic regression (L-BFGS, the production head strategy) on frozen embeddings."""
    labels = LabelSet(data.labels)
    started = time.perf_counter()
    l2 = candidate.hyperparameters.get("l2", head_training.DEFAULT_L2)
    weights = head_training.train_new_head(features.train, np.array(data.targets("train")), len(labels), l2=l2)
    fit_seconds = time.perf_counter() - started
    model = with_head(features.classifier.model, labels, weights.weight, weights.bias)
    classifier = Classifier(model, features.classifier.preprocess, version=candidate.name)
    predictions = (torch.from_numpy(features.eval) @ weights.weight.T + weights.bias).argmax(-1).numpy()
    parameters, size = _model_size(model)
    run = TrainedRun(candidate, predictions, features.train_seconds + fit_seconds, len(data.train_paths),
                     _classifier_predict(classifier), parameters, size)
    return run, weights


def run_full(candidate: Candidate, data: BenchmarkData, features: Embeddings, start: head_training.HeadWeights,
             *, progress: bool, on_epoch: Callable[[dict], None]) -> TrainedRun:
    """Fine-tune the whole network, starting from the trained head (linear probe, then fine-tune:
    the head does not begin random, so the first epochs do not wreck the pretrained features)."""
    from training.full import FullConfig, train_full

    settings = dict(candidate.hyperparameters)
    max_train = settings.pop("max_train_images", None)
    config = FullConfig(**settings)
    labels = LabelSet(data.labels)
    model = with_head(features.classifier.model, labels, start.weight, start.bias)
    targets = data.targets("train")
    train = list(zip(data.train_paths, targets))[:max_train]  # the paths are already in a seeded order
    evaluation = list(zip(data.eval_paths, data.targets("eval")))
    result = train_full(model, features.classifier.preprocess, train, evaluation, config=config,
                        min_side=features.classifier.min_side, progress=progress, on_epoch=on_epoch)
    classifier = Classifier(result.model, features.classifier.preprocess, version=candidate.name)
    predictions = np.concatenate([_classifier_predict(classifier)(decode(data.eval_paths[i : i + EMBED_BATCH],
                                                                          classifier.min_side))
                                  for i in range(0, len(data.eval_paths), EMBED_BATCH)])
    parameters, size = _model_size(result.model)
    epochs = len(result.history)
    return TrainedRun(candidate, predictions, result.train_seconds, len(train) * epochs,
                      _classifier_predict(classifier), parameters, size, history=_curve(result.history))


def run_classic_on_embeddings(candidate: Candidate, data: BenchmarkData, features: Embeddings, seed: int) -> TrainedRun:
    """A scikit-learn estimator on frozen backbone features; serving it runs the backbone first."""
    started = time.perf_counter()
    fitted = baselines.fit_classic(candidate.strategy, features.train, np.array(data.targets("train")), seed=seed)
    fit_seconds = time.perf_counter() - started
    classifier = features.classifier

    def predict(images: Sequence[Image.Image]) -> np.ndarray:
        return baselines.predict_classic(fitted, classifier.features_and_logits(list(images))[0].numpy())

    backbone_parameters, backbone_size = _model_size(classifier.model)
    with tempfile.TemporaryDirectory() as folder:
        size = baselines.checkpoint_bytes(fitted.estimator, Path(folder), "estimator")[1]
    return TrainedRun(candidate, baselines.predict_classic(fitted, features.eval), features.train_seconds + fit_seconds,
                      len(data.train_paths), predict, backbone_parameters + baselines.parameter_count(fitted.estimator),
                      backbone_size + size, history=_curve(fitted.history))


def run_classic_on_pixels(candidate: Candidate, data: BenchmarkData, seed: int) -> TrainedRun:
    """A scikit-learn estimator on raw pixels, the pre-deep-learning baseline."""
    started = time.perf_counter()
    train = baselines.pixel_features(data.train_paths)
    fitted = baselines.fit_classic(candidate.strategy, train, np.array(data.targets("train")), seed=seed)
    train_seconds = time.perf_counter() - started

    def predict(images: Sequence[Image.Image]) -> np.ndarray:
        return baselines.predict_classic(fitted, baselines.pixel_features(list(images)))

    with tempfile.TemporaryDirectory() as folder:
        size = baselines.checkpoint_bytes(fitted.estimator, Path(folder), "estimator")[1]
    predictions = baselines.predict_classic(fitted, baselines.pixel_features(data.eval_paths))
    return TrainedRun(candidate, predictions, train_seconds, len(data.train_paths), predict,
                      baselines.parameter_count(fitted.estimator), size, history=_curve(fitted.history))


def run_scratch(candidate: Candidate, data: BenchmarkData, *, progress: bool,
                on_epoch: Callable[[dict], None]) -> TrainedRun:
    """A small CNN trained from random weights on this data alone."""
    config = baselines.ScratchConfig(**candidate.hyperparameters)
    result = baselines.train_small_cnn(
        data.train_paths, data.targets("train"), data.eval_paths, data.targets("eval"), len(data.labels), config,
        progress=progress, on_epoch=on_epoch,
    )
    predictions = baselines.predict_scratch(result, data.eval_paths)
    parameters, size = _model_size(result.model)
    return TrainedRun(candidate, predictions, result.train_seconds, len(data.train_paths) * len(result.history),
                      lambda images: baselines.predict_scratch(result, list(images)), parameters, size,
                      history=_curve(result.history))


def _curve(history: Sequence[dict]) -> list[dict]:
    """The learning curve in the report's shape: epoch, train loss, eval accuracy."""
    return [{"epoch": int(row.get("epoch", i + 1)), "train_loss": row.get("train_loss"),
             "eval_accuracy": row.get("eval_accuracy")} for i, row in enumerate(history)]
