"""Teaching through ClassifrService with the real default model: confirm, correct, add, categories."""

from __future__ import annotations

import json

import pytest

from classifr.core.config import Settings
from classifr.core.errors import ClassifrError
from classifr.core.images import metadata_free_encoding, read_image
from classifr.app.project import open_service
from classifr.app.feedback import parse_claim
from classifr.app.service import ClassifrService

pytestmark = pytest.mark.slow


@pytest.fixture
def service(fresh_home) -> ClassifrService:
    return open_service(Settings.from_env({"CLASSIFR_HOME": str(fresh_home)}))


def _rows(service):
    return [json.loads(line) for line in service.dataset.metadata_path.read_text().splitlines()]


def test_confirming_the_top_label_is_a_confirmation_with_what_the_model_said(service, sandal_photo):
    prediction = service.predict(sandal_photo).to_json()
    result = service.record_feedback(sandal_photo, "Sandal", prediction=prediction, contributor="ada")
    [row] = _rows(service)
    assert result.status == "added" and row["label"] == "sandal" and row["source"] == "confirmation"
    assert row["predicted_label"] == "sandal" and row["model_version"] == "v1"
    assert row["score"] == pytest.approx(prediction["predictions"][0]["score"]) and row["contributor"] == "ada"
    assert (service.dataset.root / row["file_name"]).read_bytes() == metadata_free_encoding(read_image(sandal_photo))[0]


def test_a_correction_to_a_new_category_creates_it_pending(service, sandal_photo):
    result = service.record_feedback(sandal_photo, "flip-flop")  # no prediction given: the model predicts now
    [row] = _rows(service)
    assert result.status == "added" and row["source"] == "correction"
    assert (row["label"], row["predicted_label"], row["model_version"]) == ("flip-flop", "sandal", "v1")
    assert service.label_choices()[0] == "flip-flop"  # the project's categories come first
    [category] = service.dataset.categories(service.known_labels())
    assert category.name == "flip-flop" and category.pending


def test_uploads_go_in_with_a_result_per_file(service, clothing_dir, tmp_path):
    photos = sorted((clothing_dir / "validation" / "hat").glob("*.jpg"))[:3]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    seen = []
    results = service.add_examples([*photos, broken, photos[0]], "hat", contributor="bo", on_result=seen.append)
    assert [r.status for r in results] == ["added", "added", "added", "rejected", "duplicate"]
    assert "broken.png" in results[3].reason and seen == results
    assert service.dataset_stats()["by_label"] == {"hat": 3}


@pytest.mark.parametrize(
    "payload",
    [[], {"predictions": []}, {"version": "v1", "predictions": [{"label": "x", "score": 0.5}]},
     {"id": "a" * 32, "version": "v1", "predictions": [{"label": "x"}]},
     {"id": "a" * 32, "version": "v1", "predictions": [{"label": "x", "score": float("nan")}]}, "nonsense"],
)
def test_a_malformed_prediction_is_refused(payload):
    with pytest.raises(ClassifrError):
        parse_claim(payload)


def test_with_a_dataset_repo_every_correction_reaches_the_hub(fresh_home, sandal_photo):
    """CLASSIFR_DATASET_REPO set: the service syncs through the injected client; close() pushes."""
    from tests.fake_hub import FakeHfApi

    hub = FakeHfApi()
    settings = Settings.from_env(
        {"CLASSIFR_HOME": str(fresh_home), "CLASSIFR_DATASET_REPO": "team/classifr-data", "HF_TOKEN": "hf_x"}
    )
    service = open_service(settings, hf_api=hub)
    try:
        result = service.record_feedback(sandal_photo, "flip-flop", contributor="ada")
    finally:
        service.close()
        hub.close()
    files = hub.files_at("team/classifr-data", "main", repo_type="dataset")
    [row] = [json.loads(line) for line in files["metadata.jsonl"].decode().splitlines()]
    assert row["label"] == "flip-flop" and row["source"] == "correction"
    assert files[row["file_name"]] == metadata_free_encoding(read_image(sandal_photo))[0] and result.sha256 in row["file_name"]
    assert "flip-flop" in files["README.md"].decode() and ".lock" not in files


def test_the_teach_tab_reports_the_sync(fresh_home):
    """The maintainer's line in the Teach tab: local only, or the repo and the last failure."""
    from classifr.ui.teach import sync_status
    from tests.fake_hub import FakeHfApi

    local = open_service(Settings.from_env({"CLASSIFR_HOME": str(fresh_home)}))
    assert "kept locally" in sync_status(local)
    hub = FakeHfApi()

    def refuse(**_):
        raise OSError("quota exceeded")

    settings = Settings.from_env(
        {"CLASSIFR_HOME": str(fresh_home), "CLASSIFR_DATASET_REPO": "team/data", "HF_TOKEN": "hf_x"}
    )
    service = open_service(settings, hf_api=hub)
    try:
        hub.before["create_commit"] = refuse
        service.dataset.create_category("beanie")
        with pytest.raises(ClassifrError):
            service.sync.push_now()
        line = sync_status(service)
        assert "team/data" in line and "Last push failed" in line and "quota exceeded" in line
    finally:
        service.close()
        hub.close()
