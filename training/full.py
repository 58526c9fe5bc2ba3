"""The full strategy: fine-tune the whole network (backbone and head) with `accelerate`.

The caller hands over a model whose head already has the right rows and labels; `train_full`
trains a copy of it and returns the weights of the epoch with the best evaluation accuracy.

Images are decoded with `classifr.core.images.read_image` and turned into tensors by the served
`preprocess`, so training sees exactly the pixels serving sees; augmentation (a random crop of
60-100% of the area and a horizontal flip) happens on the decoded image before that.

The loop is the standard accelerate pattern (`Accelerator`, `prepare`, `backward`,
`gather_for_metrics`, `is_main_process`, trackers), so the same code runs unchanged on one CPU,
one GPU, or many GPUs and nodes when the calling script is started with accelerate, e.g.::

    accelerate launch --multi_gpu --num_processes 8 -m training.train --strategy full ...
    accelerate launch --num_machines 2 --machine_rank 0 --main_process_ip HOST --num_processes 16 ...

Under `accelerate launch` every process loads its own batches of `FullConfig.batch_size` images
(the global batch is that times the number of processes), the scheduler is sized accordingly,
only the main process shows progress and logs, and `mixed_precision="auto"` defers to the launch
configuration. The process group is left for the calling script to end.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from classifr.core.errors import ClassifrError, ConfigError
from classifr.core.images import read_image
from training.augment import BatchMixer, PhotoAugmentation
from training.embeddings import classifier_head
from training.param_groups import depth_groups, frozen_count
from training.resources import ResourceMeter

logger = logging.getLogger(__name__)

AUGMENT_DECODE_FACTOR = 1.15  # decode this much larger than the model needs, so a random crop still has real pixels
MIXED_PRECISION_CHOICES = ("auto", "no", "fp16", "bf16")
AUTO_AUGMENT_CHOICES = ("trivialaugment", "randaugment", "none")
HISTORY_KEYS = ("epoch", "train_loss", "eval_accuracy", "learning_rate", "seconds", "images_per_second")


@dataclass(frozen=True)
class FullConfig:
    """The fine-tuning recipe; defaults measured on clothing-small (docs/retraining.md, "The full strategy")."""

    epochs: int = 10
    batch_size: int = 32  # per process
    learning_rate: float = 3e-4  # AdamW, for the head; the backbone's top group gets learning_rate * backbone_lr_scale
    backbone_lr_scale: float = 1.0
    layer_decay: float = 0.7  # each depth group down from the top learns this much slower (discriminative rates)
    frozen_depth: float = 0.4  # the lowest 40% of the depth groups stay as pretrained (and cost no backward)
    weight_decay: float = 0.05
    warmup_ratio: float = 0.1  # linear warmup then cosine decay
    label_smoothing: float = 0.1
    # Each epoch evaluates (and keeps) an exponential moving average of the weights (timm's ModelEmaV3,
    # with its warm-up); 0 evaluates the weights as they are.
    ema_decay: float = 0.998
    augment: bool = True  # random resized crop (scale 0.6-1) on the decoded image + horizontal flip
    auto_augment: str = "trivialaugment"  # then one of torchvision's policies on the crop: trivialaugment | randaugment | none
    mixup_alpha: float = 0.0  # > 0: torchvision MixUp on half the batches (with cutmix_alpha, CutMix on the other half)
    cutmix_alpha: float = 0.0
    patience: int = 5  # early stopping: epochs without a better eval accuracy (accuracy still climbs as the rate decays)
    # Keep BatchNorm's running statistics as pretrained: small batches of one small dataset move
    # them away from what the (already trained) head expects. Measured on 120 clothing photos with
    # the learning rate at ~0: 69% -> 67% after one epoch with them updating, unchanged when frozen.
    freeze_batchnorm: bool = True
    mixed_precision: str = "auto"  # auto: bf16 on a CUDA device that has it, else fp16 on CUDA, "no" on CPU
    max_steps: int | None = None  # stop after this many optimizer steps (smoke tests)
    seed: int = 0
    num_workers: int = 2

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            _require(name, getattr(self, name), lambda v: _is_int(v) and v >= 1, "a positive integer")
        _require("num_workers", self.num_workers, lambda v: _is_int(v) and v >= 0, "an integer >= 0")
        _require("seed", self.seed, _is_int, "an integer")
        _require("max_steps", self.max_steps, lambda v: v is None or (_is_int(v) and v >= 1), "None or an integer >= 1")
        for name in ("learning_rate", "backbone_lr_scale", "layer_decay"):
            _require(name, getattr(self, name), lambda v: _is_number(v) and v > 0, "a positive number")
        for name in ("weight_decay", "mixup_alpha", "cutmix_alpha"):
            _require(name, getattr(self, name), lambda v: _is_number(v) and v >= 0, "a number >= 0")
        for name in ("warmup_ratio", "label_smoothing", "frozen_depth", "ema_decay"):
            _require(name, getattr(self, name), lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)")
        _require("augment", self.augment, lambda v: isinstance(v, bool), "True or False")
        _require("auto_augment", self.auto_augment, lambda v: v in AUTO_AUGMENT_CHOICES, f"one of {AUTO_AUGMENT_CHOICES}")
        _require("freeze_batchnorm", self.freeze_batchnorm, lambda v: isinstance(v, bool), "True or False")
        choices = MIXED_PRECISION_CHOICES
        _require("mixed_precision", self.mixed_precision, lambda v: v in choices, f"one of {choices}")


@dataclass(frozen=True)
class FullResult:
    model: torch.nn.Module  # the best model (by eval accuracy), unwrapped, on CPU, eval mode
    best_epoch: int  # 0 when no epoch was evaluated (cancelled during the first epoch)
    history: list[dict]  # per epoch: HISTORY_KEYS (+ steps, backbone_learning_rate, eval_seconds)
    train_seconds: float
    stop_reason: str = "completed"  # completed | early_stopping | max_steps | cancelled
    steps: int = 0  # optimizer steps taken
    best_accuracy: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # mixed_precision, num_processes, device


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(name: str, value: Any, check: Callable[[Any], bool], expected: str) -> None:
    if not check(value):
        raise ConfigError(f"FullConfig.{name} must be {expected}, got {value!r}")


# --- data ---------------------------------------------------------------------------------------


class ImageDataset(torch.utils.data.Dataset):
    """(path, label) rows -> (pixel_values as served, label); decoding happens in the loader workers."""

    def __init__(
        self, rows: Sequence[tuple[Path, int]], preprocess: Callable, *, min_side: int | None,
        augmentation: PhotoAugmentation | None,
    ) -> None:
        self.rows = list(rows)
        self.preprocess = preprocess
        self.augmentation = augmentation
        # A random crop keeps as little as 60% of the area, so augmented images are decoded larger.
        self.decode_side = math.ceil(min_side * AUGMENT_DECODE_FACTOR) if augmentation and min_side else min_side

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.rows[index]
        image = read_image(path, min_side=self.decode_side).image
        if self.augmentation is not None:
            image = self.augmentation(image)
        return self.preprocess([image])[0], label


def _check_rows(rows: Sequence[tuple[Path, int]], num_outputs: int, split: str) -> None:
    if not rows:
        raise ClassifrError(f"there are no {split} images")
    for path, label in rows:
        if not _is_int(label) or not 0 <= label < num_outputs:
            raise ClassifrError(
                f"{split} image {path} has label {label!r}, "
                f"outside the model's {num_outputs} outputs (0..{num_outputs - 1})"
            )


def _loader(dataset: ImageDataset, config: FullConfig, *, train: bool) -> torch.utils.data.DataLoader:
    workers = config.num_workers
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=train,
        # A last batch of a few images gives a noisy step (and BatchNorm statistics from almost nothing).
        drop_last=train and len(dataset) > config.batch_size,
        num_workers=workers,
        persistent_workers=workers > 0,  # workers are forked once, not every epoch
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(config.seed) if train else None,
    )


# --- setup --------------------------------------------------------------------------------------


def resolve_mixed_precision(setting: str) -> str | None:
    """The Accelerator's mixed_precision; None lets an `accelerate launch` configuration decide."""
    if setting != "auto":
        return setting
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return None
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def _make_accelerator(config: FullConfig, log_with: Any, project_dir: Path | None):
    from accelerate import Accelerator

    try:
        return Accelerator(
            mixed_precision=resolve_mixed_precision(config.mixed_precision),
            log_with=log_with,
            project_dir=str(project_dir) if project_dir is not None else None,
        )
    except ValueError as err:  # unknown tracker, or a precision that this process already set differently
        raise ClassifrError(
            f"cannot set up training (log_with={log_with!r}, mixed_precision={config.mixed_precision!r}): {err}"
        ) from err


def _param_groups(model: torch.nn.Module, config: FullConfig) -> list[dict]:
    """Discriminative learning rates: the head at `learning_rate`, the backbone's top depth group at
    `learning_rate * backbone_lr_scale`, each group below it `layer_decay` times slower; the lowest
    `frozen_depth` of the groups frozen (docs/retraining.md, "The full strategy").

    The head comes first and the backbone's top group second (the epoch record reads both rates).
    """
    groups = depth_groups(model)
    frozen = frozen_count(len(groups), config.frozen_depth)
    for group in groups[:frozen]:
        for parameter in group:
            parameter.requires_grad_(False)
    head = list(classifier_head(model).parameters())
    rate = config.learning_rate * config.backbone_lr_scale
    param_groups = [{"params": head, "lr": config.learning_rate, "name": "head"}]
    for depth, group in enumerate(reversed(groups[frozen:])):
        param_groups.append({"params": group, "lr": rate * config.layer_decay**depth, "name": f"depth-{depth}"})
    logger.info("%d depth groups, the lowest %d frozen; top backbone rate %.2e", len(groups), frozen, rate)
    return param_groups


def _total_steps(config: FullConfig, batches_per_epoch: int, num_processes: int) -> int:
    """Scheduler length in single-process steps (accelerate steps a prepared scheduler once per process)."""
    total = config.epochs * batches_per_epoch
    if config.max_steps is not None:
        total = min(total, config.max_steps * num_processes)
    return max(total, 1)


# --- the loop -----------------------------------------------------------------------------------


@dataclass
class _Run:
    """Mutable state of one training run, shared by the epoch helpers."""

    accelerator: Any
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    config: FullConfig
    should_stop: Callable[[], bool]
    progress: bool
    mixer: BatchMixer
    trained_classes: torch.Tensor  # the outputs that have training images: label smoothing spreads over these
    ema: Any = None  # timm's ModelEmaV3 of the unwrapped model, or None
    step: int = 0
    cancelled: bool = False

    @property
    def out_of_steps(self) -> bool:
        return self.config.max_steps is not None and self.step >= self.config.max_steps


def _channels_last(pixel_values: torch.Tensor) -> torch.Tensor:
    return pixel_values.contiguous(memory_format=torch.channels_last)


def _moving_average(model: torch.nn.Module, config: FullConfig):
    """timm's ModelEmaV3 of `model` (its decay warms up: early epochs follow the weights closely)."""
    if config.ema_decay == 0:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=config.ema_decay, use_warmup=True)


def smoothed_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, smoothing: float, classes: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy against targets with `smoothing` of their mass spread evenly over `classes`.

    Not over every output: a version that keeps the ImageNet rows of its parent has 1,000 outputs
    no training image belongs to, and smoothing onto them would teach it to expect them.
    `targets` are class indices or (batch, outputs) probabilities (MixUp/CutMix).
    """
    log_probs = torch.nn.functional.log_softmax(logits, dim=-1)
    if targets.dim() == 1:
        targets = torch.nn.functional.one_hot(targets, logits.shape[-1]).to(log_probs.dtype)
    uniform = torch.zeros_like(log_probs[0]).index_fill_(0, classes, 1.0 / len(classes))
    soft = (1 - smoothing) * targets + smoothing * uniform
    return -(soft * log_probs).sum(-1).mean()


def _freeze_batchnorm(model: torch.nn.Module) -> None:
    """BatchNorm layers normalise with their running statistics and do not update them (weights still train)."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def _train_epoch(run: _Run, loader, epoch: int) -> tuple[float, int]:
    """One pass over `loader`; returns (mean loss, images) over all processes."""
    from tqdm.auto import tqdm

    accelerator, model = run.accelerator, run.model
    model.train()
    if run.config.freeze_batchnorm:
        _freeze_batchnorm(model)
    loss_sum = torch.zeros((), device=accelerator.device)
    batches = images = 0
    bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", disable=not run.progress or not accelerator.is_main_process)
    for pixel_values, labels in bar:
        pixel_values, targets = run.mixer(pixel_values, labels)
        logits = model(pixel_values=_channels_last(pixel_values)).logits
        loss = smoothed_cross_entropy(logits.float(), targets, run.config.label_smoothing, run.trained_classes)
        accelerator.backward(loss)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        run.step += 1
        if run.ema is not None:
            run.ema.update(accelerator.unwrap_model(model), step=run.step)
        loss_sum += loss.detach()
        batches += 1
        images += labels.shape[0]
        if not bar.disable and batches % 10 == 0:  # reading the loss waits for the GPU; not on every step
            bar.set_postfix(loss=f"{float(loss_sum) / batches:.4f}")
        # Polled on every process and combined (one scalar all-reduce), so all processes stop on the same step.
        if run.should_stop():
            accelerator.set_trigger()
        if accelerator.check_trigger():
            run.cancelled = True
            break
        if run.out_of_steps:
            break
    bar.close()
    counts = loss_sum.new_tensor([float(batches), float(images)])
    totals = accelerator.reduce(torch.cat([loss_sum.reshape(1), counts]), "sum")
    return float(totals[0] / totals[1].clamp_min(1)), int(totals[2])


def evaluate(accelerator, model: torch.nn.Module, loader) -> float:
    """Top-1 accuracy over the whole loader; gather_for_metrics drops the padding of the last batch."""
    model.eval()
    correct = total = 0
    with torch.no_grad():  # not inference_mode: a DDP-wrapped model may still touch its buffers
        for pixel_values, labels in loader:
            predictions = model(pixel_values=_channels_last(pixel_values)).logits.argmax(-1)
            predictions, labels = accelerator.gather_for_metrics((predictions, labels))
            correct += int((predictions == labels).sum())
            total += labels.numel()
    return correct / max(total, 1)


def _cpu_state(accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in accelerator.get_state_dict(model).items()}


def _epoch_record(
    run: _Run, epoch: int, loss: float, accuracy: float, resources: dict, train_s: float, total_s: float
) -> dict:
    """HISTORY_KEYS and more; `resources` (training/resources.py) brings images_per_second and the rest."""
    groups = run.optimizer.param_groups
    return {
        "epoch": epoch,
        "train_loss": loss,
        "eval_accuracy": accuracy,
        "learning_rate": groups[0]["lr"],
        "backbone_learning_rate": groups[1]["lr"] if len(groups) > 1 else None,  # None: the whole backbone frozen
        "seconds": total_s,
        "eval_seconds": total_s - train_s,
        "steps": run.step,
        **resources,
    }


def _log_epoch(run: _Run, record: dict, log_with: Any) -> None:
    if log_with is not None:
        run.accelerator.log(record, step=run.step)
    if run.accelerator.is_main_process:
        logger.info(
            "epoch %d: train loss %.4f, eval accuracy %.4f, lr %.2e, %.1f s, %.1f images/s",
            record["epoch"], record["train_loss"], record["eval_accuracy"], record["learning_rate"],
            record["seconds"], record["images_per_second"] or 0.0,
        )


def train_full(
    model: torch.nn.Module,
    preprocess: Callable[[Sequence[Image.Image]], torch.Tensor],
    train: list[tuple[Path, int]],
    evaluation: list[tuple[Path, int]],
    *,
    config: FullConfig = FullConfig(),
    min_side: int | None = None,
    progress: bool = True,
    should_stop: Callable[[], bool] = lambda: False,
    on_epoch: Callable[[dict], None] | None = None,
    log_with: str | list[str] | None = None,
    project_dir: Path | None = None,
) -> FullResult:
    """Fine-tune a copy of `model` on `train`, keep the epoch best on `evaluation`, return it on CPU.

    `preprocess`: the served preprocessing (list of RGB images -> pixel_values). `min_side`: the
    shortest side decoding must keep (default: `preprocess.min_side`). `should_stop` is polled every
    step (cancellation: the best model so far is returned). `on_epoch` gets each history record.
    `log_with`: accelerate tracker name(s) (or GeneralTracker objects); logs go under `project_dir`.
    """
    num_outputs = classifier_head(model).out_features
    _check_rows(train, num_outputs, "training")
    _check_rows(evaluation, num_outputs, "evaluation")
    min_side = min_side or getattr(preprocess, "min_side", None)
    started = time.perf_counter()

    from accelerate.utils import set_seed
    from transformers import get_cosine_schedule_with_warmup

    accelerator = _make_accelerator(config, log_with, project_dir)
    set_seed(config.seed)
    # The caller's model stays as it was: it may be the one serving predictions right now.
    model = copy.deepcopy(model).to(memory_format=torch.channels_last).requires_grad_(True)
    augmentation = PhotoAugmentation(config.auto_augment) if config.augment else None
    train_set = ImageDataset(train, preprocess, min_side=min_side, augmentation=augmentation)
    train_loader = _loader(train_set, config, train=True)
    eval_loader = _loader(ImageDataset(evaluation, preprocess, min_side=min_side, augmentation=None), config, train=False)
    optimizer = torch.optim.AdamW(_param_groups(model, config), weight_decay=config.weight_decay)
    total = _total_steps(config, len(train_loader), accelerator.num_processes)
    scheduler = get_cosine_schedule_with_warmup(optimizer, round(total * config.warmup_ratio), total)
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler
    )
    if log_with is not None:
        # Trackers such as TensorBoard reject None values in their hyperparameters.
        accelerator.init_trackers("classifr", config={k: v for k, v in asdict(config).items() if v is not None})
    mixer = BatchMixer(num_classes=num_outputs, mixup_alpha=config.mixup_alpha, cutmix_alpha=config.cutmix_alpha)
    trained_classes = torch.tensor(sorted({label for _, label in train}), device=accelerator.device)
    ema = _moving_average(accelerator.unwrap_model(model), config)
    run = _Run(accelerator, model, optimizer, scheduler, config, should_stop, progress, mixer, trained_classes, ema)
    history, best, stop_reason = _fit(run, train_loader, eval_loader, on_epoch, log_with)
    if log_with is not None:
        # What accelerator.end_training() does, minus destroying the process group: train_full is
        # one step of a larger script, which still needs the group afterwards under accelerate launch.
        for tracker in accelerator.trackers:  # only the main process has trackers
            tracker.finish()
    return _finish(run, history, best, stop_reason, time.perf_counter() - started)


def _fit(run: _Run, train_loader, eval_loader, on_epoch, log_with) -> tuple[list[dict], dict, str]:
    """Epochs until done, out of patience, out of steps or cancelled; `best` holds the best epoch's weights.

    Each epoch's record carries what it cost (training/resources.py): images/s, peak memory, CPU, GPU.
    """
    with ResourceMeter(device=run.accelerator.device) as meter:
        return _epochs(run, train_loader, eval_loader, on_epoch, log_with, meter)


def _epochs(run: _Run, train_loader, eval_loader, on_epoch, log_with, meter: ResourceMeter) -> tuple[list[dict], dict, str]:
    history: list[dict] = []
    best: dict[str, Any] = {"epoch": 0, "accuracy": None, "state": None}
    for epoch in range(1, run.config.epochs + 1):
        epoch_started = time.perf_counter()
        meter.start()
        loss, images = _train_epoch(run, train_loader, epoch)
        resources = meter.stop(images)
        train_seconds = time.perf_counter() - epoch_started
        if run.cancelled:
            # Cancelling means "stop now": no evaluation of the half-trained epoch.
            logger.info("training cancelled at step %d (epoch %d); keeping epoch %d", run.step, epoch, best["epoch"])
            return history, best, "cancelled"
        evaluated = run.ema.module if run.ema is not None else run.model
        accuracy = evaluate(run.accelerator, evaluated, eval_loader)
        record = _epoch_record(run, epoch, loss, accuracy, resources, train_seconds, time.perf_counter() - epoch_started)
        history.append(record)
        _log_epoch(run, record, log_with)
        if on_epoch is not None:
            on_epoch(record)
        if best["accuracy"] is None or accuracy > best["accuracy"]:
            best = {"epoch": epoch, "accuracy": accuracy, "state": _cpu_state(run.accelerator, evaluated)}
        if run.out_of_steps:
            return history, best, "max_steps"
        if epoch - best["epoch"] >= run.config.patience and epoch < run.config.epochs:
            logger.info("early stopping after epoch %d: no better accuracy since epoch %d", epoch, best["epoch"])
            return history, best, "early_stopping"
    return history, best, "completed"


def _finish(run: _Run, history: list[dict], best: dict, stop_reason: str, seconds: float) -> FullResult:
    accelerator = run.accelerator
    # keep_fp32_wrapper=False removes the autocast wrapper: the result is a plain module again.
    model = accelerator.unwrap_model(run.model, keep_fp32_wrapper=False)
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model = model.to("cpu", memory_format=torch.channels_last).eval()
    extra = {
        "mixed_precision": accelerator.mixed_precision,
        "num_processes": accelerator.num_processes,
        "device": str(accelerator.device),
    }
    accelerator.free_memory()  # drop accelerate's references to the prepared objects (GPU memory)
    logger.info(
        "full training: %s after %d steps in %.1f s, best epoch %d", stop_reason, run.step, seconds, best["epoch"]
    )
    return FullResult(model, best["epoch"], history, seconds, stop_reason, run.step, best["accuracy"], extra)
