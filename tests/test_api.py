"""The HTTP API under /v1 (docs/api.md), in process: FastAPI's test client on a real service over
the tiny ViT project, and a real uvicorn server for what only a socket shows (a 401 or 413 sent
before the body). The real app and the real default model: tests/test_api_served.py."""

from __future__ import annotations

import base64
import dataclasses
import socket
import threading
import time
from pathlib import Path

import pytest

from classifr.core.config import Settings

TOKEN_HEADER = "Authorization"


def _tiny_vit(folder: Path, seed: int) -> None:
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    labels = {0: "cat", 1: "dog", 2: "bird"}
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, id2label=labels, label2id={v: k for k, v in labels.items()},
    )
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


@pytest.fixture
def project(tmp_path, tiny_default_version):
    """A tiny-ViT project with v1 (production) and v2 (other weights, the `candidate`), and a factory of APIs."""
    from classifr.api.app import build_api, close_api
    from classifr.app.project import open_service

    made = []

    def api_for(**changes):
        settings = Settings(home=tmp_path / "home", num_threads=1, backend="torch", api_rate_limit=0, api_workers=2)
        service = open_service(dataclasses.replace(settings, **changes), default_version=tiny_default_version)
        if len(service.list_versions()) == 1:
            service.registry.publish(lambda folder: _tiny_vit(folder, seed=1), parent="v1", aliases=["candidate"])
        api = build_api(service)
        made.append((api, service))
        return api, service

    yield api_for
    for api, service in made:
        close_api(api)
        service.close()


@pytest.fixture
def client(project):
    from fastapi.testclient import TestClient

    api, service = project()
    with TestClient(api) as test_client:
        test_client.service = service
        yield test_client


def _token(home: Path, name: str = "ci") -> str:
    from classifr.app.tokens import TokenStore

    return TokenStore(home).create(name)


# --- the Hugging Face inference shape --------------------------------------------------------------


def test_raw_bytes_and_json_base64_answer_the_labels_and_scores_the_service_gives(client, sandal_photo):
    expected = client.service.predict(sandal_photo, top_k=3)
    photo = sandal_photo.read_bytes()

    raw = client.post("/models/production", content=photo)  # what InferenceClient sends without parameters
    assert raw.status_code == 200, raw.text
    assert raw.json() == [p.to_json() for p in client.service.predict(sandal_photo).predictions]
    assert raw.headers["X-Classifr-Version"] == "v1"
    assert len(raw.headers["X-Prediction-Id"]) == 32 and float(raw.headers["X-Latency-Ms"]) > 0

    shaped = client.post("/models/production", json={"inputs": base64.b64encode(photo).decode(), "parameters": {"top_k": 3}})
    assert shaped.status_code == 200, shaped.text
    assert shaped.json() == [p.to_json() for p in expected.predictions]
    assert shaped.headers["X-Prediction-Id"] != raw.headers["X-Prediction-Id"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"content": b"not an image at all"}, "the request body is not an image Classifr can read"),
        ({"json": {"inputs": "@@@"}}, "inputs is not valid base64"),
        ({"json": {"inputs": "https://example.com/cat.jpg"}}, "Classifr does not fetch images"),
        ({"json": {"image": "abc"}}, 'a JSON body must be an object {"inputs"'),
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, "the body is not valid JSON"),
        ({"json": {"inputs": "", "parameters": {}}}, "inputs must be the image as base64 text"),
        ({"content": b""}, "the request has no image"),
    ],
)
def test_a_bad_body_is_a_400_with_one_line_naming_what_is_wrong(client, body, words):
    answer = client.post("/models/production", **body)
    assert answer.status_code == 400
    assert words in answer.json()["error"] and "\n" not in answer.json()["error"]


@pytest.mark.parametrize("top_k", [0, 101, "three", 2.5, True])
def test_a_bad_top_k_is_refused_naming_it(client, sandal_photo, top_k):
    answer = client.post("/models/production", json={"inputs": base64.b64encode(sandal_photo.read_bytes()).decode(),
                                                     "parameters": {"top_k": top_k}})
    assert answer.status_code == 400 and f"got {top_k!r}" in answer.json()["error"]


def test_sigmoid_scores_are_refused_rather_than_answered_with_softmax(client, sandal_photo):
    answer = client.post("/models/production", json={"inputs": base64.b64encode(sandal_photo.read_bytes()).decode(),
                                                     "parameters": {"function_to_apply": "sigmoid"}})
    assert answer.status_code == 400 and "softmax" in answer.json()["error"]


# --- pinned versions and the canary ----------------------------------------------------------------


def test_a_pinned_version_serves_its_calls_whatever_production_and_the_canary_do(project, sandal_photo):
    from fastapi.testclient import TestClient

    api, service = project()
    photo = sandal_photo.read_bytes()
    with TestClient(api) as client:
        v1 = client.post("/models/v1", content=photo)
        v2 = client.post("/models/v2", content=photo)
        assert (v1.headers["X-Classifr-Version"], v2.headers["X-Classifr-Version"]) == ("v1", "v2")
        assert v1.json() != v2.json()  # two different models answered

        service.set_canary_share(1.0)  # every unpinned production call goes to the candidate, v2
        assert client.post("/models/production", content=photo).headers["X-Classifr-Version"] == "v2"
        assert {client.post("/models/v1", content=photo).headers["X-Classifr-Version"] for _ in range(5)} == {"v1"}

        service.set_canary_share(0.0)
        service.promote("v2")
        pinned = client.post("/models/v1", content=photo)
        assert pinned.headers["X-Classifr-Version"] == "v1" and pinned.json() == v1.json()
        assert client.post("/models/production", content=photo).headers["X-Classifr-Version"] == "v2"
        assert service.pinned_versions == ["v1"]  # kept loaded for its pinned callers


def test_an_unknown_version_is_a_404_that_lists_the_known_ones(client, sandal_photo):
    answer = client.post("/models/v9", content=sandal_photo.read_bytes())
    assert answer.status_code == 404
    assert answer.json()["error"] == "unknown model version 'v9'; versions: v1, v2; aliases: production -> v1, candidate -> v2"


def test_predictions_classify_several_images_and_log_each_with_origin_api_and_the_address(client, sample_photos):
    photos = list(sample_photos.values())[:2]
    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in photos] + [("images", ("notes.jpg", b"text", "image/jpeg"))]
    answer = client.post("/predictions?version=v2&top_k=2", files=files)
    assert answer.status_code == 200, answer.text
    results = answer.json()["predictions"]
    assert [r["image"] for r in results] == [p.name for p in photos] + ["notes.jpg"]
    assert all(r["version"] == "v2" and r["variant"] == "pinned" and len(r["labels"]) == 2 for r in results[:2])
    assert "notes.jpg is not an image" in results[2]["error"] and results[2]["id"] is None

    log = client.service.prediction_log
    assert log.flush(10)
    for result in results[:2]:
        record = log.prediction(result["id"])
        assert (record["source"], record["client"], record["version"]) == ("api", "testclient", "v2")
    metrics = client.service.metrics_text().decode()  # /metrics counts them like any prediction
    assert 'classifr_prediction_requests_total{source="api",status="ok"} 2.0' in metrics
    assert 'classifr_prediction_requests_total{source="api",status="error"} 1.0' in metrics


def test_more_images_than_a_batch_are_refused(project, sandal_photo):
    from fastapi.testclient import TestClient

    api, _ = project(max_batch_size=2)
    files = [("images", (f"{n}.jpg", sandal_photo.read_bytes(), "image/jpeg")) for n in range(3)]
    with TestClient(api) as client:
        answer = client.post("/predictions", files=files)
    assert answer.status_code == 413 and answer.json() == {"error": "3 images in one request; at most 2"}


# --- feedback and explanations ---------------------------------------------------------------------


def test_feedback_names_the_prediction_and_the_server_record_decides_what_the_model_said(client, sandal_photo, sample_photos):
    photo = sandal_photo.read_bytes()
    prediction_id = client.post("/models/v2", content=photo).headers["X-Prediction-Id"]
    encoded = base64.b64encode(photo).decode()

    stored = client.post("/feedback", json={"prediction_id": prediction_id, "label": "sandal", "image": encoded})
    assert stored.status_code == 200, stored.text
    assert stored.json()["status"] == "added" and stored.json()["label"] == "sandal"
    row = next(r for r in client.service.dataset.rows() if r.sha256 == stored.json()["sha256"])
    assert row.source == "correction" and row.model_version == "v2"  # from the log, not from the caller

    other = base64.b64encode(next(iter(sample_photos.values())).read_bytes()).decode()
    wrong_photo = client.post("/feedback", json={"prediction_id": prediction_id, "confirm": True, "image": other})
    assert wrong_photo.status_code == 400 and "is not the one prediction" in wrong_photo.json()["error"]
    for bad, words in [
        ({"prediction_id": prediction_id, "label": "sandal"}, "image is missing"),
        ({"prediction_id": prediction_id, "image": encoded}, "either label"),
        ({"prediction_id": "f" * 32, "confirm": True, "image": encoded}, "unknown or expired prediction id"),
        ({"prediction_id": prediction_id, "label": "x", "version": "v1", "image": encoded}, "unknown field 'version'"),
    ]:
        answer = client.post("/feedback", json=bad)
        assert answer.status_code == 400 and words in answer.json()["error"], (bad, answer.text)


def test_explanations_come_as_a_png_or_as_numbers(client, sandal_photo):
    import io

    from PIL import Image

    picture = client.post("/explanations?method=gradcam", content=sandal_photo.read_bytes())
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(picture.content)).size[0] > 0

    numbers = client.post("/explanations?method=occlusion&format=json&target=dog", content=sandal_photo.read_bytes())
    details = numbers.json()
    assert numbers.status_code == 200 and details["method"] == "occlusion" and details["target"] == "dog"
    assert len(details["heatmap"]) > 1 and all(0.0 <= v <= 1.0 for row in details["heatmap"] for v in row)

    unknown = client.post("/explanations?method=magic", content=sandal_photo.read_bytes())
    assert unknown.status_code == 400 and "unknown explanation method 'magic'" in unknown.json()["error"]


# --- tokens, limits --------------------------------------------------------------------------------


def test_maintainer_routes_refuse_missing_wrong_and_revoked_tokens(client):
    from classifr.app.tokens import TokenStore

    home = client.service.settings.home
    token = _token(home)
    routes = [("post", "/models/v2/promote", None), ("post", "/rollback", None), ("put", "/canary", {"share": 0.5}),
              ("post", "/training", {"arguments": ["--help"]}), ("delete", "/training", None)]
    for method, path, body in routes:
        for headers in ({}, {TOKEN_HEADER: "Bearer cfr_wrong"}, {TOKEN_HEADER: f"Basic {token}"}):
            answer = getattr(client, method)(path, headers=headers, **({"json": body} if body else {}))
            assert answer.status_code == 401, (path, headers, answer.text)
            assert answer.headers["WWW-Authenticate"].startswith("Bearer") and answer.json()["error"]

    promoted = client.post("/models/v2/promote", headers={TOKEN_HEADER: f"Bearer {token}"})
    assert promoted.status_code == 200 and "production" in promoted.json()["aliases"]
    assert client.service.serving_version == "v2"
    canary = client.put("/canary", json={"share": 0.25}, headers={TOKEN_HEADER: f"Bearer {token}"})
    assert canary.status_code == 200 and canary.json()["share"] == 0.25
    bad_share = client.put("/canary", json={"share": 2}, headers={TOKEN_HEADER: f"Bearer {token}"})
    assert bad_share.status_code == 422 and "share" in bad_share.json()["error"]

    TokenStore(home).revoke("ci")  # as `classifr token revoke ci` does, from another process
    revoked = client.post("/rollback", headers={TOKEN_HEADER: f"Bearer {token}"})
    assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]
    assert client.service.serving_version == "v2"


def test_prediction_is_public_unless_a_setting_makes_it_token_only(project, sandal_photo):
    from fastapi.testclient import TestClient

    photo = sandal_photo.read_bytes()
    api, service = project()
    with TestClient(api) as client:  # a Hugging Face token sent by InferenceClient is not refused
        assert client.post("/models/production", content=photo, headers={TOKEN_HEADER: "Bearer hf_xyz"}).status_code == 200

    api, service = project(api_public=False)
    token = _token(service.settings.home)
    with TestClient(api) as client:
        assert client.post("/models/production", content=photo).status_code == 401
        assert client.get("/models").status_code == 401
        assert client.post("/models/production", content=photo, headers={TOKEN_HEADER: f"Bearer {token}"}).status_code == 200


def test_the_rate_limit_answers_429_with_retry_after(project, sandal_photo):
    from fastapi.testclient import TestClient

    api, _ = project(api_rate_limit=3)
    with TestClient(api) as client:
        codes = [client.post("/models/production", content=sandal_photo.read_bytes()).status_code for _ in range(3)]
        limited = client.post("/models/production", content=sandal_photo.read_bytes())
        assert codes == [200, 200, 200] and limited.status_code == 429
        assert 55 <= int(limited.headers["Retry-After"]) <= 60
        assert limited.json()["error"].startswith("too many requests from testclient: at most 3 a minute; try again in")
        assert client.get("/models").status_code == 429  # every /v1 route counts


def test_a_body_over_the_limit_is_a_413_while_it_streams(project):
    from fastapi.testclient import TestClient

    api, _ = project(max_image_bytes=1024 * 1024)

    def chunks():  # no Content-Length: the limit is found while reading
        for _ in range(40):
            yield b"\0" * 65536

    with TestClient(api) as client:
        answer = client.post("/models/production", content=chunks())
    assert answer.status_code == 413 and "the limit" in answer.json()["error"]


# --- on a socket: refused before the body is read ----------------------------------------------------


@pytest.fixture
def served_api(project):
    """The /v1 app on a real uvicorn server in this process; yields its port."""
    import uvicorn

    api, service = project(max_image_bytes=1024 * 1024)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield port, service
    server.should_exit = True
    thread.join(10)


def _head_only(port: int, request: str) -> bytes:
    """Send the request line and headers only (the body they announce never comes) and return the
    answer: the server must answer from the headers, or this times out."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode())
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return answer


def test_a_missing_token_is_refused_before_the_body_is_read(served_api):
    port, service = served_api
    answer = _head_only(port, "PUT /canary HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 401") and b"Classifr token" in answer
    assert service.canary_share == 0.0


def test_a_body_announced_over_the_limit_is_refused_before_it_is_read(served_api):
    port, _ = served_api
    answer = _head_only(port, "POST /models/production HTTP/1.1\r\nHost: x\r\nContent-Length: 900000000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413") and b"the request is 858.3 MB; the limit is" in answer


# --- the parts: the worker pool and the pinned-version cache -------------------------------------


def test_the_pool_gathers_waiting_calls_into_one_batch_and_hands_each_its_own_results():
    from classifr.api.batching import PredictionCall, PredictionPool

    release, batches = threading.Event(), []

    def predict(images, names, clients, version, top_k):
        release.wait(5)
        batches.append((list(images), version))
        if b"boom" in images:
            raise RuntimeError("boom")
        return [image.upper() for image in images]

    pool = PredictionPool(predict, workers=1, max_batch=8)
    try:
        first = pool.submit(PredictionCall([b"a"], ["a"], None, None, 5))
        time.sleep(0.1)  # the worker holds `a`; the next calls wait together
        rest = [pool.submit(PredictionCall([b"b", b"c"], ["b", "c"], None, None, 5)),
                pool.submit(PredictionCall([b"d"], ["d"], None, "v2", 5)),
                pool.submit(PredictionCall([b"e"], ["e"], None, None, 5))]
        release.set()
        assert first.result(5) == [b"A"]
        assert [call.result(5) for call in rest] == [[b"B", b"C"], [b"D"], [b"E"]]
        assert batches == [([b"a"], None), ([b"b", b"c", b"e"], None), ([b"d"], "v2")]  # by version

        failed = pool.submit(PredictionCall([b"boom"], ["x"], None, None, 5))
        with pytest.raises(RuntimeError, match="boom"):
            failed.result(5)
        assert pool.submit(PredictionCall([b"f"], ["f"], None, None, 5)).result(5) == [b"F"]  # the worker lives on
    finally:
        pool.close()


def test_pinned_versions_stay_within_their_memory_bound_least_recently_used_first(tmp_path):
    from classifr.app.pinned import PinnedVersions
    from classifr.core.errors import VersionCheckError

    loads = []

    def load(version):
        loads.append(version)
        if version == "v9":
            raise VersionCheckError("v9 is corrupt")
        folder = tmp_path / version
        folder.mkdir(exist_ok=True)
        (folder / "model.safetensors").write_bytes(b"\0" * 400)
        return f"model {version}", folder

    cache = PinnedVersions(load, max_bytes=1000)
    assert [cache.get(v) for v in ("v1", "v2", "v1")] == ["model v1", "model v2", "model v1"]
    cache.get("v3")  # 1,200 bytes: the least recently used, v2, goes
    assert cache.versions() == ["v1", "v3"] and cache.used_bytes() == 800
    assert loads == ["v1", "v2", "v3"]
    for _ in range(2):
        with pytest.raises(VersionCheckError, match="v9 is corrupt"):
            cache.get("v9")
    assert loads.count("v9") == 1  # a damaged version is not loaded again on every call

    threads = [threading.Thread(target=cache.get, args=("v4",)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads.count("v4") == 1

    alone = PinnedVersions(load, max_bytes=100)  # one version over the bound is still served
    assert alone.get("v1") == "model v1" and alone.versions() == ["v1"]


# --- where PyTorch runs ----------------------------------------------------------------------------


def test_every_forward_pass_of_a_prediction_runs_on_the_one_forward_thread(client, sandal_photo):
    """UI, API and in-process callers on any thread: PyTorch is driven from one thread
    (docs/speed.md, "One forward thread"). A thread that does not end would keep its own OpenMP team."""
    service = client.service
    seen = set()
    forward = service.classifier.predict_with_features

    def recording(*args, **kwargs):
        seen.add(threading.current_thread().name)
        return forward(*args, **kwargs)

    service.classifier.predict_with_features = recording
    try:
        service.predict(sandal_photo)
        callers = [threading.Thread(target=service.predict, args=(sandal_photo,)) for _ in range(3)]
        for thread in callers:
            thread.start()
        for thread in callers:
            thread.join()
        assert client.post("/models/production", content=sandal_photo.read_bytes()).status_code == 200
    finally:
        del service.classifier.predict_with_features
    assert len(seen) == 1 and next(iter(seen)).startswith("classifr-forward")


def test_in_own_thread_returns_or_raises_from_a_thread_that_has_ended():
    from classifr.inference.threads import in_own_thread

    ran_on = []

    def work(x, *, y):
        ran_on.append(threading.current_thread())
        if y == 0:
            raise ZeroDivisionError("y is 0")
        return x / y

    assert in_own_thread(work, 6, y=3) == 2
    with pytest.raises(ZeroDivisionError, match="y is 0"):
        in_own_thread(work, 1, y=0)
    assert all(t is not threading.current_thread() and not t.is_alive() for t in ran_on)


def test_models_lists_the_versions_as_the_registry_records_them(client):
    answer = client.get("/models")
    assert answer.status_code == 200
    body = answer.json()
    assert (body["production"], body["candidate"], body["canary_share"]) == ("v1", None, 0.0)
    assert [(v["version"], v["parent"], v["aliases"]) for v in body["versions"]] == [
        ("v1", None, ["production"]), ("v2", "v1", ["candidate"])]
    assert body["versions"] == [info.to_json() for info in client.service.list_versions()]
