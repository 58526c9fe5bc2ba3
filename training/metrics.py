"""Evaluation metrics of a model version, through `evaluate`, fully offline.

`evaluate.load("accuracy")` fetches `evaluate-metric/accuracy` from the Hugging Face Hub. Our own
metric scripts in the same standard format live in `training/evaluate_modules/<name>/<name>.py`
(scikit-learn computes the numbers, as in the Hub scripts) and are loaded from their path.

Where evaluate writes: it copies a script into a *module cache* and imports it from there, and a
metric instance makes a *data folder*. `evaluate.load` in 0.4.x takes both from `HF_MODULES_CACHE` /
`HF_HOME`, frozen when `evaluate` is first imported, and has no argument for the module cache.
`load_metric` therefore runs evaluate.load's own steps (`evaluation_module_factory`,
`import_main_class`, `download_and_prepare`) with both places explicit: `<cache_dir>/modules` and
`<cache_dir>/metrics`, or, without `cache_dir`, evaluate's default places resolved from the
environment at each call (so a later change of `HF_HOME` is honoured too).

Public API: `classification_metrics` -> `EvalResult`, `compare_with_parent` -> `Comparison`,
`save_confusion_png`, `load_metric`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from classifr.core.errors import ClassifrError, LabelError
from classifr.data.split import MIN_HELD_OUT

if TYPE_CHECKING:
    import evaluate

logger = logging.getLogger(__name__)

MODULES_DIR = Path(__file__).resolve().parent / "evaluate_modules"
METRIC_NAMES = ("accuracy", "f1", "precision", "recall", "confusion_matrix")
MAX_CONFUSIONS_ADDED = 10  # the most frequent old/new confusion pairs a comparison keeps
CONFUSION_COUNTS_MAX_LABELS = 20  # above this, numbers in the cells are unreadable
MAX_TICK_LABEL_CHARS = 24


# --------------------------------------------------------------------------- loading


def evaluate_cache_dirs(cache_dir: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """(module cache, metric data folder) that `load_metric` uses for `cache_dir`.

    Without `cache_dir`: evaluate's defaults (`HF_MODULES_CACHE`, `HF_METRICS_CACHE`, else under
    `HF_HOME`, else `$XDG_CACHE_HOME/huggingface` or `~/.cache/huggingface`), read now rather than
    at `import evaluate`.
    """
    if cache_dir is not None:
        root = Path(cache_dir).expanduser()
        return root / "modules", root / "metrics"
    env = os.environ
    xdg_cache = env.get("XDG_CACHE_HOME") or "~/.cache"
    hf_home = Path(env.get("HF_HOME") or Path(xdg_cache) / "huggingface").expanduser()
    modules = Path(env.get("HF_MODULES_CACHE") or hf_home / "modules").expanduser()
    metrics = Path(env.get("HF_METRICS_CACHE") or hf_home / "metrics").expanduser()
    return modules, metrics


def _package_name(modules_dir: Path) -> str:
    # evaluate imports a copied script as `<package>.metrics.<name>.<hash>.<name>`, where <package>
    # is a top-level package inside the module cache. Python remembers where a package lives for
    # the whole process, so one fixed name (evaluate's own "evaluate_modules") cannot serve two
    # cache folders in one process; it would also be shadowed by training/evaluate_modules when
    # training/ is sys.path[0] (`accelerate launch training/train.py`). One name per folder avoids both.
    digest = hashlib.sha1(str(modules_dir.resolve()).encode("utf-8")).hexdigest()[:12]
    return f"classifr_evaluate_{digest}"


def load_metric(name: str, *, cache_dir: str | os.PathLike[str] | None = None) -> evaluate.EvaluationModule:
    """A fresh instance of our local metric `name` (one of METRIC_NAMES), loaded without network.

    The instance keeps its inputs in memory (no Arrow files or locks in the data folder); it is
    not shared, so callers in different threads each load their own.
    """
    script_dir = MODULES_DIR / name
    if name not in METRIC_NAMES or not (script_dir / f"{name}.py").is_file():
        raise ClassifrError(f"unknown metric {name!r}; the local metrics are {', '.join(METRIC_NAMES)}")
    from evaluate.loading import evaluation_module_factory, import_main_class, init_dynamic_modules

    modules_dir, data_dir = evaluate_cache_dirs(cache_dir)
    # init_dynamic_modules also puts modules_dir on sys.path: evaluate imports the copy from there.
    dynamic_dir = init_dynamic_modules(name=_package_name(modules_dir), hf_modules_cache=modules_dir)
    module = evaluation_module_factory(str(script_dir), dynamic_modules_path=dynamic_dir)
    metric_class = import_main_class(module.module_path)
    metric = metric_class(hash=module.hash, keep_in_memory=True, cache_dir=str(data_dir))
    metric.download_and_prepare()  # a no-op for our scripts, kept to mirror evaluate.load
    logger.debug("loaded metric %s from %s (module cache %s)", name, script_dir, dynamic_dir)
    return metric


# --------------------------------------------------------------------------- input checks


def _check_lengths(**sequences: Sequence[str]) -> int:
    lengths = {name: len(values) for name, values in sequences.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{count} {name}" for name, count in lengths.items())
        raise ClassifrError(f"{' and '.join(lengths)} must have the same length, got {described}")
    count = next(iter(lengths.values()))
    if count == 0:
        raise ClassifrError(f"nothing to evaluate: {' and '.join(lengths)} are empty (length 0)")
    return count


def _unique_labels(labels: Sequence[str], *, what: str) -> tuple[str, ...]:
    counts = Counter(labels)
    duplicates = [label for label, count in counts.items() if count > 1]
    if duplicates:
        raise LabelError(f"{what} has duplicate labels: {duplicates[:5]!r}")
    return tuple(labels)


def _check_known(values: Sequence[str], known: set[str], *, what: str, label_list: str) -> None:
    unknown = sorted({value for value in values if value not in known})
    if unknown:
        raise LabelError(f"{what} {unknown[:5]!r} not in the {len(known)} {label_list}")


def occurring_labels(references: Sequence[str], predictions: Sequence[str], labels: Sequence[str]) -> tuple[str, ...]:
    """The labels present in `references` or `predictions`, in the order of `labels`.

    A true label the model does not know (evaluating the parent on data with new labels) is
    allowed and comes after the model's labels, sorted; a prediction outside `labels` means the
    wrong label list was passed and raises LabelError.
    """
    model_labels = _unique_labels(labels, what="the model's label list")
    _check_known(predictions, set(model_labels), what="predictions", label_list="model labels")
    present = set(references) | set(predictions)
    ordered = [label for label in model_labels if label in present]
    unknown_truths = sorted(present.difference(model_labels))
    if unknown_truths:
        logger.info("true labels unknown to the model (always wrong): %s", unknown_truths[:10])
    return tuple(ordered + unknown_truths)


# --------------------------------------------------------------------------- classification metrics


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one model on one evaluation set; per-class rows and the matrix follow `labels`."""

    accuracy: float
    macro_f1: float  # unweighted mean over `labels` (those present), not over the whole head
    per_class: dict[str, dict[str, float | int]]  # label -> precision, recall, f1, support
    confusion: list[list[int]]  # rows: true label, columns: predicted label
    labels: tuple[str, ...]
    num_images: int

    def to_json(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "num_images": self.num_images,
            "labels": list(self.labels),
            "per_class": {label: dict(row) for label, row in self.per_class.items()},
            "confusion": [list(row) for row in self.confusion],
        }


def _encode(values: Sequence[str], index: dict[str, int]) -> list[int]:
    return [index[value] for value in values]


def classification_metrics(
    references: Sequence[str],
    predictions: Sequence[str],
    *,
    labels: Sequence[str],
    cache_dir: str | os.PathLike[str] | None = None,
) -> EvalResult:
    """Accuracy, macro F1, per-class precision/recall/F1/support and the confusion matrix.

    `labels` is the model's full label list (ImageNet: 1,000); the per-class rows and the matrix
    cover only the labels present in `references` or `predictions`, in that list's order.
    Precision of a label never predicted and recall of a label never true count as 0.
    """
    num_images = _check_lengths(references=references, predictions=predictions)
    present = occurring_labels(references, predictions, labels)
    index = {label: i for i, label in enumerate(present)}
    y_true, y_pred = _encode(references, index), _encode(predictions, index)
    ids = list(range(len(present)))
    pairs = {"references": y_true, "predictions": y_pred}
    scores = {"labels": ids, "zero_division": 0.0}

    accuracy = load_metric("accuracy", cache_dir=cache_dir).compute(**pairs)["accuracy"]
    f1_metric = load_metric("f1", cache_dir=cache_dir)
    macro_f1 = f1_metric.compute(**pairs, average="macro", **scores)["f1"]
    per_label_f1 = f1_metric.compute(**pairs, average=None, **scores)["f1"]
    precision = load_metric("precision", cache_dir=cache_dir).compute(**pairs, average=None, **scores)["precision"]
    recall = load_metric("recall", cache_dir=cache_dir).compute(**pairs, average=None, **scores)["recall"]
    confusion = np.asarray(
        load_metric("confusion_matrix", cache_dir=cache_dir).compute(**pairs, labels=ids)["confusion_matrix"]
    )
    support = confusion.sum(axis=1)  # row sums: images whose true label is that row's

    per_class = {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(per_label_f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(present)
    }
    logger.info(
        "evaluated %d images over %d labels: accuracy %.4f, macro F1 %.4f", num_images, len(present), accuracy, macro_f1
    )
    return EvalResult(
        accuracy=float(accuracy),
        macro_f1=float(macro_f1),
        per_class=per_class,
        confusion=confusion.astype(int).tolist(),
        labels=present,
        num_images=num_images,
    )


# --------------------------------------------------------------------------- comparison with the parent


@dataclass(frozen=True)
class Comparison:
    """A new version against its parent on the same evaluation images.

    "Old" labels are the parent's. Churn shares are over all images; churn = old_to_new + old_to_old.
    """

    shared_accuracy_new: float | None  # on images whose true label the parent knows; None if none
    shared_accuracy_parent: float | None
    churn: float  # top-1 changed
    churn_old_to_new: float  # parent said an old label, new model a label the parent lacks
    churn_old_to_old: float  # changed to another old label
    new_label_recall: dict[str, float]  # true labels the parent lacks -> recall of the new model
    new_label_support: dict[str, int]
    num_images: int
    num_shared: int  # images whose true label the parent knows
    # Forgetting, measured apart from the new question (docs/retraining.md#the-promotion-gate):
    # on images of the parent's labels, the new model choosing among the parent's labels only.
    # None when there is no such image or no restricted answer was given.
    old_labels: dict[str, Any] | None = None
    new_labels: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> precision, recall, held_out, ...
    confusions_added: list[dict[str, Any]] = field(default_factory=list)  # {true, predicted, count}, old vs new labels

    def to_json(self) -> dict[str, Any]:
        return {
            "old_labels": None if self.old_labels is None else dict(self.old_labels),
            "new_labels": {label: dict(row) for label, row in self.new_labels.items()},
            "confusions_added": [dict(pair) for pair in self.confusions_added],
            "num_images": self.num_images,
            "num_shared": self.num_shared,
            "shared_accuracy_new": self.shared_accuracy_new,
            "shared_accuracy_parent": self.shared_accuracy_parent,
            "churn": self.churn,
            "churn_old_to_new": self.churn_old_to_new,
            "churn_old_to_old": self.churn_old_to_old,
            "new_label_recall": dict(self.new_label_recall),
            "new_label_support": dict(self.new_label_support),
        }


def _accuracy(references: Sequence[str], predictions: Sequence[str], metric: evaluate.EvaluationModule) -> float:
    index = {label: i for i, label in enumerate(sorted(set(references) | set(predictions)))}
    scores = metric.compute(references=_encode(references, index), predictions=_encode(predictions, index))
    return float(scores["accuracy"])


def _shared_accuracies(
    refs: np.ndarray, new: np.ndarray, parent: np.ndarray, shared: np.ndarray, cache_dir: str | os.PathLike[str] | None
) -> tuple[float | None, float | None]:
    if not shared.any():
        return None, None
    metric = load_metric("accuracy", cache_dir=cache_dir)
    truth = refs[shared].tolist()
    return _accuracy(truth, new[shared].tolist(), metric), _accuracy(truth, parent[shared].tolist(), metric)


def _new_label_recall(refs: np.ndarray, new: np.ndarray, old: set[str]) -> tuple[dict[str, float], dict[str, int]]:
    recall: dict[str, float] = {}
    support: dict[str, int] = {}
    for label in sorted(set(refs.tolist()) - old):
        mask = refs == label
        support[label] = int(mask.sum())
        recall[label] = float((new[mask] == label).mean())
    return recall, support


def _forgetting(
    refs: np.ndarray, new: np.ndarray, parent: np.ndarray, restricted: np.ndarray | None, shared: np.ndarray, old: set[str]
) -> dict[str, Any] | None:
    """Of the old-label images the parent got right, how many the new model, choosing among the
    parent's labels only, gets wrong (and how many it now answers with a new label); both models'
    accuracy on old-label images."""
    if restricted is None or not shared.any():
        return None
    parent_right = shared & (parent == refs)
    forgotten = parent_right & (restricted != refs)
    taken = parent_right & np.fromiter((label not in old for label in new), dtype=bool, count=len(new))
    right_count = int(parent_right.sum())
    return {
        "num_images": int(shared.sum()),
        "parent_right": right_count,
        "forgotten": int(forgotten.sum()),
        "taken_by_new_labels": int(taken.sum()),
        "forgetting": float(forgotten.sum() / right_count) if right_count else None,
        "accuracy_restricted": float((restricted[shared] == refs[shared]).mean()),
        "accuracy_parent": float((parent[shared] == refs[shared]).mean()),
    }


def _new_labels(refs: np.ndarray, new: np.ndarray, old: set[str], new_labels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Precision and recall of each label the parent lacks, with the counts they rest on."""
    present = set(refs.tolist()) | set(new.tolist()) | set(new_labels)
    rows: dict[str, dict[str, Any]] = {}
    for label in sorted(present - old, key=str.casefold):
        truth, said = refs == label, new == label
        held_out, predicted, right = int(truth.sum()), int(said.sum()), int((truth & said).sum())
        rows[label] = {
            "precision": right / predicted if predicted else None,
            "recall": right / held_out if held_out else None,
            "held_out": held_out,
            "predicted": predicted,
            "right": right,
            "measurable": held_out >= MIN_HELD_OUT,
        }
    return rows


def _confusions_added(refs: np.ndarray, new: np.ndarray, old: set[str]) -> list[dict[str, Any]]:
    """Errors between an old and a new label (either way): confusions the parent could not make."""
    pairs = Counter(
        (truth, said) for truth, said in zip(refs.tolist(), new.tolist()) if truth != said and (truth in old) != (said in old)
    )
    ranked = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))[:MAX_CONFUSIONS_ADDED]
    return [{"true": truth, "predicted": said, "count": count} for (truth, said), count in ranked]


def compare_with_parent(
    references: Sequence[str],
    new_predictions: Sequence[str],
    parent_predictions: Sequence[str],
    *,
    parent_labels: Sequence[str],
    restricted_predictions: Sequence[str] | None = None,
    new_labels: Sequence[str] = (),
    cache_dir: str | os.PathLike[str] | None = None,
) -> Comparison:
    """A new version against its parent: accuracy on the parent's labels, churn, forgetting, and
    precision/recall of the new labels.

    `restricted_predictions`: the new model's best label among the parent's labels only, for each
    image (forgetting is measured on these, so a new label winning is not counted as forgetting).
    `new_labels`: the labels added, so one with no held-out image is still reported.
    """
    num_images = _check_lengths(
        references=references, new_predictions=new_predictions, parent_predictions=parent_predictions
    )
    old = set(_unique_labels(parent_labels, what="parent_labels"))
    _check_known(parent_predictions, old, what="parent predictions", label_list="parent labels")
    restricted = None
    if restricted_predictions is not None:
        _check_lengths(references=references, restricted_predictions=restricted_predictions)
        _check_known(restricted_predictions, old, what="restricted predictions", label_list="parent labels")
        restricted = np.asarray(list(restricted_predictions), dtype=object)
    # Object arrays keep arbitrary strings intact (a fixed-width str dtype would be fine too).
    refs, new, parent = (
        np.asarray(list(values), dtype=object) for values in (references, new_predictions, parent_predictions)
    )

    shared = np.fromiter((label in old for label in refs), dtype=bool, count=num_images)
    new_is_old = np.fromiter((label in old for label in new), dtype=bool, count=num_images)
    changed = new != parent
    accuracy_new, accuracy_parent = _shared_accuracies(refs, new, parent, shared, cache_dir)
    recall, support = _new_label_recall(refs, new, old)

    comparison = Comparison(
        shared_accuracy_new=accuracy_new,
        shared_accuracy_parent=accuracy_parent,
        churn=float(changed.mean()),
        churn_old_to_new=float((changed & ~new_is_old).mean()),
        churn_old_to_old=float((changed & new_is_old).mean()),
        new_label_recall=recall,
        new_label_support=support,
        num_images=num_images,
        num_shared=int(shared.sum()),
        old_labels=_forgetting(refs, new, parent, restricted, shared, old),
        new_labels=_new_labels(refs, new, old, new_labels),
        confusions_added=_confusions_added(refs, new, old),
    )
    logger.info("compared with parent on %d images: churn %.4f", num_images, comparison.churn)
    return comparison


# --------------------------------------------------------------------------- confusion matrix picture


def _short(label: str) -> str:
    return label if len(label) <= MAX_TICK_LABEL_CHARS else label[: MAX_TICK_LABEL_CHARS - 1] + "…"


def _figure_inches(num_labels: int) -> tuple[float, float]:
    # About a third of an inch per row keeps 30 rotated tick labels legible; the extra width is
    # room for the colour bar. Clamped so 1 label is not a stamp and 200 not a poster.
    side = min(max(3.0 + 0.33 * num_labels, 4.5), 24.0)
    return side + 1.5, side


def _tick_font_size(num_labels: int) -> float:
    return 10.0 if num_labels <= 10 else 8.0 if num_labels <= 30 else 6.0


def _write_counts(ax: Any, matrix: np.ndarray, font_size: float) -> None:
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        colour = "white" if count > threshold else "black"  # readable on dark and light cells
        ax.text(col, row, str(count), ha="center", va="center", color=colour, fontsize=font_size)


def save_confusion_png(result: EvalResult, path: Path, *, title: str) -> Path:
    """Draw `result.confusion` (rows true, columns predicted) as a PNG at `path`; returns `path`.

    Uses a bare `matplotlib.figure.Figure` rendered by Agg, never pyplot, so no global backend
    or figure registry is touched and nothing stays open.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    matrix = np.asarray(result.confusion, dtype=int)
    num_labels = len(result.labels)
    font_size = _tick_font_size(num_labels)
    ticks = [_short(label) for label in result.labels]

    figure = Figure(figsize=_figure_inches(num_labels), layout="constrained")
    try:
        ax = figure.add_subplot()
        image = ax.imshow(matrix, cmap="Blues", interpolation="nearest")
        colour_bar = figure.colorbar(image, ax=ax, shrink=0.8, label="images")
        colour_bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts, not fractions
        ax.set_xticks(range(num_labels), ticks, rotation=60, ha="right", rotation_mode="anchor", fontsize=font_size)
        ax.set_yticks(range(num_labels), ticks, fontsize=font_size)
        ax.set_xlabel("Predicted label")
        ax.set_ylabel("True label")
        ax.set_title(title)
        if num_labels <= CONFUSION_COUNTS_MAX_LABELS:
            _write_counts(ax, matrix, font_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png", dpi=100)
    finally:
        figure.clear()  # a pyplot-free Figure has nothing to close; free its artists now
    logger.debug("wrote confusion matrix %s (%d labels)", path, num_labels)
    return path
