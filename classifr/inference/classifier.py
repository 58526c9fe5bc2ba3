"""Classifier: one loaded model version that turns decoded images into ranked labels.

Any Transformers image-classification checkpoint works (a timm wrapper, ViT, ConvNeXt, ...):
labels come from `config.id2label`, preprocessing from the checkpoint's own image processor.
A Classifier holds no per-request state, so one instance serves many threads at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors import SafetensorError

import numpy as np

from classifr.core.errors import ClassifrError, ModelLoadError
from classifr.core.labels import LabelSet
from classifr.core.preprocessing import Preprocessor, create_preprocessor

logger = logging.getLogger(__name__)


class NonFiniteScoresError(ClassifrError, RuntimeError):
    """The model gave NaN or infinite scores: its weights are damaged, nothing it says can be served."""


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score}


def classifier_head(model: torch.nn.Module) -> torch.nn.Linear:
    """The final linear layer: timm models through the wrapper, Transformers models as `.classifier`."""
    timm_model = getattr(model, "timm_model", None)
    head = timm_model.get_classifier() if timm_model is not None else getattr(model, "classifier", None)
    if not isinstance(head, torch.nn.Linear):
        raise ClassifrError(f"cannot find a linear classifier head on {type(model).__name__} (found {type(head).__name__})")
    return head


def _load_processor(source: str, revision: str | None) -> Any:
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(source, revision=revision)


def _load_model(source: str, revision: str | None) -> torch.nn.Module:
    from transformers import AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(source, revision=revision)


class _HeadInputProbe:
    """A forward hook that keeps the head's input, per thread.

    Per thread because requests on other threads (explanations, other batches) run the same module
    at the same time. Copies of the model (training deep-copies its parent) get a fresh probe.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def __call__(self, _module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], _output: Any) -> None:
        self._local.value = inputs[0]

    def take(self) -> torch.Tensor | None:
        value = getattr(self._local, "value", None)
        self._local.value = None
        return value

    def __deepcopy__(self, memo: dict) -> _HeadInputProbe:
        return _HeadInputProbe()

    def __reduce__(self) -> tuple:
        return (_HeadInputProbe, ())


class Classifier:
    """A model version ready to predict: model in eval mode, its labels and its preprocessing."""

    backend = "torch"  # what runs the forward pass of predictions (classifr.inference.onnx_backend: "onnx")

    def __init__(self, model: torch.nn.Module, preprocessor: Preprocessor, *, version: str) -> None:
        config = model.config
        self.labels = LabelSet.from_id2label(config.id2label)
        if len(self.labels) != config.num_labels:
            raise ModelLoadError(f"model {version} has {config.num_labels} outputs but {len(self.labels)} labels")
        # channels-last suits CPU convolutions and matches the layout the preprocessor produces.
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.preprocess = preprocessor
        self.version = version
        self._head_input = _HeadInputProbe()
        classifier_head(self.model).register_forward_hook(self._head_input)
        # Why its last prediction failed (non-finite scores), None after a finite one: /health reads it.
        self.output_problem: str | None = None

    @classmethod
    def load(cls, source: str | Path, *, version: str, revision: str | None = None) -> Classifier:
        """Load a checkpoint folder or Hub id; ModelLoadError says which and why on failure."""
        source = str(source)
        started = time.perf_counter()
        try:
            model = _load_model(source, revision)
            processor = _load_processor(source, revision)
        except ClassifrError:
            raise
        except (OSError, ValueError, KeyError) as err:
            raise ModelLoadError(f"could not load image classifier from {source!r}: {_first_line(err)}") from err
        except (SafetensorError, RuntimeError) as err:  # a truncated or scrambled weights file
            raise ModelLoadError(
                f"could not load image classifier from {source!r}: its weights ({_weights_names(source)}) are damaged: "
                f"{_first_line(err)}"
            ) from err
        if not hasattr(model.config, "id2label"):
            raise ModelLoadError(f"{source!r} is not an image-classification checkpoint (no id2label)")
        classifier = cls(model, create_preprocessor(processor), version=version)
        logger.info(
            "loaded %s from %s (%d labels) in %.2f s",
            version,
            source,
            len(classifier.labels),
            time.perf_counter() - started,
        )
        return classifier

    @property
    def min_side(self) -> int:
        """Decoders may shrink images (JPEG draft mode) while the shorter side stays at least this."""
        return self.preprocess.min_side

    def logits(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixel_values = self.preprocess(images)
        with torch.inference_mode():
            return self.model(pixel_values=pixel_values).logits

    def features_and_logits(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled backbone features (the head's input) and logits, from one forward pass.

        A forward hook on the head keeps its input, so this works for any model whose last layer
        is a linear head (timm wrappers, ViT, ConvNeXt) without knowing its forward.
        """
        self._head_input.take()
        logits = self.logits(images)
        pooled = self._head_input.take()
        return pooled.float().reshape(len(images), -1), logits.float()

    def predict(self, images: Sequence[Image.Image], *, top_k: int = 5) -> list[list[Prediction]]:
        """Top-k labels per image, best first; one batched forward pass for all images."""
        return self.predict_with_features(images, top_k=top_k, features=False)[0]

    def predict_with_features(
        self, images: Sequence[Image.Image], *, top_k: int = 5, features: bool = True
    ) -> tuple[list[list[Prediction]], np.ndarray | None]:
        """Top-k labels per image and, with `features`, each image's pooled features as float16 rows."""
        if not images:
            return [], None
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if features:
            pooled, logits = self.features_and_logits(images)
            embeddings = pooled.to(torch.float16).numpy()
        else:
            logits, embeddings = self.logits(images).float(), None
        return self._ranked(logits, top_k), embeddings

    def check_finite(self, logits: torch.Tensor) -> None:
        """NonFiniteScoresError when any score is NaN or infinite (scrambled weights): never serve those."""
        if bool(torch.isfinite(logits).all()):
            if self.output_problem is not None:
                self.output_problem = None
            return
        self.output_problem = f"model {self.version} gave non-finite scores"
        raise NonFiniteScoresError(self.output_problem)

    def _ranked(self, logits: torch.Tensor, top_k: int) -> list[list[Prediction]]:
        self.check_finite(logits)
        probabilities = logits.softmax(dim=-1)
        scores, indices = probabilities.topk(min(top_k, len(self.labels)), dim=-1)
        names = self.labels.names
        return [
            [Prediction(names[i], s) for i, s in zip(row_indices.tolist(), row_scores.tolist())]
            for row_indices, row_scores in zip(indices, scores)
        ]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _weights_names(source: str) -> str:
    names = sorted(path.name for path in Path(source).glob("*.safetensors")) if Path(source).is_dir() else []
    return ", ".join(names) or "the weights file"


def configure_runtime(num_threads: int) -> None:
    """Process-wide settings, called once by the entry points (app, CLI), never by library code."""
    from classifr.inference.threads import in_own_thread

    # The calling thread would keep an OpenMP team of its own alive for good, and slow down the
    # forward thread's (classifr.inference.threads); the number of threads is global either way.
    in_own_thread(torch.set_num_threads, num_threads)
    # Library progress bars would flood the CLI's stderr and the server log on every model load.
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
