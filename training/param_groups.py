"""The backbone's layers in depth order, for discriminative learning rates and a frozen bottom.

Fine-tuning a pretrained network on a small dataset works best when the layers near the input, which
hold generic edges and textures, move least (docs/retraining.md, "The full strategy"). This module
splits a model's parameters into depth groups, input first:

- timm backbones (`TimmWrapperForImageClassification`): timm's own `group_matcher(coarse=True)`
  (EfficientNet: the stem, each of the 7 stages, the last conv);
- Transformers ViT: the embeddings, each encoder layer, the final norm;
- Transformers ConvNeXt: the embeddings, each stage, the final norm;
- anything else: the whole backbone as one group.

The classifier head is never part of a depth group: it has its own learning rate.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import torch

from training.embeddings import classifier_head

logger = logging.getLogger(__name__)

# name pattern -> group index from the number it captures (+1, after the embeddings at 0)
_TRANSFORMERS_LAYERS = (
    re.compile(r"\.(?:encoder\.)?stages\.(\d+)\."),  # ConvNeXt, ConvNeXtV2 (first: a stage holds `layers.N`)
    re.compile(r"\.(?:encoder\.)?layers?\.(\d+)\."),  # ViT, DeiT, BEiT (`vit.layers.3.` in Transformers 5)
)
_TRANSFORMERS_EMBEDDINGS = re.compile(r"\.embeddings\.")


def depth_groups(model: torch.nn.Module) -> list[list[torch.nn.Parameter]]:
    """The backbone's parameters (head excluded) in groups from the input to the output."""
    head = {id(p) for p in classifier_head(model).parameters()}
    named = [(name, p) for name, p in model.named_parameters() if id(p) not in head]
    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None and hasattr(timm_model, "group_matcher"):
        indices = _timm_indices(timm_model, prefix="timm_model.")
    else:
        indices = dict(_transformers_indices(name for name, _ in named))
    if not indices:
        logger.info("no known layer layout for %s: the backbone is one depth group", type(model).__name__)
        return [[p for _, p in named]] if named else []
    by_index: dict[int, list[torch.nn.Parameter]] = {}
    last = max(indices.values()) + 1  # parameters after the last numbered layer (final norms)
    for name, parameter in named:
        by_index.setdefault(indices.get(name, last), []).append(parameter)
    return [by_index[index] for index in sorted(by_index)]


def _timm_indices(timm_model: torch.nn.Module, *, prefix: str) -> dict[str, int]:
    from timm.models import group_parameters

    groups = group_parameters(timm_model, timm_model.group_matcher(coarse=True))
    return {prefix + name: int(index) for index, names in groups.items() for name in names}


def _transformers_indices(names: Iterator[str]) -> Iterator[tuple[str, int]]:
    for name in names:
        for pattern in _TRANSFORMERS_LAYERS:
            match = pattern.search(name)
            if match:
                yield name, int(match.group(1)) + 1
                break
        else:
            if _TRANSFORMERS_EMBEDDINGS.search(name):
                yield name, 0


def frozen_count(groups: int, fraction: float) -> int:
    """How many of the lowest `groups` stay frozen; at least the top one always trains."""
    return min(int(groups * fraction), max(groups - 1, 0))
