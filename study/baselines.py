"""The benchmark's candidates that use no pretrained backbone: raw pixels and a small CNN.

They answer "how much does the backbone buy us?": the same photos classified by

* classic scikit-learn models on raw pixels (`fit_classic`: an RBF SVM, a random forest and a
  dense network), the way Fashion-MNIST and CIFAR baselines are built, and
* a small CNN trained from scratch (`train_small_cnn`), the "from scratch" strategy.

Images are decoded with `classifr.core.images.read_image` (size limits, clear errors for broken files,
JPEG draft mode), centre-cropped to a square so the aspect is kept, and resized once. The small
CNN decodes every image once into a uint8 tensor, so an epoch costs only the network.

`parameter_count` and `checkpoint_bytes` measure every candidate the same way, torch or sklearn.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from classifr.core.errors import ClassifrError, ConfigError
from classifr.core.images import ImageLimits, read_image

logger = logging.getLogger(__name__)

# Raw-pixel baselines work on tiny images, as the classic Fashion-MNIST (28x28) and CIFAR (32x32)
# ones do: 32x32x3 = 3,072 features keeps SVM and random-forest training in seconds.
PIXEL_SIZE = 32

CLASSIC_KINDS = ("svm", "random forest", "dense")
# C=10: on standardised raw pixels the default C=1 underfits. Measured on clothing-small at 32 px
# (10 classes x 100 training photos, 120 validation photos): C=1 41.7%, C=3 52.5%, C=10 51.7%.
# gamma="scale" adapts the RBF width to the 3,072 features.
SVM_C = 10.0
# sklearn's default of 100 trees: in the same measurement 300 trees were no better (43.3% vs
# 45.8%) and took 2.3x as long (15.7 s vs 6.9 s on one core).
FOREST_TREES = 100
DENSE_HIDDEN = (256,)
# Upper bound only: early stopping ends training once the held-out score stops improving, which on
# a few thousand thumbnails happens well before this.
DENSE_MAX_EPOCHS = 200
DENSE_VALIDATION_FRACTION = 0.1  # sklearn's default share held out for early stopping

# Decode this much larger than the network's input so a random crop still has real pixels to move
# over (the same factor as training/full.py); evaluation takes the centre crop of the same decode.
DECODE_FACTOR = 1.15
CNN_WIDTHS = (32, 64, 128, 256)  # channels of the conv blocks; each block halves the side
MIN_CNN_SIZE = 2 ** len(CNN_WIDTHS)  # smallest input that survives every 2x2 max-pool
CNN_DROPOUT = 0.3
SCRATCH_HISTORY_KEYS = ("epoch", "train_loss", "eval_accuracy", "seconds", "images_per_second")
_STATS_CHUNK = 1024  # images per step when computing the channel mean/std, to bound the float copy


# --- decoding -----------------------------------------------------------------------------------


def _check_side(name: str, value: Any, minimum: int) -> None:
    if not _is_int(value) or value < minimum:
        raise ClassifrError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _square(path: Path | str, side: int, limits: ImageLimits) -> np.ndarray:
    """One image as a (side, side, 3) uint8 array: centre square crop, then one resize."""
    # min_side=side lets JPEG draft mode decode at 1/2..1/8 scale while keeping both sides >= side.
    image = read_image(path, limits=limits, min_side=side).image
    width, height = image.size
    crop = min(width, height)
    left, top = (width - crop) // 2, (height - crop) // 2
    # crop first: resize(box=...) would let the filter reach pixels outside the square. Pillow's
    # BILINEAR widens its filter when shrinking, so it antialiases.
    square = image.crop((left, top, left + crop, top + crop)).resize((side, side), Image.Resampling.BILINEAR)
    # np.array, not asarray: a writable copy, which torch.from_numpy needs.
    return np.array(square.convert("RGB"), dtype=np.uint8)


def _check_paths(paths: Sequence[Any], what: str) -> None:
    if isinstance(paths, (str, Path)) or not isinstance(paths, Sequence):
        raise ClassifrError(f"{what} must be a list of image paths or images, got {type(paths).__name__}")
    if not paths:
        raise ClassifrError(f"there are no {what}")


def pixel_features(
    paths: Sequence[Path], *, size: int = PIXEL_SIZE, limits: ImageLimits = ImageLimits()
) -> np.ndarray:
    """Raw pixels: (N, size*size*3) float32 in [0, 1], each image centre-cropped square and resized.

    `paths` may also hold anything else `read_image` takes (PIL images at serving time, bytes).
    A broken or oversized file raises `InvalidImageError` (a ClassifrError) naming the file.
    """
    _check_side("pixel size", size, 1)
    _check_paths(paths, "images")
    rows = np.empty((len(paths), size * size * 3), dtype=np.float32)
    for index, path in enumerate(paths):
        rows[index] = _square(path, size, limits).reshape(-1)
    rows /= 255.0
    return rows


def decode_images(paths: Sequence[Path], side: int, *, limits: ImageLimits = ImageLimits()) -> torch.Tensor:
    """(N, 3, side, side) uint8: every image decoded once, centre-cropped square and resized.

    Like pixel_features, `paths` may also hold PIL images or anything else `read_image` takes.
    """
    _check_side("side", side, 1)
    _check_paths(paths, "images")
    images = torch.empty((len(paths), 3, side, side), dtype=torch.uint8)
    for index, path in enumerate(paths):
        images[index] = torch.from_numpy(_square(path, side, limits)).permute(2, 0, 1)
    return images


def decode_side(size: int) -> int:
    """The side images are decoded at for a network input of `size` (64 -> 74)."""
    return math.ceil(size * DECODE_FACTOR)


# --- classic scikit-learn models ---------------------------------------------------------------


@dataclass(frozen=True)
class ClassicResult:
    kind: str  # one of CLASSIC_KINDS
    estimator: Any  # the fitted sklearn estimator or pipeline
    history: list[dict] = field(default_factory=list)  # "dense" only: epoch, train_loss, eval_accuracy
    train_seconds: float = 0.0


def _check_features(features: Any, what: str = "features") -> np.ndarray:
    if not isinstance(features, np.ndarray) or features.ndim != 2:
        shape = getattr(features, "shape", None)
        raise ClassifrError(
            f"{what} must be a 2-D numpy array (images x values), got {type(features).__name__} {shape}"
        )
    if not np.issubdtype(features.dtype, np.number) or not np.isfinite(features).all():
        raise ClassifrError(f"{what} must be finite numbers, got dtype {features.dtype} with NaN or infinite values")
    return features


def _check_targets(targets: Any, count: int, what: str = "targets") -> np.ndarray:
    targets = np.asarray(targets)
    if targets.ndim != 1 or not np.issubdtype(targets.dtype, np.integer):
        raise ClassifrError(
            f"{what} must be a 1-D sequence of integer class ids, got dtype {targets.dtype} shape {targets.shape}"
        )
    if len(targets) != count:
        raise ClassifrError(f"{what} has {len(targets)} entries but there are {count} images")
    return targets


def _make_classic(kind: str, targets: np.ndarray, seed: int, n_jobs: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if kind == "svm":
        return make_pipeline(StandardScaler(), SVC(kernel="rbf", C=SVM_C, gamma="scale"))
    if kind == "random forest":
        # Trees split on thresholds, so scaling would change nothing.
        return RandomForestClassifier(n_estimators=FOREST_TREES, n_jobs=n_jobs, random_state=seed)
    # Early stopping holds out a stratified share; it needs at least one image of every class.
    classes = len(np.unique(targets))
    fraction = min(0.5, max(DENSE_VALIDATION_FRACTION, classes / len(targets)))
    dense = MLPClassifier(
        hidden_layer_sizes=DENSE_HIDDEN, early_stopping=True, validation_fraction=fraction,
        max_iter=DENSE_MAX_EPOCHS, random_state=seed,
    )
    return make_pipeline(StandardScaler(), dense)


def fit_classic(
    kind: str, features: np.ndarray, targets: np.ndarray, *, seed: int = 0, n_jobs: int = 1
) -> ClassicResult:
    """Fit one of CLASSIC_KINDS on (N, D) features and N integer class ids.

    `n_jobs` is the random forest's process count (sklearn's -1 means all cores); 1 by default so
    a timed run neither depends on nor swamps a shared machine.
    """
    if kind not in CLASSIC_KINDS:
        raise ClassifrError(f"unknown classic model {kind!r}; choose one of {', '.join(CLASSIC_KINDS)}")
    features = _check_features(features)
    targets = _check_targets(targets, len(features))
    classes, counts = np.unique(targets, return_counts=True)
    if len(classes) < 2:
        raise ClassifrError(f"a classifier needs at least 2 classes, got {len(classes)} ({classes.tolist()})")
    if kind == "dense" and counts.min() < 2:
        lonely = classes[counts < 2].tolist()
        raise ClassifrError(f"the dense model's early stopping needs >= 2 images per class; classes {lonely} have 1")
    estimator = _make_classic(kind, targets, seed, n_jobs)
    started = time.perf_counter()
    estimator.fit(features, targets)
    seconds = time.perf_counter() - started
    history = _dense_history(estimator[-1]) if kind == "dense" else []
    logger.info("%s on %d x %d features: fitted in %.2f s", kind, *features.shape, seconds)
    return ClassicResult(kind, estimator, history, seconds)


def _dense_history(mlp: Any) -> list[dict]:
    """One row per epoch; eval_accuracy is the score on the share held out for early stopping."""
    return [
        {"epoch": epoch, "train_loss": float(loss), "eval_accuracy": float(score)}
        for epoch, (loss, score) in enumerate(zip(mlp.loss_curve_, mlp.validation_scores_), start=1)
    ]


def predict_classic(result: ClassicResult, features: np.ndarray) -> np.ndarray:
    """Class ids, one per row of `features` (same width as at fit time)."""
    features = _check_features(features)
    expected = result.estimator.n_features_in_
    if features.shape[1] != expected:
        raise ClassifrError(
            f"features have {features.shape[1]} values per image; the {result.kind} model expects {expected}"
        )
    return np.asarray(result.estimator.predict(features), dtype=np.int64)


# --- small CNN from scratch ---------------------------------------------------------------------


class SmallCNN(torch.nn.Module):
    """conv3x3-BN-ReLU-maxpool blocks, global average pool, dropout, linear.

    The global pool makes the network work at any input side >= MIN_CNN_SIZE; `size` records the
    side it is meant for.
    """

    def __init__(self, num_classes: int, size: int = 64, widths: Sequence[int] = CNN_WIDTHS) -> None:
        super().__init__()
        _check_side("num_classes", num_classes, 2)
        _check_side("size", size, 2 ** len(widths))
        self.size = size
        blocks: list[torch.nn.Module] = []
        channels = 3
        for width in widths:
            blocks += [
                # bias=False: the BatchNorm right after has its own shift.
                torch.nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=False),
                torch.nn.BatchNorm2d(width),
                torch.nn.ReLU(inplace=True),
                torch.nn.MaxPool2d(2),
            ]
            channels = width
        self.features = torch.nn.Sequential(*blocks)
        self.dropout = torch.nn.Dropout(CNN_DROPOUT)
        self.classifier = torch.nn.Linear(channels, num_classes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        pooled = self.features(pixels).mean(dim=(2, 3))
        return self.classifier(self.dropout(pooled))


@dataclass(frozen=True)
class ScratchConfig:
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 3e-3  # AdamW peak; cosine decay to 0 over the run
    weight_decay: float = 0.05
    augment: bool = True  # random crop of `size` from the decoded image + horizontal flip
    size: int = 64  # network input side; images are decoded at decode_side(size)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            _require(name, getattr(self, name), lambda v: _is_int(v) and v >= 1, "a positive integer")
        _require("learning_rate", self.learning_rate, lambda v: _is_number(v) and v > 0, "a positive number")
        _require("weight_decay", self.weight_decay, lambda v: _is_number(v) and v >= 0, "a number >= 0")
        _require("augment", self.augment, lambda v: isinstance(v, bool), "True or False")
        _require("size", self.size, lambda v: _is_int(v) and v >= MIN_CNN_SIZE, f"an integer >= {MIN_CNN_SIZE}")
        _require("seed", self.seed, _is_int, "an integer")


@dataclass(frozen=True)
class ScratchResult:
    model: SmallCNN  # weights of the best eval epoch, CPU, eval mode
    history: list[dict]  # per epoch: SCRATCH_HISTORY_KEYS
    mean: tuple[float, float, float]  # per-channel mean of the training pixels (0-1 scale)
    std: tuple[float, float, float]
    size: int  # network input side
    train_seconds: float  # the whole call: decoding, epochs and evaluation
    images_per_second: float  # training throughput over all epochs (forward + backward only)
    best_epoch: int = 0
    best_accuracy: float = 0.0
    decode_seconds: float = 0.0


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(name: str, value: Any, check: Callable[[Any], bool], expected: str) -> None:
    if not check(value):
        raise ConfigError(f"ScratchConfig.{name} must be {expected}, got {value!r}")


def _check_split(paths: Sequence[Path], targets: Sequence[int], num_classes: int, split: str) -> torch.Tensor:
    _check_paths(paths, f"{split} images")
    targets = _check_targets(targets, len(paths), f"{split} targets")
    bad = targets[(targets < 0) | (targets >= num_classes)]
    if bad.size:
        raise ClassifrError(f"{split} target {int(bad[0])} is outside 0..{num_classes - 1} ({num_classes} classes)")
    return torch.as_tensor(targets, dtype=torch.long)


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on the 0-1 scale, summed in chunks so no full float copy is made."""
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(images), _STATS_CHUNK):
        chunk = images[start : start + _STATS_CHUNK].to(torch.float64) / 255.0
        total += chunk.sum(dim=(0, 2, 3))
        squares += chunk.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    # clamp: a one-colour training set would otherwise divide by zero.
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt().clamp_min(1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())


def _normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean_t) / std_t


def _centre_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    height, width = images.shape[-2:]
    if height < size or width < size:
        raise ClassifrError(f"images are {height}x{width} pixels; the model needs at least {size}x{size}")
    top, left = (height - size) // 2, (width - size) // 2
    return images[..., top : top + size, left : left + size]


def _augment(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A random size x size crop per image and a coin-flip mirror, on uint8 tensors."""
    count, _, height, width = images.shape
    tops = torch.randint(0, height - size + 1, (count,), generator=generator).tolist()
    lefts = torch.randint(0, width - size + 1, (count,), generator=generator).tolist()
    crops = torch.stack([image[:, t : t + size, l : l + size] for image, t, l in zip(images, tops, lefts)])
    flip = torch.rand(count, generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), crops.flip(-1), crops)


def _accuracy(model: SmallCNN, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int) -> float:
    model.eval()
    with torch.inference_mode():
        batches = [inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)]
        predictions = torch.cat([model(batch).argmax(-1) for batch in batches])
    return int((predictions == targets).sum()) / len(targets)  # exact, not a float32 mean


@dataclass
class _Data:
    """Everything an epoch needs, decoded and normalised once."""

    train: torch.Tensor  # uint8, decoded at decode_side(size)
    train_targets: torch.Tensor
    eval_inputs: torch.Tensor  # float, centre-cropped and normalised
    eval_targets: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _prepare_data(
    train_paths: Sequence[Path],
    train_y: torch.Tensor,
    eval_paths: Sequence[Path],
    eval_y: torch.Tensor,
    size: int,
    limits: ImageLimits,
) -> _Data:
    """Decode both splits once; the statistics come from the training images only."""
    side = decode_side(size)
    train_images = decode_images(train_paths, side, limits=limits)
    eval_images = _centre_crop(decode_images(eval_paths, side, limits=limits), size)
    mean, std = _channel_stats(train_images)
    return _Data(train_images, train_y, _normalise(eval_images, mean, std), eval_y, mean, std)


def _log_epoch(record: dict) -> None:
    logger.info(
        "small CNN epoch %d: train loss %.4f, eval accuracy %.4f, %.1f s, %.1f images/s",
        record["epoch"], record["train_loss"], record["eval_accuracy"], record["seconds"], record["images_per_second"],
    )


def _train_epoch(model, optimizer, scheduler, data: _Data, config: ScratchConfig, generator, bar) -> tuple[float, int]:
    """One shuffled pass; returns (mean loss over batches, images seen)."""
    model.train()
    order = torch.randperm(len(data.train), generator=generator)
    # A last batch of a few images gives a noisy step and BatchNorm statistics from almost nothing.
    stop = len(order) - len(order) % config.batch_size if len(order) > config.batch_size else len(order)
    loss_sum, batches = 0.0, 0
    for start in range(0, stop, config.batch_size):
        index = order[start : start + config.batch_size]
        raw = data.train[index]
        crops = _augment(raw, config.size, generator) if config.augment else _centre_crop(raw, config.size)
        logits = model(_normalise(crops, data.mean, data.std))
        loss = torch.nn.functional.cross_entropy(logits, data.train_targets[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.item()
        batches += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum / batches:.4f}")
    return loss_sum / max(batches, 1), stop


def train_small_cnn(
    train_paths: Sequence[Path],
    train_targets: Sequence[int],
    eval_paths: Sequence[Path],
    eval_targets: Sequence[int],
    num_classes: int,
    config: ScratchConfig = ScratchConfig(),
    *,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    limits: ImageLimits = ImageLimits(),
) -> ScratchResult:
    """Train a SmallCNN from random weights; keep the epoch with the best eval accuracy.

    Every image is decoded once at decode_side(config.size); epochs then only crop, flip and
    normalise tensors. `on_epoch` gets each history record as it is made.
    """
    from tqdm.auto import tqdm

    if not isinstance(config, ScratchConfig):
        raise ClassifrError(f"config must be a ScratchConfig, got {type(config).__name__}")
    _check_side("num_classes", num_classes, 2)
    train_y = _check_split(train_paths, train_targets, num_classes, "training")
    eval_y = _check_split(eval_paths, eval_targets, num_classes, "evaluation")
    started = time.perf_counter()
    data = _prepare_data(train_paths, train_y, eval_paths, eval_y, config.size, limits)
    decode_seconds = time.perf_counter() - started

    torch.manual_seed(config.seed)  # weight init and dropout
    generator = torch.Generator().manual_seed(config.seed)  # batch order and augmentation
    model = SmallCNN(num_classes, config.size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = max(len(data.train) // config.batch_size, 1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)

    history: list[dict] = []
    best = {"epoch": 0, "accuracy": -1.0, "state": None}
    train_time, train_images_seen = 0.0, 0
    for epoch in range(1, config.epochs + 1):
        epoch_started = time.perf_counter()
        with tqdm(total=steps_per_epoch, desc=f"epoch {epoch}", unit="batch", disable=not progress) as bar:
            loss, seen = _train_epoch(model, optimizer, scheduler, data, config, generator, bar)
        step_seconds = time.perf_counter() - epoch_started
        accuracy = _accuracy(model, data.eval_inputs, data.eval_targets, config.batch_size)
        record = {
            "epoch": epoch,
            "train_loss": loss,
            "eval_accuracy": accuracy,
            "seconds": time.perf_counter() - epoch_started,
            "images_per_second": seen / step_seconds if step_seconds > 0 else 0.0,
        }
        history.append(record)
        train_time += step_seconds
        train_images_seen += seen
        _log_epoch(record)
        if on_epoch is not None:
            on_epoch(record)
        if accuracy > best["accuracy"]:
            best = {"epoch": epoch, "accuracy": accuracy, "state": copy.deepcopy(model.state_dict())}

    model.load_state_dict(best["state"])
    model.eval()
    return ScratchResult(
        model=model,
        history=history,
        mean=data.mean,
        std=data.std,
        size=config.size,
        train_seconds=time.perf_counter() - started,
        images_per_second=train_images_seen / train_time if train_time > 0 else 0.0,
        best_epoch=best["epoch"],
        best_accuracy=best["accuracy"],
        decode_seconds=decode_seconds,
    )


def prepare_scratch_inputs(
    result: ScratchResult, paths: Sequence[Path], *, limits: ImageLimits = ImageLimits()
) -> torch.Tensor:
    """Decode `paths` the way evaluation does: (N, 3, size, size) uint8, ready for predict_scratch.

    Splitting decoding from prediction lets a benchmark time the network alone on these tensors.
    """
    return _centre_crop(decode_images(paths, decode_side(result.size), limits=limits), result.size).contiguous()


def predict_scratch(
    result: ScratchResult, images: torch.Tensor | Sequence[Path], *, batch_size: int = 256
) -> np.ndarray:
    """Class ids for image paths (or PIL images), or for a (N, 3, H, W) uint8 tensor such as
    prepare_scratch_inputs makes (centre-cropped to `size` if larger)."""
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ClassifrError(f"images must be a (N, 3, H, W) uint8 tensor, got {images.dtype} {tuple(images.shape)}")
        inputs = _centre_crop(images, result.size)
    else:
        inputs = prepare_scratch_inputs(result, images)
    _check_side("batch_size", batch_size, 1)
    result.model.eval()
    predictions = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            batch = _normalise(inputs[start : start + batch_size], result.mean, result.std)
            predictions.append(result.model(batch).argmax(-1))
    return torch.cat(predictions).numpy().astype(np.int64)


# --- size helpers -------------------------------------------------------------------------------


def _unwrap(obj: Any) -> Any:
    """The model inside a result, so results and bare models can be measured alike."""
    if isinstance(obj, ScratchResult):
        return obj.model
    if isinstance(obj, ClassicResult):
        return obj.estimator
    return obj


def parameter_count(obj: Any) -> int:
    """The number of learned numbers in a torch module or a fitted sklearn estimator/pipeline.

    * torch module: the numel of its parameters (BatchNorm running statistics are buffers, not counted);
    * StandardScaler: mean_ + scale_;
    * SVC: support vectors + dual coefficients + intercepts;
    * decision tree / random forest: per node of every tree, its threshold and one value per
      class (the stored `tree_.threshold` and `tree_.value`); feature indices and child links are
      structure, not counted;
    * MLP: every weight matrix and bias vector;
    * Pipeline: the sum over its steps.
    """
    obj = _unwrap(obj)
    if isinstance(obj, torch.nn.Module):
        return sum(p.numel() for p in obj.parameters())
    return _sklearn_count(obj)


def _sklearn_count(estimator: Any) -> int:
    from sklearn.ensemble import BaseEnsemble
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import BaseDecisionTree

    name = type(estimator).__name__
    if not hasattr(estimator, "n_features_in_") and not isinstance(estimator, Pipeline):
        raise ClassifrError(
            f"cannot count the parameters of {name}: it is not a torch module or a fitted sklearn estimator"
        )
    if isinstance(estimator, Pipeline):
        return sum(_sklearn_count(step) for _, step in estimator.steps if step not in (None, "passthrough"))
    if isinstance(estimator, StandardScaler):
        return sum(a.size for a in (estimator.mean_, estimator.scale_) if a is not None)
    if isinstance(estimator, SVC):
        return estimator.support_vectors_.size + estimator.dual_coef_.size + estimator.intercept_.size
    if isinstance(estimator, BaseEnsemble):  # forests and bagging: the sum over their members
        return sum(_sklearn_count(member) for member in estimator.estimators_)
    if isinstance(estimator, BaseDecisionTree):
        return estimator.tree_.threshold.size + estimator.tree_.value.size
    if isinstance(estimator, MLPClassifier):
        return sum(a.size for a in (*estimator.coefs_, *estimator.intercepts_))
    raise ClassifrError(
        f"cannot count the parameters of {name}; supported: StandardScaler, SVC, forests, trees, MLPClassifier"
    )


def checkpoint_bytes(obj: Any, folder: Path, name: str) -> tuple[Path, int]:
    """Save the model as a benchmark would ship it; return (path, size in bytes).

    torch modules: the state_dict with torch.save to folder/name.pt; sklearn estimators: the
    fitted object with joblib.dump to folder/name.joblib.
    """
    if not isinstance(name, str) or not name or name != Path(name).name or name in (".", ".."):
        raise ClassifrError(f"checkpoint name must be a plain file name without folders, got {name!r}")
    obj = _unwrap(obj)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(obj, torch.nn.Module):
        path = folder / f"{name}.pt"
        torch.save(obj.state_dict(), path)
    else:
        import joblib

        if not hasattr(obj, "predict"):
            raise ClassifrError(f"cannot save a {type(obj).__name__}: expected a torch module or a sklearn estimator")
        path = folder / f"{name}.joblib"
        joblib.dump(obj, path)
    return path, path.stat().st_size
