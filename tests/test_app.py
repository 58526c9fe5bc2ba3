"""The app's API through gradio_client against a real `python app.py` server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(running_app):
    from gradio_client import Client

    return Client(running_app["url"], verbose=False)


def _predict(client, path):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), api_name="/predict")


def test_cold_start_built_v1_and_serves_it(running_app, client, sandal_photo):
    label, result, status = _predict(client, sandal_photo)
    assert label["label"] == "sandal"
    assert result["version"] == "v1" and result["predictions"][0]["label"] == "sandal"
    assert "sandal" in status and "v1" in status
    assert (running_app["home"] / "registry" / "versions" / "v1" / "config.json").is_file()


def test_health_is_ok_once_the_model_can_predict(running_app, client, sandal_photo):
    import json
    import urllib.request

    _predict(client, sandal_photo)  # the model has loaded once a prediction came back
    with urllib.request.urlopen(running_app["url"] + "health", timeout=10) as response:
        assert response.status == 200
        health = json.loads(response.read())
    assert health.pop("storage")["paused"] is False
    assert health == {"status": "ok", "version": "v1"}


def test_bad_files_get_a_readable_message_and_the_app_keeps_serving(client, tmp_path, sandal_photo):
    """A text file named .jpg and a truncated JPEG, then a good photo again."""
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    truncated = tmp_path / "half.jpg"
    truncated.write_bytes(sandal_photo.read_bytes()[:5000])
    for bad in (text, truncated):
        label, result, status = _predict(client, bad)
        assert label is None or not label.get("confidences")
        assert bad.name in result["error"] and "Could not classify" in status
    assert _predict(client, sandal_photo)[1]["predictions"][0]["label"] == "sandal"


def test_concurrent_callers_each_get_their_own_answer(client, clothing_dir):
    photos = sorted((clothing_dir / "test").rglob("*.jpg"))[:8]
    expected = {p.name: _predict(client, p)[1]["predictions"][0]["label"] for p in photos}
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda p: (p.name, _predict(client, p)[1]), photos))
    for name, result in results:
        assert result["predictions"][0]["label"] == expected[name]


def test_versions_endpoint(client):
    table, versions = client.predict(api_name="/versions")
    assert versions[0]["version"] == "v1" and versions[0]["aliases"] == ["production"]
    assert table["data"][0][0] == "v1"


def test_explain_endpoint_returns_an_overlay(client, sandal_photo):
    from gradio_client import handle_file
    from PIL import Image

    picture, caption = client.predict(handle_file(str(sandal_photo)), "gradcam", "sandal", api_name="/explain")
    assert Image.open(picture).size == Image.open(sandal_photo).size  # under the 1024 px display limit
    assert "sandal" in caption and "v1" in caption


def test_explain_endpoint_names_a_bad_target(client, sandal_photo):
    from gradio_client import handle_file

    with pytest.raises(Exception, match="unknown label 'unicorn'"):
        client.predict(handle_file(str(sandal_photo)), "gradcam", "unicorn", api_name="/explain")


def _metadata_rows(running_app) -> list[dict]:
    import json

    path = running_app["home"] / "dataset" / "metadata.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_correct_endpoint_stores_the_image_with_the_model_prediction(running_app, client, clothing_dir):
    """A correction through the API, without the prediction: the server predicts and records it."""
    from gradio_client import handle_file

    photo = sorted((clothing_dir / "test" / "shorts").glob("*.jpg"))[0]
    status, result = client.predict(handle_file(str(photo)), "shorts", "", None, api_name="/correct")
    assert result["status"] == "added" and "stored" in status
    row = next(r for r in _metadata_rows(running_app) if r["sha256"] == result["sha256"])
    assert row["label"] == "shorts" and row["source"] == "correction" and row["model_version"] == "v1"
    assert row["predicted_label"] != "shorts" and 0 < row["score"] <= 1
    assert (running_app["home"] / "dataset" / row["file_name"]).read_bytes() == photo.read_bytes()


def test_correct_endpoint_refuses_a_path_label_and_writes_nothing(running_app, client, sandal_photo):
    from gradio_client import handle_file

    before = _metadata_rows(running_app)
    with pytest.raises(Exception, match="path separator"):
        client.predict(handle_file(str(sandal_photo)), "../../etc/passwd", "", None, api_name="/correct")
    assert _metadata_rows(running_app) == before


def test_correct_endpoint_refuses_a_forged_prediction_and_writes_nothing(running_app, client, sandal_photo, clothing_dir):
    """What the model said comes from the server's prediction log (docs/api.md, "Feedback")."""
    from gradio_client import handle_file

    _, genuine, _ = _predict(client, sandal_photo)
    before = _metadata_rows(running_app)
    forged = {**genuine, "version": "v999", "predictions": [{"label": "sandal", "score": 1.0}]}
    with pytest.raises(Exception, match="was made by v1, not 'v999'"):
        client.predict(handle_file(str(sandal_photo)), "clog", "", forged, api_name="/correct")
    with pytest.raises(Exception, match="got a list"):
        client.predict(handle_file(str(sandal_photo)), "clog", "", [genuine], api_name="/correct")
    other = sorted((clothing_dir / "test" / "shorts").glob("*.jpg"))[1]
    with pytest.raises(Exception, match="this photo is not the one prediction"):
        client.predict(handle_file(str(other)), "clog", "", {"id": genuine["id"]}, api_name="/correct")
    assert _metadata_rows(running_app) == before


def test_add_examples_endpoint_reports_each_file(running_app, client, clothing_dir, tmp_path):
    from gradio_client import handle_file

    photos = sorted((clothing_dir / "validation" / "skirt").glob("*.jpg"))[:3]
    bad = tmp_path / "oops.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    files = [handle_file(str(p)) for p in [*photos, bad, photos[0]]]
    _, question, _, _ = client.predict(files, "New category…", "mini skirt", api_name="/add_examples")
    assert "Create the new category 'mini skirt'" in question  # nothing stored before it is created
    client.predict("mini skirt", api_name="/create_category")
    table, status, categories, _ = client.predict(files, "New category…", "mini skirt", api_name="/add_examples")
    assert [row[1] for row in table["data"]] == ["added", "added", "added", "rejected", "already there"]
    assert "oops.jpg" in table["data"][3][3] and "3 added" in status
    mini = next(row for row in categories["data"] if row[0] == "mini skirt")
    assert mini[1] == "pending" and mini[2] == 3
