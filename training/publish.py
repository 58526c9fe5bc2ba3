"""Publish a trained model as a registry version: weights, processor, model card, metrics, confusion PNG."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import EvalResult as HubEvalResult
from huggingface_hub import ModelCard, ModelCardData

from classifr.core.labels import LabelSet
from classifr.versions.folder import write_confusion_png, write_metrics
from classifr.versions.registry import ModelRegistry, VersionInfo
from classifr.core.text import escape_markdown

logger = logging.getLogger(__name__)


CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

An image classifier trained by Classifr from version `{{ parent }}` with the **{{ strategy }}** strategy.
It knows {{ num_labels }} labels; new in this version: {{ added }}.

## Evaluation ({{ num_images }} held-out images of the training data)

| metric | this version | parent `{{ parent }}` |
|---|---:|---:|
| accuracy | {{ accuracy }} | {{ parent_accuracy }} |
| macro F1 | {{ macro_f1 }} | |
| accuracy on labels both know | {{ shared_new }} | {{ shared_parent }} |
| churn (top-1 changed) | {{ churn }} | |
| churn, old label to new label | {{ churn_old_to_new }} | |
| churn, old label to old label | {{ churn_old_to_old }} | |
| forgetting: old-label images the parent got right, now wrong among old labels only | {{ forgetting }} | |

{{ new_label_table }}

Promotion gate: {{ gate }}

Per-class precision, recall and F1 are in `metrics.json`; the confusion matrix in `confusion_matrix.png`.

ONNX: {{ onnx }}

## Training

- Parent version: `{{ parent }}`; strategy `{{ strategy }}`; hyperparameters: {{ hyperparameters }}
- Training images per label: {{ train_counts }}

## Training data

| dataset | fingerprint | images | by source |
|---|---|---:|---|
{{ dataset_rows }}
"""


@dataclass(frozen=True)
class VersionFiles:
    """Everything written into the new version's folder."""

    model: torch.nn.Module
    processor_source: Path  # the parent's folder: its image processor is the new version's too
    labels: LabelSet
    labels_added: list[str]
    parent: str
    strategy: str
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any]  # EvalResult.to_json()
    comparison: dict[str, Any]  # Comparison.to_json()
    gate: dict[str, Any]
    datasets: dict[str, dict]  # name -> fingerprint, images, by_source
    train_counts: dict[str, int]
    confusion_png: Path
    held_out: dict[str, Any] = field(default_factory=dict)  # TrainingData.held_out_report(): per label, too few
    reference_scores: list[float] = field(default_factory=list)  # top-1 probabilities on the eval split (drift)
    # The eval split's image paths and reference labels: ONNX verification (up to 300 of them) and
    # the int8 accuracy check (all of them). Empty: verified on the sample photos, no int8.
    eval_images: list[Path] = field(default_factory=list)
    eval_labels: list[str] = field(default_factory=list)
    onnx: bool = True  # export model.onnx beside the weights (classifr.inference.onnx_export)
    # ORT quantizes only MatMul/Gemm dynamically (its ConvInteger ran 10x slower than float32 here), so
    # for a CNN only the head shrinks; measured on v1: 3.8 of 18.6 MB saved, 0.8 point lost. Opt-in.
    onnx_int8: bool = False
    # Per epoch of the full strategy (or one record of the head strategy's embedding pass): loss,
    # accuracy and the resources watched while training (training.resources, docs/retraining.md).
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.eval_images) != len(self.eval_labels):
            raise ValueError(f"{len(self.eval_images)} eval images but {len(self.eval_labels)} eval labels")

    def write(self, folder: Path) -> None:
        from transformers import AutoImageProcessor

        self.model.save_pretrained(folder)
        AutoImageProcessor.from_pretrained(self.processor_source).save_pretrained(folder)
        write_metrics(folder, self.summary())
        write_confusion_png(folder, self.confusion_png.read_bytes())
        onnx_line = self._export_onnx(folder) if self.onnx else "not exported"
        self.card(onnx=onnx_line).save(folder / "README.md")

    def _export_onnx(self, folder: Path) -> str:
        """Export and verify the saved checkpoint as the server loads it; a failure never stops publishing."""
        from classifr.inference.onnx_export import MAX_VERIFICATION_IMAGES, export_version

        images = list(self.eval_images[:MAX_VERIFICATION_IMAGES]) or None  # None: the sample photos
        eval_set = (list(self.eval_images), list(self.eval_labels)) if self.eval_images and self.onnx_int8 else None
        try:
            export = export_version(
                folder, version=f"candidate from {self.parent}", images=images, eval_set=eval_set, quantize=self.onnx_int8
            )
        except Exception as err:  # noqa: BLE001 - export_version records failures; this is a last resort
            logger.warning("ONNX export failed unexpectedly, publishing without it: %s", err)
            return f"not exported ({type(err).__name__}: {err})"
        return export.summary()

    def summary(self) -> dict[str, Any]:
        """metrics.json: the evaluation plus what the Model tab shows (classifr.versions.overview reads it)."""
        return {
            "metrics": self.metrics,
            "comparison": self.comparison,
            "gate": self.gate,
            "held_out": dict(self.held_out),
            "train_counts": dict(self.train_counts),
            "hyperparameters": dict(self.hyperparameters),
            "strategy": self.strategy,
            "labels_added": list(self.labels_added),
            "datasets": dict(self.datasets),
            "parent": self.parent,
            "reference_scores": list(self.reference_scores),
            "history": [dict(record) for record in self.history],
        }

    def card(self, *, onnx: str = "not exported") -> ModelCard:
        data = ModelCardData(
            model_name="classifr",
            library_name="transformers",
            pipeline_tag="image-classification",
            tags=["classifr", f"strategy-{self.strategy}"],
            eval_results=self._eval_results(),
        )
        c, m = self.comparison, self.metrics
        return ModelCard.from_template(
            data,
            template_str=CARD_TEMPLATE,
            model_name=f"Classifr model (from {self.parent})",
            parent=self.parent,
            strategy=self.strategy,
            num_labels=len(self.labels),
            added=", ".join(escape_markdown(x) for x in self.labels_added) or "none",
            num_images=m["num_images"],
            accuracy=_pct(m["accuracy"]),
            parent_accuracy=_pct(c.get("parent_accuracy")),
            macro_f1=_pct(m["macro_f1"]),
            shared_new=_pct(c.get("shared_accuracy_new")),
            shared_parent=_pct(c.get("shared_accuracy_parent")),
            churn=_pct(c.get("churn")),
            churn_old_to_new=_pct(c.get("churn_old_to_new")),
            churn_old_to_old=_pct(c.get("churn_old_to_old")),
            forgetting=_forgetting_cell(c.get("old_labels")),
            new_label_table=self._new_label_table(),
            onnx=escape_markdown(onnx),
            gate="passed" if self.gate["passed"] else "failed: " + "; ".join(map(escape_markdown, self.gate["reasons"])),
            hyperparameters=", ".join(f"{k}={v}" for k, v in self.hyperparameters.items()),
            train_counts=", ".join(f"{escape_markdown(k)} {v}" for k, v in sorted(self.train_counts.items())),
            dataset_rows="\n".join(
                f"| {escape_markdown(name)} | `{d['fingerprint']}` | {d['images']} | "
                + ", ".join(f"{k} {v}" for k, v in d["by_source"].items())
                + " |"
                for name, d in self.datasets.items()
            ),
        )

    def _eval_results(self) -> list[HubEvalResult]:
        common = dict(task_type="image-classification", dataset_type="imagefolder", dataset_name="classifr project dataset (test split)", dataset_split="test")
        return [
            HubEvalResult(metric_type="accuracy", metric_value=self.metrics["accuracy"], **common),
            HubEvalResult(metric_type="f1", metric_name="macro F1", metric_value=self.metrics["macro_f1"], **common),
        ]

    def _new_label_table(self) -> str:
        new_labels = self.comparison.get("new_labels") or {}
        if not new_labels:
            return ""
        rows = "\n".join(
            f"| {escape_markdown(k)} | {_pct(v.get('precision'))} | {_pct(v.get('recall'))} | {v.get('held_out', 0)} |"
            for k, v in new_labels.items()
        )
        return "| new label | precision | recall | held-out images |\n|---|---:|---:|---:|\n" + rows


def publish(registry: ModelRegistry, files: VersionFiles, *, metadata: dict[str, Any]) -> VersionInfo:
    """The next registry version from `files`, with the `candidate` alias pointing at it."""
    return registry.publish(files.write, parent=files.parent, metadata=metadata, aliases=["candidate"])


def _forgetting_cell(old: dict[str, Any] | None) -> str:
    if not old or old.get("forgetting") is None:
        return "n/a"
    return f"{old['forgetting']:.1%} ({old['forgotten']} of {old['parent_right']})"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
