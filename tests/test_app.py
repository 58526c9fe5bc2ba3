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
