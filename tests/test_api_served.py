"""/v1 on the real app (`python app.py`, the real default model), beside the Gradio UI on the same
port: what a program calling it with huggingface_hub or plain HTTP gets (docs/api.md)."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

pytestmark = pytest.mark.slow  # the real app on the real default model


@pytest.fixture
def online_for_localhost(monkeypatch):
    # The tests run with HF_HUB_OFFLINE=1, which makes huggingface_hub refuse every URL, this
    # app's included; nothing here reaches past 127.0.0.1.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)


def test_inference_client_gets_what_the_ui_shows_for_the_same_photo(running_app, sandal_photo, online_for_localhost):
    from gradio_client import Client, handle_file
    from huggingface_hub import InferenceClient

    url = running_app["url"]
    _, shown, _ = Client(url, verbose=False).predict(handle_file(str(sandal_photo)), api_name="/predict")
    answered = InferenceClient(model=f"{url}v1/models/production").image_classification(str(sandal_photo), top_k=3)

    assert [a.label for a in answered] == [p["label"] for p in shown["predictions"][:3]]
    assert [a.score for a in answered] == pytest.approx([p["score"] for p in shown["predictions"][:3]], abs=1e-6)
    assert answered[0].label == "sandal"


def test_a_plain_http_call_is_logged_with_origin_api_and_the_callers_address(running_app, sandal_photo):
    from classifr.monitoring.log import PredictionLog

    request = urllib.request.Request(f"{running_app['url']}v1/models/v1", data=sandal_photo.read_bytes(), method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        labels = json.loads(response.read())
        prediction_id, version = response.headers["X-Prediction-Id"], response.headers["X-Classifr-Version"]
    assert version == "v1" and labels[0]["label"] == "sandal" and len(labels) == 5

    with PredictionLog(running_app["home"] / "monitoring" / "predictions.sqlite") as log:
        record = None
        for _ in range(50):  # the app's writer thread writes within a second
            record = log.prediction(prediction_id)
            if record is not None:
                break
            time.sleep(0.2)
    assert record is not None
    assert (record["source"], record["client"], record["variant"], record["label"]) == ("api", "127.0.0.1", "production", "sandal")


def test_the_v1_schema_and_its_docs_page_are_served(running_app):
    with urllib.request.urlopen(f"{running_app['url']}v1/openapi.json", timeout=10) as response:
        schema = json.loads(response.read())
    assert schema["servers"] == [{"url": "/v1"}] and "/models/{ref}" in schema["paths"]
    with urllib.request.urlopen(f"{running_app['url']}v1/docs", timeout=10) as response:
        assert b"/v1/openapi.json" in response.read()
