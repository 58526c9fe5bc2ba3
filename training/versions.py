"""Build a new model version from a parent: the label list, the new head, the config labels."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import torch

from classifr.core.errors import ClassifrError
from classifr.core.labels import LabelSet
from training.embeddings import classifier_head

logger = logging.getLogger(__name__)


def plan_labels(parent: LabelSet, data_labels: Sequence[str], *, new_head: bool) -> tuple[LabelSet, list[str]]:
    """The new version's labels and which of them are new.

    Default: the parent's labels (ids unchanged) plus every data label it lacks. `new_head`: only the
    labels present in the data, in a stable order; all of them count as added when the parent lacks them.
    """
    if new_head:
        if len(data_labels) < 2:
            raise ClassifrError(f"--new-head needs images of at least 2 labels, got {list(data_labels)}")
        labels = LabelSet(tuple(data_labels))
        return labels, [name for name in labels if name not in parent]
    labels = parent.with_added(data_labels)
    return labels, list(labels.names[len(parent) :])


def with_head(model: torch.nn.Module, labels: LabelSet, weight: torch.Tensor, bias: torch.Tensor) -> torch.nn.Module:
    """A copy of `model` whose classifier is (weight, bias) over `labels`, config labels to match."""
    if weight.shape[0] != len(labels) or bias.shape != (len(labels),):
        raise ClassifrError(f"head has {weight.shape[0]} rows for {len(labels)} labels")
    model = copy.deepcopy(model)
    head = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    _set_head(model, head)
    _set_labels(model.config, labels)
    return model


def _set_head(model: torch.nn.Module, head: torch.nn.Linear) -> None:
    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None:
        timm_model.reset_classifier(head.out_features)  # timm knows where its head lives
        old = timm_model.get_classifier()
        with torch.no_grad():
            old.weight.copy_(head.weight)
            old.bias.copy_(head.bias)
        return
    classifier_head(model)  # checks there is a linear .classifier to replace
    model.classifier = head


def _set_labels(config, labels: LabelSet) -> None:
    config.id2label = labels.id2label
    config.label2id = labels.label2id
    config.num_labels = len(labels)
    if hasattr(config, "label_names"):  # TimmWrapperConfig saves label_names, not id2label
        config.label_names = list(labels.names)
        config.num_classes = len(labels)
