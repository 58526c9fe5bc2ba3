"""ClassifrService: the serving path the UI and CLI share, with real and tiny models."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from PIL import Image

from classifr.core.config import Settings
from classifr.core.errors import InvalidImageError
from classifr.inference.classifier import Classifier
from classifr.app.service import ClassifrService


def _service(home, **overrides) -> ClassifrService:
    settings = replace(Settings.from_env({"CLASSIFR_HOME": str(home)}), **overrides)
    return ClassifrService.create(settings)


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
    service = _service(tmp_path / "home")
    assert service.serving_version == "v1"
    [info] = service.list_versions()
    assert info.version == "v1" and info.aliases == ("production",) and info.num_labels == 1000
    result = service.predict(sandal_photo)
    assert result.version == "v1" and result.predictions[0].label == "sandal"
    assert result.to_json()["predictions"][0] == {"label": "sandal", "score": result.predictions[0].score}


@pytest.mark.slow
def test_batch_equals_single_and_bad_items_do_not_spoil_the_batch(project_home, clothing_dir):
    service = _service(project_home)
    photos = sorted((clothing_dir / "test").rglob("*.jpg"))[:5]
    single = [service.predict(p) for p in photos]
    mixed = service.predict_batch([photos[0], b"not an image", *photos[1:]], names=[None, "junk.jpg", None, None, None, None])
    assert mixed[1].error is not None and "junk.jpg" in mixed[1].error
    good = [r for r in mixed if r.ok]
    for one, batched in zip(single, good):
        assert [p.label for p in one.predictions] == [p.label for p in batched.predictions]
        assert all(abs(a.score - b.score) < 1e-4 for a, b in zip(one.predictions, batched.predictions))


@pytest.mark.slow
def test_predict_raises_a_readable_error_for_a_bad_image(project_home, tmp_path):
    service = _service(project_home)
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is text, not a photo")
    with pytest.raises(InvalidImageError) as caught:
        service.predict(bad)
    assert "notes.jpg" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.slow
def test_thread_safe_under_concurrent_callers(project_home, clothing_dir):
    """16 threads classify 32 photos at once; every answer equals the sequential one."""
    service = _service(project_home)
    photos = sorted((clothing_dir / "test").rglob("*.jpg"))[:32]
    expected = [service.predict(p).predictions[0].label for p in photos]
    with ThreadPoolExecutor(max_workers=16) as pool:
        got = list(pool.map(lambda p: service.predict(p).predictions[0].label, photos))
    assert got == expected


@pytest.mark.slow
def test_promote_and_rollback_switch_what_is_served(tmp_path, sandal_photo):
    from classifr.app.bootstrap import write_default_version

    service = _service(tmp_path / "home")
    v2 = service.registry.publish(write_default_version, parent="v1", metadata={"note": "same weights"})
    assert service.promote(v2.version).version == "v2"
    assert service.predict(sandal_photo).version == "v2"
    assert service.rollback().version == "v1"
    assert service.predict(io.BytesIO(sandal_photo.read_bytes())).version == "v1"


def test_top_k_is_validated(tiny_vit_dir, tmp_path):
    service = _service(tmp_path, model=str(tiny_vit_dir))
    with pytest.raises(ValueError, match="top_k must be at least 1, got 0"):
        service.predict(Image.new("RGB", (40, 40)), top_k=0)


@pytest.mark.slow
def test_hub_registry_serves_v1_from_the_hub(tmp_path, sandal_photo):
    """CLASSIFR_REGISTRY_REPO: v1 is published to the (fake) Hub, then served from a pinned download."""
    from tests.fake_hub import FakeHfApi

    hub = FakeHfApi()
    settings = Settings.from_env({"CLASSIFR_HOME": str(tmp_path), "CLASSIFR_REGISTRY_REPO": "team/classifr-models"})
    service = ClassifrService.create(settings, hf_api=hub)
    assert service.serving_version == "v1" and service.predict(sandal_photo).predictions[0].label == "sandal"
    assert [v.version for v in service.list_versions()] == ["v1"]
    again = ClassifrService.create(settings, hf_api=hub)  # a second replica finds v1 and builds nothing
    assert again.serving_version == "v1" and len(again.list_versions()) == 1
