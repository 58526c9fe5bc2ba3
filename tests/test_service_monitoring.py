"""The service feeds the prediction log and the Prometheus metrics, and serves the canary, on the real
default model and real photos; the review queue and settling conflicts on a tiny random model."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import MAINTAINER_PASSWORD

from classifr.core.config import Settings
from classifr.core.errors import ClassifrError
from classifr.app.project import open_service
from classifr.app.service import ClassifrService


def _photos(clothing_dir: Path, n: int) -> list[Path]:
    return sorted((clothing_dir / "test").rglob("*.jpg"))[:n]


def _publish_copy_of_v1(service: ClassifrService) -> str:
    """A second version: v1's files under a new number, as a training run would publish it."""
    source = service.registry.local_path("v1")

    def write(folder: Path) -> None:
        for item in source.iterdir():
            if item.is_file() and item.name != "classifr_version.json":
                shutil.copy2(item, folder / item.name)

    return service.registry.publish(write, parent="v1", metadata={"strategy": "head"}, aliases=["candidate"]).version


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_every_prediction_is_logged_with_its_embedding_and_image(fresh_home, clothing_dir):
    service = open_service(Settings(home=fresh_home, num_threads=2))
    try:
        photos = _photos(clothing_dir, 5)
        results = service.predict_batch([*photos, fresh_home / "missing.jpg"], origin="api")
        assert [r.ok for r in results] == [True] * 5 + [False]
        assert service.prediction_log.flush()
        summary = service.prediction_log.summary()
        assert summary["total"] == 5
        row = summary["by_version"]["v1"]
        assert row["predictions"] == 5 and row["by_source"]["api"] == 5 and row["by_variant"]["production"] == 5
        ids, embeddings = service.prediction_log.embeddings()
        assert set(ids) == {r.id for r in results[:5]}
        assert embeddings.shape == (5, 1280)  # EfficientNet-Lite0's pooled features
        logged = service.prediction_log.prediction(results[0].id)
        assert logged["label"] == results[0].predictions[0].label
        assert logged["image_sha256"] == __import__("hashlib").sha256(photos[0].read_bytes()).hexdigest()
        assert service.prediction_log.image(results[0].id)[:2] == b"\xff\xd8"  # a JPEG copy is kept
        metrics = service.metrics.render().decode()
        assert 'classifr_prediction_requests_total{source="api",status="ok"} 5.0' in metrics
        assert 'classifr_prediction_requests_total{source="api",status="error"} 1.0' in metrics
        assert 'classifr_serving_version{variant="production",version="v1"} 1.0' in metrics
    finally:
        service.close()


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_the_logged_embedding_is_the_one_training_computes(fresh_home, sandal_photo, default_classifier):
    from classifr.core.images import read_image

    service = open_service(Settings(home=fresh_home, num_threads=2))
    try:
        result = service.predict(sandal_photo)
        service.prediction_log.flush()
        _, logged = service.prediction_log.embeddings()
        image = read_image(sandal_photo, min_side=default_classifier.min_side).image
        features, _ = default_classifier.features_and_logits([image])
        assert result.predictions[0].label == "sandal"
        assert abs(logged[0] - features[0].numpy()).max() < 1e-2  # float16 storage
    finally:
        service.close()


@pytest.mark.slow  # the real default model
def test_corrections_and_confirmations_reach_the_logged_prediction(fresh_home, clothing_dir):
    service = open_service(Settings(home=fresh_home, num_threads=2))
    try:
        first, second = service.predict_batch(_photos(clothing_dir, 2), origin="ui")
        service.record_feedback(_photos(clothing_dir, 1)[0], "hat", prediction=first.to_json())
        # The id alone names the prediction too (docs/api.md, "Feedback").
        service.record_feedback(_photos(clothing_dir, 2)[1], second.predictions[0].label, prediction=second.id)
        service.prediction_log.flush()
        corrected = service.prediction_log.gallery("corrected")
        confirmed = service.prediction_log.gallery("confirmed")
        assert [(r["id"], r["true_label"]) for r in corrected] == [(first.id, "hat")]
        assert [r["id"] for r in confirmed] == [second.id]
        assert service.prediction_log.summary()["by_version"]["v1"]["accuracy_on_feedback"] == 0.5
        assert 'classifr_feedback_total{kind="corrected"} 1.0' in service.metrics.render().decode()
    finally:
        service.close()


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_the_canary_serves_its_share_with_the_candidate_and_promoting_reuses_it(own_home, clothing_dir):
    service = open_service(Settings(home=own_home, num_threads=2))
    try:
        candidate = _publish_copy_of_v1(service)
        service.set_canary_share(1.0)
        assert service.candidate_version == candidate
        results = service.predict_batch(_photos(clothing_dir, 4))
        assert {(r.version, r.variant) for r in results} == {(candidate, "candidate")}
        service.set_canary_share(0.5)
        service._draw.seed(7)  # a fixed draw: both variants appear in 40 images
        variants = [r.variant for r in service.predict_batch(_photos(clothing_dir, 40))]
        assert 5 < variants.count("candidate") < 35 and "production" in variants
        loaded = service._candidate
        service.promote("candidate")
        assert service.serving_version == candidate and service.classifier is loaded  # no second load
        assert service.candidate_version is None  # candidate == production: no canary left
        service.prediction_log.flush()
        by_version = service.prediction_log.summary()["by_version"]
        assert by_version[candidate]["by_variant"]["candidate"] == 4 + variants.count("candidate")
    finally:
        service.close()


@pytest.mark.slow  # the real default model
def test_a_bad_canary_share_is_refused(fresh_home):
    service = open_service(Settings(home=fresh_home, num_threads=2))
    try:
        for bad in (-0.1, 1.5, float("nan"), "half"):
            with pytest.raises(ClassifrError, match="between 0 and 1"):
                service.set_canary_share(bad)
        assert service.canary_share == 0.0
    finally:
        service.close()


@pytest.mark.slow  # the real default model
def test_the_log_can_be_switched_off(fresh_home, sandal_photo):
    service = open_service(replace(Settings(home=fresh_home, num_threads=2), prediction_log=False))
    try:
        assert service.predict(sandal_photo).predictions[0].label == "sandal"
        assert service.prediction_log is None
        assert not (fresh_home / "monitoring").exists()
    finally:
        service.close()


@pytest.mark.slow  # the real default model
def test_images_are_not_kept_when_image_storage_is_off(fresh_home, sandal_photo):
    service = open_service(replace(Settings(home=fresh_home, num_threads=2), store_images=False))
    try:
        result = service.predict(sandal_photo)
        service.prediction_log.flush()
        assert service.prediction_log.prediction(result.id) is not None
        assert service.prediction_log.image(result.id) is None
    finally:
        service.close()


# --- the review queue and conflicts on a tiny model (fast) --------------------------------------

PASSWORD = MAINTAINER_PASSWORD


@pytest.fixture
def tiny_service(maintained_service):
    return maintained_service


def test_one_photo_predicted_three_times_is_one_review_item(tiny_service, clothing_dir):
    same, other = sorted((clothing_dir / "test" / "hat").glob("*.jpg"))[:2]
    results = [tiny_service.predict(same) for _ in range(3)] + [tiny_service.predict(other)]
    assert tiny_service.flush_prediction_log()
    grant = tiny_service.maintainer_grant(PASSWORD)
    # The tiny random model is unsure of everything (3 labels, about a third each): all low confidence.
    queue = tiny_service.review_queue(grant=grant)
    assert len(queue) == 2 and len({item["image_sha256"] for item in queue}) == 2
    assert results[2].id in {item["id"] for item in queue}  # the photo's newest prediction stands for it
    assert not {results[0].id, results[1].id} & {item["id"] for item in queue}


def test_a_maintainer_settles_a_conflict_for_the_dataset_and_for_training(tiny_service, clothing_dir):
    from classifr.app.access import NotAMaintainerError
    from classifr.data.dataset import ProjectDataset, SettlementError
    from training.data import collect

    photo, *others = sorted((clothing_dir / "test" / "dress").glob("*.jpg"))[:7]
    result = tiny_service.predict(photo)
    assert tiny_service.record_feedback(photo, "skirt", prediction=result.id).status == "added"
    assert tiny_service.record_feedback(photo, "dress", prediction=result.id).conflicts == ("skirt",)
    tiny_service.add_examples(others, "dress")
    grant = tiny_service.maintainer_grant(PASSWORD)
    [conflict] = tiny_service.dataset_conflicts(grant=grant)
    assert conflict["labels"] == ["skirt", "dress"] and [a["source"] for a in conflict["answers"]] == ["correction"] * 2
    assert tiny_service.dataset_photo(conflict["sha256"], grant=grant)[:2] == b"\xff\xd8"  # the stored JPEG
    with pytest.raises(NotAMaintainerError):
        tiny_service.settle_conflict(conflict["sha256"], "dress", grant=None)
    with pytest.raises(SettlementError, match="'hat' is not one of the labels"):
        tiny_service.settle_conflict(conflict["sha256"], "hat", grant=grant)
    # Training leaves the photo out while it is in conflict.
    assert conflict["sha256"] not in {s.sha256 for s in (*collect([("project", tiny_service.dataset)]).train,
                                                        *collect([("project", tiny_service.dataset)]).test)}

    assert tiny_service.settle_conflict(conflict["sha256"], "Dress", grant=grant, contributor="ada") == "dress"

    reopened = ProjectDataset(tiny_service.dataset.root)  # durable: the settlement is a row on disk
    for dataset in (tiny_service.dataset, reopened):
        assert dataset.conflicts() == [] and tiny_service.dataset_conflicts(grant=grant) == []
        settlement = dataset.rows()[-1]
        assert (settlement.source, settlement.label, settlement.contributor) == ("settlement", "dress", "ada")
        assert {r.label for r in dataset.effective_rows() if r.sha256 == conflict["sha256"]} == {"dress"}
        assert [r.label for r in dataset.rows() if r.sha256 == conflict["sha256"]] == ["skirt", "dress", "dress"]
        counts = {c.name: c.total for c in dataset.categories()}
        photos_of = {label: {r.sha256 for r in dataset.effective_rows() if r.label == label} for label in ("dress", "skirt")}
        # the settled photo counts once, as dress: not twice (its answer and the settlement), not as skirt
        assert (counts.get("dress", 0), counts.get("skirt", 0)) == (len(photos_of["dress"]), len(photos_of["skirt"]))
        data = collect([("project", dataset)])
        [sample] = [s for s in (*data.train, *data.test) if s.sha256 == conflict["sha256"]]
        assert sample.label == "dress" and "skirt" not in data.labels
    with pytest.raises(SettlementError, match="no conflicting labels"):
        tiny_service.settle_conflict(conflict["sha256"], "dress", grant=grant)
    # A later, different answer opens a new conflict on the settled photo.
    assert tiny_service.record_feedback(photo, "coat", prediction=result.id).conflicts == ("dress",)
    assert [c["labels"] for c in tiny_service.dataset.conflicts()] == [["dress", "coat"]]
