"""ClassifrService: the serving path the UI and CLI share, with real and tiny models.

One service on the shared bootstrapped v1 serves the tests that only read; the tests that publish,
promote or bootstrap open their own. v1 is bootstrapped for real once here (an empty home); the Hub
registry test gets a copy of the shared v1 as its default version instead of building another.
"""

from __future__ import annotations

import io
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from classifr.app.bootstrap import DefaultVersion
from classifr.app.project import open_service
from classifr.app.service import ClassifrService
from classifr.core.config import Settings
from classifr.core.errors import InvalidImageError
from classifr.inference.classifier import Classifier


def _settings(home, **overrides) -> Settings:
    # The session's CLASSIFR_ONNX_VERIFY_IMAGES (tests/conftest.py) applies to a v1 built here too.
    env = {"CLASSIFR_HOME": str(home), "CLASSIFR_ONNX_VERIFY_IMAGES": os.environ.get("CLASSIFR_ONNX_VERIFY_IMAGES", "")}
    return replace(Settings.from_env(env), **overrides)


def _service(home, **overrides) -> ClassifrService:
    return open_service(_settings(home, **overrides))


def _copy_version(source: Path, *, onnx: bool = True):
    """A registry writer that copies a version folder's model files (not its registry record)."""

    def write(folder: Path) -> None:
        for path in source.iterdir():
            if path.name != "classifr_version.json" and (onnx or "onnx" not in path.name):
                shutil.copyfile(path, folder / path.name)

    return write


@pytest.fixture(scope="module")
def served(project_home, tmp_path_factory):
    """One service on the shared bootstrapped v1, for the tests that only predict (its own home, so its
    prediction log is not the shared one)."""
    home = tmp_path_factory.mktemp("served-home")
    (home / "registry").symlink_to(project_home / "registry", target_is_directory=True)
    service = _service(home)
    yield service
    service.close()


@pytest.mark.parametrize("fixture", ["tiny_vit_dir", "tiny_convnext_dir"])
def test_any_transformers_checkpoint_serves_through_the_same_path(fixture, request, tmp_path, clothing_dir):
    """CLASSIFR_MODEL names a local checkpoint: labels and preprocessing come from it."""
    folder = request.getfixturevalue(fixture)
    service = _service(tmp_path, model=str(folder), top_k=2)
    photos = sorted((clothing_dir / "test").rglob("*.jpg"))[:3]
    results = service.predict_batch(photos)
    labels = set(Classifier.load(folder, version="x").labels)
    assert [r.ok for r in results] == [True] * 3
    for result in results:
        assert result.version == str(folder)
        assert len(result.predictions) == 2 and {p.label for p in result.predictions} <= labels
        assert 0 < result.predictions[1].score <= result.predictions[0].score <= 1
    assert service.list_versions() == []  # no registry behind a directly served model


def test_hub_id_that_cannot_be_loaded_offline_gives_a_clear_error(tmp_path):
    from classifr.core.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="could not load image classifier from 'nobody/no-such-model'"):
        _service(tmp_path, model="nobody/no-such-model")


@pytest.mark.slow
def test_empty_home_bootstraps_v1_and_serves_it(tmp_path, sandal_photo):
    """The embedded default model is built as v1, its ONNX export checked on CLASSIFR_ONNX_VERIFY_IMAGES photos."""
    from classifr.inference.onnx_export import read_export

    settings = _settings(tmp_path / "home")
    service = open_service(settings)
    assert service.serving_version == "v1"
    [info] = service.list_versions()
    assert info.version == "v1" and info.aliases == ("production",) and info.num_labels == 1000
    assert read_export(service.registry.local_path("v1")).images == settings.onnx_verify_images
    result = service.predict(sandal_photo)
    assert result.version == "v1" and result.predictions[0].label == "sandal"
    assert result.to_json()["predictions"][0] == {"label": "sandal", "score": result.predictions[0].score}


@pytest.mark.slow
def test_batch_equals_single_and_bad_items_do_not_spoil_the_batch(served, clothing_dir):
    service = served
    photos = sorted((clothing_dir / "test").rglob("*.jpg"))[:5]
    single = [service.predict(p) for p in photos]
    mixed = service.predict_batch([photos[0], b"not an image", *photos[1:]], names=[None, "junk.jpg", None, None, None, None])
    assert mixed[1].error is not None and "junk.jpg" in mixed[1].error
    good = [r for r in mixed if r.ok]
    for one, batched in zip(single, good):
        assert [p.label for p in one.predictions] == [p.label for p in batched.predictions]
        assert all(abs(a.score - b.score) < 1e-4 for a, b in zip(one.predictions, batched.predictions))


@pytest.mark.slow
def test_predict_raises_a_readable_error_for_a_bad_image(served, tmp_path):
    service = served
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is text, not a photo")
    with pytest.raises(InvalidImageError) as caught:
        service.predict(bad)
    assert "notes.jpg" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.slow
def test_thread_safe_under_concurrent_callers(served, clothing_dir):
    """16 threads classify 32 photos at once; every answer equals the sequential one."""
    service = served
    photos = sorted((clothing_dir / "test").rglob("*.jpg"))[:32]
    expected = [service.predict(p).predictions[0].label for p in photos]
    with ThreadPoolExecutor(max_workers=16) as pool:
        got = list(pool.map(lambda p: service.predict(p).predictions[0].label, photos))
    assert got == expected


@pytest.mark.slow
def test_promote_and_rollback_switch_what_is_served(own_home, sandal_photo):
    """v2 is v1's weights without its ONNX export (as write_default_version would write it again)."""
    service = _service(own_home)
    v1_dir = service.registry.local_path("v1")
    v2 = service.registry.publish(_copy_version(v1_dir, onnx=False), parent="v1", metadata={"note": "same weights"})
    assert service.promote(v2.version).version == "v2"
    assert service.predict(sandal_photo).version == "v2"
    assert service.rollback().version == "v1"
    assert service.predict(io.BytesIO(sandal_photo.read_bytes())).version == "v1"


def test_top_k_is_validated(tiny_vit_dir, tmp_path):
    service = _service(tmp_path, model=str(tiny_vit_dir))
    with pytest.raises(ValueError, match="top_k must be at least 1, got 0"):
        service.predict(Image.new("RGB", (40, 40)), top_k=0)


@pytest.mark.slow
def test_hub_registry_serves_v1_from_the_hub(tmp_path, project_home, sandal_photo):
    """CLASSIFR_REGISTRY_REPO: v1 (a copy of the bootstrapped default model) is published to the (fake)
    Hub, then served from a pinned download; a second replica finds it and builds nothing."""
    from tests.fake_hub import FakeHfApi

    def build_nothing(folder: Path) -> None:
        raise AssertionError("v1 is on the Hub already: nothing may be built")

    v1_dir = project_home / "registry" / "versions" / "v1"
    default = DefaultVersion(write=_copy_version(v1_dir), metadata={"source": "copy"}, description="a copy of v1")
    hub = FakeHfApi()
    settings = Settings.from_env({"CLASSIFR_HOME": str(tmp_path), "CLASSIFR_REGISTRY_REPO": "team/classifr-models"})
    service = open_service(settings, hf_api=hub, default_version=default)
    assert service.serving_version == "v1" and service.predict(sandal_photo).predictions[0].label == "sandal"
    assert [v.version for v in service.list_versions()] == ["v1"] and service.list_versions()[0].aliases == ("production",)
    assert service.registry.local_path("v1") != v1_dir  # served from the Hub's download, not the source folder
    again = open_service(settings, hf_api=hub, default_version=DefaultVersion(write=build_nothing))
    assert again.serving_version == "v1" and len(again.list_versions()) == 1
