"""The Classify tab's wording and the "Is this right?" row, without a browser (docs/features.md)."""

from __future__ import annotations

import pytest

from classifr.app.project import open_service
from classifr.core.config import Settings


@pytest.fixture
def service(tmp_path, tiny_default_version):
    settings = Settings(home=tmp_path / "home", num_threads=1, backend="torch", guess_below=0.5)
    service = open_service(settings, default_version=tiny_default_version)
    yield service
    service.close()


def _payload(label: str, score: float) -> dict:
    return {"version": "v1", "id": "0" * 32, "predictions": [{"label": label, "score": score}]}


def test_a_low_score_is_shown_as_a_guess_and_a_high_one_as_the_answer():
    from classifr.app.service import PredictionResult
    from classifr.inference.classifier import Prediction
    from classifr.ui.classify import _status

    def result(score):
        return PredictionResult(image="a.jpg", version="v2", predictions=(Prediction(label="hat", score=score),))

    assert _status(result(0.06), 0.5) == "Not sure — maybe *hat* (6.0%) · model version `v2`"
    assert _status(result(0.93), 0.5) == "**hat** (93.0%) · model version `v2`"
    assert _status(result(0.06), 0.0).startswith("**hat**")  # CLASSIFR_GUESS_BELOW=0: always an answer


def test_a_confident_prediction_is_selected_with_confirm_as_the_main_action(service):
    from classifr.data.dataset import NEW_CATEGORY
    from classifr.ui.feedback import choices_after

    label, confirm, correct, create = choices_after(service, _payload("dog", 0.9))
    assert label["value"] == "dog" and label["choices"][0] == NEW_CATEGORY
    assert confirm["variant"] == "primary" and confirm["interactive"] and confirm["value"] == "Confirm: it is dog"
    assert correct["variant"] == "secondary" and create["visible"] is False


def test_a_guess_selects_nothing_and_makes_correct_the_main_action(service):
    from classifr.ui.feedback import choices_after

    label, confirm, correct, _ = choices_after(service, _payload("dog", 0.06))
    assert label["value"] is None
    assert confirm["variant"] == "secondary" and confirm["value"] == "Yes, it is dog"
    assert correct["variant"] == "primary"
    # A payload that is not a predict result (it comes back from the browser) offers nothing to confirm.
    assert choices_after(service, ["forged"])[1]["interactive"] is False


def test_the_choices_include_categories_created_since_start(service):
    from classifr.ui.feedback import choices_after

    service.create_category("cowboy hat")
    label, *_ = choices_after(service, _payload("dog", 0.9))
    assert "cowboy hat" in label["choices"]


def test_the_question_before_a_new_category_names_near_duplicates(service):
    from classifr.ui.feedback import new_label_question

    service.create_category("cowboy hat")
    text = new_label_question(service.check_new_label("hats"))
    assert text.startswith("**Create the new category *hats*?**") and "Nothing is stored" in text
    assert "Similar labels already exist: *cowboy hat*" in text
    assert "Similar" not in new_label_question(service.check_new_label("fish"))


def test_the_classify_tab_has_no_classify_button_and_predicts_on_upload(service):
    from classifr.ui.app import build_app

    demo = build_app(service)
    ids = {block.elem_id for block in demo.blocks.values() if getattr(block, "elem_id", None)}
    assert "classify-button" not in ids
    assert {"classify-image", "feedback-create", "feedback-correct", "feedback-confirm"} <= ids
    predict = next(fn for fn in demo.fns.values() if fn.api_name == "predict")
    assert [(demo.blocks[t[0]].elem_id, t[1]) for t in predict.targets] == [("classify-image", "upload")]
