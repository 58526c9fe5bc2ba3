"""Feedback from the server's own records: a confirmation or correction names a logged prediction,
and what the model said comes from the prediction log, never from the client (docs/api.md, "Feedback").

On a tiny random ViT (labels cat, dog, bird) and real clothing photos: each forged or malformed
payload is refused with one line and stores nothing; genuine ids store the log's values; answers
without an id are predicted now with origin "feedback"; a different second answer for the same
photo is kept as a conflict.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.conftest import MAINTAINER_PASSWORD

from classifr.app.project import open_service
from classifr.core.config import Settings
from classifr.core.errors import ClassifrError, FeedbackError

PASSWORD = MAINTAINER_PASSWORD


@pytest.fixture
def service(maintained_service):
    return maintained_service


@pytest.fixture
def photos(clothing_dir):
    return sorted((clothing_dir / "test" / "hat").glob("*.jpg"))[:3]


def _rows(service) -> list[dict]:
    path = service.dataset.metadata_path
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _logged(service, prediction_id: str) -> dict:
    service.flush_prediction_log()
    return service.prediction_log.prediction(prediction_id)


def _sources(service) -> dict[str, str]:
    service.flush_prediction_log()
    with sqlite3.connect(service.settings.prediction_log_path) as conn:
        return dict(conn.execute("SELECT id, source FROM predictions"))


def _forged(payload: dict, **changes) -> dict:
    return {**payload, **changes}


FORGERIES = {
    "a made-up version": (lambda p: _forged(p, version="v999"), "was made by v1, not 'v999'"),
    "made-up scores": (
        lambda p: _forged(p, predictions=[{**e, "score": 0.999} for e in p["predictions"]]),
        "labels and scores sent do not match the server's record",
    ),
    "a made-up label list": (
        lambda p: _forged(p, predictions=[{"label": "sandal", "score": 1.0}]),
        "labels and scores sent do not match the server's record",
    ),
    "a made-up id": (lambda p: _forged(p, id="0123456789abcdef0123456789abcdef"), "unknown or expired prediction id"),
    "a list instead of an object": (lambda p: [p], "must be a predict result (an object) or its id, got a list"),
    "an id of the wrong shape": (lambda p: _forged(p, id="../../etc/passwd"), "a prediction id is 32 hex digits"),
    "a numeric id": (lambda p: 12345, "must be a predict result (an object) or its id, got a number"),
    "no id but forged values": (lambda p: {"version": "v999", "predictions": p["predictions"]}, "has no 'id'"),
    "an unexpected field": (lambda p: _forged(p, model_version="v999"), "unexpected field 'model_version'"),
    "a huge version string": (lambda p: _forged(p, version="v" * 100_000), "must be text of 1 to 200 characters"),
    "a score that is text": (
        lambda p: _forged(p, predictions=[{"label": "cat", "score": "1"}]), "a score must be a number, got '1'"
    ),
    "a failed prediction": (lambda p: {"image": "x.jpg", "error": "boom"}, "that prediction failed"),
}


@pytest.mark.parametrize("forgery", FORGERIES, ids=list(FORGERIES))
def test_a_forged_or_malformed_prediction_is_refused_with_one_line_and_nothing_stored(service, photos, forgery):
    make, message = FORGERIES[forgery]
    genuine = service.predict(photos[0], origin="ui").to_json()
    with pytest.raises(FeedbackError, match="^.*" + _escaped(message)) as caught:
        service.record_feedback(photos[0], "sandal", prediction=make(genuine), contributor="mallory")
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200
    assert _rows(service) == []
    assert _logged(service, genuine["id"])["feedback"] is None


def _escaped(text: str) -> str:
    import re

    return re.escape(text)


def test_another_users_prediction_id_with_a_different_photo_is_refused(service, photos):
    theirs = service.predict(photos[0], origin="ui").to_json()
    with pytest.raises(FeedbackError, match=f"this photo is not the one prediction {theirs['id'][:8]} was made for"):
        service.record_feedback(photos[1], "sandal", prediction={"id": theirs["id"]})
    assert _rows(service) == [] and _logged(service, theirs["id"])["feedback"] is None


def test_a_missing_photo_or_a_label_that_is_not_text_is_refused(service, photos, tmp_path):
    genuine = service.predict(photos[0], origin="ui").to_json()
    with pytest.raises(ClassifrError, match="missing.jpg"):
        service.record_feedback(tmp_path / "missing.jpg", "sandal", prediction=genuine)
    with pytest.raises(FeedbackError, match="the label must be text, got list"):
        service.record_feedback(photos[0], ["sandal"], prediction=genuine)
    assert _rows(service) == []


def test_a_genuine_id_stores_what_the_log_recorded(service, photos):
    shown = service.predict(photos[0], origin="ui")
    logged = _logged(service, shown.id)
    result = service.record_feedback(photos[0], "sandal", prediction=shown.id, contributor="ada")  # the id alone
    [row] = _rows(service)
    assert result.status == "added" and row["source"] == "correction" and row["label"] == "sandal"
    assert (row["model_version"], row["predicted_label"], row["score"]) == (logged["version"], logged["label"], logged["score"])
    after = _logged(service, shown.id)
    assert (after["feedback"], after["true_label"]) == ("corrected", "sandal")


def test_a_confirmation_stores_the_logged_top_label_whatever_the_client_says(service, photos):
    shown = service.predict(photos[0], origin="ui").to_json()
    result = service.record_feedback(photos[0], None, prediction=shown)  # the whole payload, unchanged
    [row] = _rows(service)
    assert row["source"] == "confirmation" and row["label"] == row["predicted_label"] == shown["predictions"][0]["label"]
    assert result.label == row["label"] and _logged(service, shown["id"])["feedback"] == "confirmed"


def test_without_an_id_the_model_predicts_now_with_origin_feedback(service, photos):
    before = _sources(service)
    result = service.record_feedback(photos[0], "sandal")
    new = {pid: source for pid, source in _sources(service).items() if pid not in before}
    [(prediction_id, source)] = new.items()
    assert source == "feedback" and result.status == "added"
    logged = _logged(service, prediction_id)
    [row] = _rows(service)
    assert (row["model_version"], row["predicted_label"]) == (logged["version"], logged["label"])
    assert (logged["feedback"], logged["true_label"]) == ("corrected", "sandal")
    assert service.monitor_summary()["by_version"]["v1"]["by_source"]["feedback"] == 1


def test_with_the_log_off_the_model_predicts_now_and_the_id_is_not_trusted(tmp_path, tiny_default_version, photos):
    settings = Settings(home=tmp_path / "home", num_threads=1, backend="torch", prediction_log=False)
    service = open_service(settings, default_version=tiny_default_version)
    try:
        shown = service.predict(photos[0]).to_json()
        forged = {**shown, "version": "v999", "predictions": [{"label": "cat", "score": 1.0}]}
        service.record_feedback(photos[0], "sandal", prediction=forged)
        [row] = _rows(service)
        assert row["model_version"] == "v1" and row["predicted_label"] == shown["predictions"][0]["label"]
        assert row["score"] == pytest.approx(shown["predictions"][0]["score"])
        with pytest.raises(FeedbackError, match="32 hex digits"):
            service.record_feedback(photos[0], "sandal", prediction="not-an-id")
    finally:
        service.close()


def test_a_different_second_answer_for_the_same_photo_is_kept_as_a_conflict(service, photos):
    first = service.predict(photos[0], origin="ui")
    second = service.predict(photos[0], origin="ui")  # another user, the same photo
    service.record_feedback(photos[0], "sandal", prediction=first.id)
    service.record_feedback(photos[0], "beanie", prediction=second.id)
    service.record_feedback(photos[0], "clog", prediction=first.id)  # the first user changes their mind
    assert _logged(service, first.id)["true_label"] == "sandal"  # the first answer stays
    assert _logged(service, second.id)["true_label"] == "beanie"
    with pytest.raises(ClassifrError, match="maintainers only"):
        service.feedback_conflicts(grant=None)
    conflicts = service.feedback_conflicts(grant=service.maintainer_grant(PASSWORD))
    assert [(c["prediction_id"], c["kept_label"], c["label"]) for c in conflicts] == [
        (first.id, "sandal", "clog"), (second.id, "sandal", "beanie"),
    ]
    assert conflicts[0]["version"] == "v1" and conflicts[0]["predicted"] == first.predictions[0].label
    # The dataset keeps the same photo with each label as its own conflict: the two agree.
    [dataset_conflict] = service.dataset.conflicts()
    assert dataset_conflict["labels"] == ["sandal", "beanie", "clog"]
    assert {c["image_sha256"] for c in conflicts} == {_logged(service, first.id)["image_sha256"]}


def test_the_same_answer_twice_is_not_a_conflict(service, photos):
    first = service.predict(photos[0], origin="ui")
    second = service.predict(photos[0], origin="ui")
    service.record_feedback(photos[0], "sandal", prediction=first.id)
    again = service.record_feedback(photos[0], "Sandal", prediction=second.id)
    service.record_feedback(photos[0], "sandal", prediction=first.id)
    assert again.status == "duplicate" and service.feedback_conflicts(grant=service.maintainer_grant(PASSWORD)) == []
    assert service.dataset.conflicts() == [] and len(_rows(service)) == 1


def test_a_review_takes_the_photo_and_the_prediction_from_the_log_for_maintainers_only(service, photos):
    shown = service.predict(photos[1], origin="ui")
    logged = _logged(service, shown.id)
    with pytest.raises(ClassifrError, match="maintainers only"):
        service.review_feedback(shown.id, "sandal", grant=None)
    assert _rows(service) == []
    grant = service.maintainer_grant(PASSWORD)
    result = service.review_feedback(shown.id, "sandal", grant=grant, contributor="ada")
    [row] = _rows(service)
    assert result.status == "added" and row["source"] == "correction"
    assert (row["model_version"], row["predicted_label"], row["score"]) == (logged["version"], logged["label"], logged["score"])
    for bad, message in (([shown.id], "32 hex digits"), ("f" * 32, "unknown or expired prediction id")):
        with pytest.raises(FeedbackError, match=message):
            service.review_feedback(bad, "sandal", grant=grant)
    assert len(_rows(service)) == 1


def test_an_old_log_file_gains_the_conflicts_table(tmp_path):
    from classifr.monitoring.log import PredictionLog

    path = tmp_path / "predictions.sqlite"
    with PredictionLog(path) as log:
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE feedback_conflicts")  # as a log written before the table existed
    with PredictionLog(path) as log:
        assert log.feedback_conflicts() == []
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM feedback_conflicts").fetchone() == (0,)


def test_an_unknown_origin_is_refused_before_predicting(service, photos):
    with pytest.raises(ValueError, match="origin must be one of ui, api, cli, feedback, got 'web'"):
        service.predict_batch([photos[0]], origin="web")


def test_the_ui_callback_refuses_a_missing_photo_and_confirms_the_logged_label(service, photos):
    from classifr.ui.feedback import CONFIRM, CORRECT, ProjectDatasetCallback

    callback = ProjectDatasetCallback(service)
    shown = service.predict(photos[0], origin="ui").to_json()
    with pytest.raises(ClassifrError, match="there is no image to store"):
        callback.flag([None, shown, "sandal"], flag_option=CORRECT)
    with pytest.raises(ClassifrError, match="there is no image to store"):
        callback.flag([["a.jpg"], shown, "sandal"], flag_option=CORRECT)
    assert _rows(service) == []
    # A confirmation whose payload claims another top label is refused, not stored under that label.
    claimed = {**shown, "predictions": [{"label": "bird", "score": 1.0}]}
    with pytest.raises(FeedbackError, match="do not match the server's record"):
        callback.flag([str(photos[0]), claimed, None], flag_option=CONFIRM)
    assert callback.flag([str(photos[0]), shown, None], flag_option=CONFIRM) == 1
    assert _rows(service)[0]["label"] == shown["predictions"][0]["label"]
