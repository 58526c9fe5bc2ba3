"""Serving through ONNX Runtime: backend choice, parity with PyTorch, and the service on top of it.

v1 is the session's bootstrapped one (tests/conftest.py, project_home), served with the export its
bootstrap made and verified; other checkpoints are exported here with the same exporter
(classifr.inference.onnx_export).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from classifr.app.project import open_local_registry, open_service
from classifr.app.service import ClassifrService
from classifr.core.config import Settings
from classifr.core.errors import ConfigError, ModelLoadError
from classifr.core.images import read_image
from classifr.inference.classifier import Classifier
from classifr.inference.onnx_backend import (
    EXPORT_FILE,
    ONNX_FILE,
    OnnxClassifier,
    load_classifier,
    verified_export,
)
from classifr.inference.onnx_export import export_onnx
from tests.conftest import CLOTHING

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def export_for_tests(folder: Path, *, verified: bool = True, reason: str | None = None) -> Path:
    """Export a checkpoint folder with the real exporter (verified on a few clothing photos); with
    `verified=False`, the record is then marked unverified, as a failed verification leaves it."""
    classifier = Classifier.load(folder, version="export")
    photos = sorted((CLOTHING / "test").rglob("*.jpg"))[:8]
    export = export_onnx(classifier, folder, photos, quantize=False)
    assert export.verified, export.reason
    if not verified:
        record = json.loads((folder / EXPORT_FILE).read_text())
        record.update(verified=False, reason=reason)
        (folder / EXPORT_FILE).write_text(json.dumps(record))
    return folder


def _has_verified_export(folder: Path) -> bool:
    return verified_export(folder)[0] is not None


@pytest.fixture(scope="module")
def onnx_home(project_home) -> Path:
    """A CLASSIFR_HOME whose v1 (the real default model) has a verified ONNX export (read-only)."""
    registry = open_local_registry(project_home / "registry")
    assert _has_verified_export(registry.local_path("v1")), "the bootstrap exports and verifies v1"
    return project_home


@pytest.fixture(scope="module")
def v1_dir(onnx_home) -> Path:
    return onnx_home / "registry" / "versions" / "v1"


@pytest.fixture(scope="module")
def both(v1_dir) -> tuple[Classifier, Classifier]:
    torch_classifier = load_classifier(v1_dir, version="v1", backend="torch", num_threads=2)
    onnx_classifier = load_classifier(v1_dir, version="v1", backend="onnx", num_threads=2)
    return torch_classifier, onnx_classifier


@pytest.fixture(scope="module")
def tiny_exported(tiny_vit_dir, tmp_path_factory) -> Path:
    """The tiny ViT checkpoint with a verified export, exported once for the module (read-only)."""
    folder = tmp_path_factory.mktemp("tiny-vit-export") / "tiny-vit"
    shutil.copytree(tiny_vit_dir, folder)
    return export_for_tests(folder)


@pytest.fixture
def tiny_export(tiny_exported, tmp_path) -> Path:
    """A copy of the tiny ViT checkpoint with a verified export (a Transformers architecture, not timm),
    the test's own to break."""
    return Path(shutil.copytree(tiny_exported, tmp_path / "tiny-vit"))


def _home_on(registry_home: Path, tmp_path: Path) -> Path:
    """A writable CLASSIFR_HOME whose registry is `registry_home`'s (read only)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "registry").symlink_to(registry_home / "registry", target_is_directory=True)
    return home


# --- parity ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_onnx_matches_torch_on_real_clothing_photos(both, clothing_dir):
    """60 real photos of the clothing test split, the first 6 of each of its 10 classes: the same top-1
    on every one, logits within 1e-4 and features within 1e-3. (The same bounds held on all 372
    photos of the split; 60 across every class keep the claim at a sixth of the cost.)"""
    torch_classifier, onnx_classifier = both
    assert (torch_classifier.backend, onnx_classifier.backend) == ("torch", "onnx")
    folders = sorted(p for p in (clothing_dir / "test").iterdir() if p.is_dir())
    photos = [photo for folder in folders for photo in sorted(folder.glob("*.jpg"))[:6]]
    assert len(folders) == 10 and len(photos) == 60
    worst_logit, worst_feature, disagreements = 0.0, 0.0, []
    for start in range(0, len(photos), 32):
        batch = photos[start : start + 32]
        images = [read_image(p, min_side=torch_classifier.min_side).image for p in batch]
        torch_features, torch_logits = torch_classifier.features_and_logits(images)
        onnx_features, onnx_logits = onnx_classifier.features_and_logits(images)
        assert onnx_logits.dtype == torch.float32 and onnx_logits.shape == torch_logits.shape
        assert onnx_features.shape == torch_features.shape == (len(batch), 1280)
        worst_logit = max(worst_logit, float((onnx_logits - torch_logits).abs().max()))
        worst_feature = max(worst_feature, float((onnx_features - torch_features).abs().max()))
        same = onnx_logits.argmax(-1) == torch_logits.argmax(-1)
        disagreements += [str(p) for p, ok in zip(batch, same.tolist()) if not ok]
    assert disagreements == []
    assert worst_logit < 1e-4, worst_logit
    assert worst_feature < 1e-3, worst_feature


@pytest.mark.slow
def test_predictions_and_features_through_the_classifier_api(both, sandal_photo):
    torch_classifier, onnx_classifier = both
    image = read_image(sandal_photo, min_side=onnx_classifier.min_side).image
    rows, features = onnx_classifier.predict_with_features([image, image], top_k=3)
    expected, expected_features = torch_classifier.predict_with_features([image, image], top_k=3)
    assert [p.label for p in rows[0]] == [p.label for p in expected[0]] and rows[0][0].label == "sandal"
    assert rows[0] == rows[1]  # batch of two equals itself
    assert features.dtype == np.float16 and features.shape == (2, 1280)
    np.testing.assert_allclose(features.astype(np.float32), expected_features.astype(np.float32), atol=2e-2)
    for got, want in zip(rows[0], expected[0]):
        assert got.score == pytest.approx(want.score, abs=1e-5)
    assert onnx_classifier.predict([image], top_k=5) == onnx_classifier.predict([image], top_k=5)
    # The session's input is C-contiguous NCHW float32 at the model's input size.
    pixels = onnx_classifier.pixel_array([image, image])
    assert pixels.flags.c_contiguous and pixels.dtype == np.float32 and pixels.shape == (2, 3, 224, 224)


@pytest.mark.slow
def test_many_threads_share_one_session(both, clothing_dir):
    _, onnx_classifier = both
    photos = sorted((clothing_dir / "test").rglob("*.jpg"))[:8]
    images = [read_image(p, min_side=onnx_classifier.min_side).image for p in photos]
    alone = [onnx_classifier.predict([image])[0] for image in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda image: onnx_classifier.predict([image])[0], images * 3))
    assert [r[0].label for r in together] == [r[0].label for r in alone] * 3
    for got, want in zip(together, alone * 3):
        assert got[0].score == pytest.approx(want[0].score, abs=1e-5)


# --- choosing the backend --------------------------------------------------------------------------


def test_auto_and_onnx_serve_a_verified_export_and_torch_ignores_it(tiny_export, caplog):
    with caplog.at_level(logging.INFO, logger="classifr.inference.onnx_backend"):
        auto = load_classifier(tiny_export, version="t", num_threads=1)
    assert isinstance(auto, OnnxClassifier) and auto.backend == "onnx"
    assert "serves through ONNX Runtime" in caplog.text
    assert load_classifier(tiny_export, version="t", backend="onnx", num_threads=1).backend == "onnx"
    forced_torch = load_classifier(tiny_export, version="t", backend="torch", num_threads=1)
    assert type(forced_torch) is Classifier and forced_torch.backend == "torch"
    # The same answers from both (a ViT: the hook-based features work for Transformers heads too).
    image = Image.new("RGB", (40, 50), (200, 30, 90))
    onnx_features, onnx_logits = auto.features_and_logits([image])
    torch_features, torch_logits = forced_torch.features_and_logits([image])
    torch.testing.assert_close(onnx_logits, torch_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(onnx_features, torch_features, atol=1e-4, rtol=0)
    assert auto.model is not None and auto.labels == forced_torch.labels  # PyTorch stays loaded


@pytest.mark.parametrize(
    "break_it, reason",
    [
        (lambda f: _rewrite(f, verified=False, reason="top-1 differs from PyTorch on 3 of 200 images"),
         "not verified: top-1 differs from PyTorch on 3 of 200 images"),
        (lambda f: _rewrite(f, verified=False, reason=None), "not verified: no reason recorded"),
        (lambda f: (f / EXPORT_FILE).unlink(), "onnx_export.json is missing"),
        (lambda f: (f / EXPORT_FILE).write_text('{"verified": tr'), "onnx_export.json cannot be read"),
        (lambda f: (f / EXPORT_FILE).write_text('["verified"]'), "onnx_export.json is malformed"),
        (lambda f: _rewrite(f, verified="yes"), "not verified"),
        (lambda f: (f / ONNX_FILE).unlink(), "verified but model.onnx is missing"),
        (lambda f: (f / ONNX_FILE).write_bytes(b"not a graph"), "ONNX graph does not load"),
        (lambda f: _rewrite(f, outputs=["logits"]), "outputs ['logits']"),
    ],
    ids=["unverified", "unverified-no-reason", "no-json", "corrupt-json", "json-not-object", "verified-not-bool",
         "graph-missing", "graph-corrupt", "no-features-output"],
)
def test_without_a_servable_export_auto_uses_torch_and_onnx_says_why(tiny_export, break_it, reason, caplog):
    break_it(tiny_export)
    with caplog.at_level(logging.INFO, logger="classifr.inference.onnx_backend"):
        auto = load_classifier(tiny_export, version="t", num_threads=1)
    assert type(auto) is Classifier and auto.backend == "torch"
    assert "t serves through PyTorch" in caplog.text and reason in caplog.text
    with pytest.raises(ModelLoadError, match="cannot serve t with ONNX Runtime: .*" + re.escape(reason)):
        load_classifier(tiny_export, version="t", backend="onnx", num_threads=1)


def test_a_stale_graph_with_other_labels_is_never_served(tiny_export, tiny_convnext_dir, tmp_path):
    """A graph whose logits do not match the checkpoint's labels (4 outputs, 3 labels) is refused."""
    other = tmp_path / "convnext"
    shutil.copytree(tiny_convnext_dir, other)
    export_for_tests(other)
    shutil.copyfile(other / ONNX_FILE, tiny_export / ONNX_FILE)
    assert load_classifier(tiny_export, version="t", num_threads=1).backend == "torch"
    with pytest.raises(ModelLoadError, match="has 4 outputs but the model has 3 labels"):
        load_classifier(tiny_export, version="t", backend="onnx", num_threads=1)


def test_a_checkpoint_without_export_or_a_hub_id_is_torch(tiny_vit_dir):
    assert load_classifier(tiny_vit_dir, version="t", num_threads=1).backend == "torch"
    path, _, why = verified_export("owner/some-model")
    assert path is None and "not a local folder" in why
    with pytest.raises(ModelLoadError, match="'owner/some-model' is not a local folder"):
        load_classifier("owner/some-model", version="x", backend="onnx", num_threads=1)


def test_unknown_backend_is_refused(tiny_vit_dir):
    with pytest.raises(ConfigError, match="backend must be one of auto, torch, onnx, got 'tensorrt'"):
        load_classifier(tiny_vit_dir, version="t", backend="tensorrt", num_threads=1)


def _rewrite(folder: Path, **changes) -> None:
    record = json.loads((folder / EXPORT_FILE).read_text())
    (folder / EXPORT_FILE).write_text(json.dumps({**record, **changes}))




# --- settings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, expected", [(None, "auto"), ("", "auto"), ("auto", "auto"), ("torch", "torch"),
                                           ("onnx", "onnx"), (" ONNX ", "onnx")])
def test_backend_setting(raw, expected, tmp_path):
    env = {"CLASSIFR_HOME": str(tmp_path)} | ({} if raw is None else {"CLASSIFR_BACKEND": raw})
    assert Settings.from_env(env).backend == expected


@pytest.mark.parametrize("raw", ["tensorrt", "pytorch", "1"])
def test_bad_backend_setting_is_named(raw, tmp_path):
    with pytest.raises(ConfigError, match=f"CLASSIFR_BACKEND must be one of auto, torch, onnx, got '{raw}'"):
        Settings.from_env({"CLASSIFR_HOME": str(tmp_path), "CLASSIFR_BACKEND": raw})


# --- the service ------------------------------------------------------------------------------------


def _service(home: Path, **env) -> ClassifrService:
    return open_service(Settings.from_env({"CLASSIFR_HOME": str(home), **env}))


@pytest.mark.slow
def test_default_settings_serve_through_onnx_and_explanations_still_work(onnx_home, tmp_path, sandal_photo):
    service = _service(_home_on(onnx_home, tmp_path))
    try:
        assert service.classifier.backend == "onnx" and service.serving_backend == "onnx"
        result = service.predict(sandal_photo)
        assert result.version == "v1" and result.predictions[0].label == "sandal"
        explained = service.explain(sandal_photo)
        assert isinstance(explained.picture, Image.Image) and explained.picture.size == read_image(sandal_photo).original_size
        assert explained.explanation.target == "sandal"  # PyTorch's explanation of the ONNX top-1
    finally:
        service.close()


@pytest.mark.slow
def test_backend_setting_forces_torch_or_refuses_a_version_without_export(onnx_home, tmp_path, tiny_vit_dir):
    service = _service(_home_on(onnx_home, tmp_path), CLASSIFR_BACKEND="torch")
    try:
        assert service.serving_backend == "torch"
    finally:
        service.close()
    with pytest.raises(ModelLoadError, match="onnx_export.json is missing"):
        _service(tmp_path / "other", CLASSIFR_MODEL=str(tiny_vit_dir), CLASSIFR_BACKEND="onnx")


def test_classifr_model_folder_with_an_export_serves_through_onnx(tiny_export, tmp_path):
    service = _service(tmp_path / "home", CLASSIFR_MODEL=str(tiny_export))
    try:
        assert service.serving_backend == "onnx"
        assert service.predict(Image.new("RGB", (64, 48), "teal")).predictions
    finally:
        service.close()


@pytest.mark.slow
def test_promoted_and_canary_versions_load_on_the_configured_backend(v1_dir, own_home):
    """Every place that loads a version (start, canary candidate, promote) goes through the backend choice."""
    home = own_home  # a copy of the bootstrapped registry: v1 is production
    registry = open_local_registry(home / "registry")

    def write(folder: Path) -> None:
        for path in v1_dir.iterdir():
            if path.name not in {"classifr_version.json", "README.md"}:
                shutil.copyfile(path, folder / path.name)
        (folder / "README.md").write_text("# v2\n")

    registry.publish(write, parent="v1", aliases=["candidate"])
    service = _service(home)
    try:
        v1_backend = "onnx" if _has_verified_export(registry.local_path("v1")) else "torch"
        assert (service.serving_version, service.serving_backend) == ("v1", v1_backend)
        service.set_canary_share(0.5)
        assert service.candidate_version == "v2" and service._serving()[1].backend == "onnx"
        service.promote("v2")
        assert (service.serving_version, service.serving_backend) == ("v2", "onnx")
        service.rollback()
        assert (service.serving_version, service.serving_backend) == ("v1", v1_backend)
    finally:
        service.close()
