"""Process health in `/metrics` and the Monitor's Server panel, request timing, and the operator log:
an expected error is one line with the client and the reason, a bug keeps its traceback."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from types import SimpleNamespace

import gradio as gr
import pytest
from starlette.requests import Request

from classifr.core.config import Settings
from classifr.core.errors import ClassifrError, InvalidImageError
from classifr.monitoring.process import ProcessHealth
from classifr.monitoring.prometheus import RecentTimes
from classifr.ui.errors import shows_errors
from classifr.ui.requests import ARRIVED, ArrivalTime, client_of, waited_s
from tests.test_monitoring import record

CLIENT = "203.0.113.7"


@pytest.fixture
def service(tmp_path, tiny_default_version):
    from classifr.app.project import open_service

    opened = open_service(Settings(home=tmp_path / "home", num_threads=1, backend="torch"), default_version=tiny_default_version)
    yield opened
    opened.close()


def _samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value of every sample line."""
    lines = (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {name: float(value) for name, value in lines}


def test_metrics_hold_the_process_the_disk_of_the_home_and_the_log_queue(service, tmp_path):
    samples = _samples(service.metrics_text().decode())
    assert samples["process_resident_memory_bytes"] > 10_000_000  # this test process, torch loaded
    assert samples["process_cpu_seconds_total"] > 0
    assert samples["process_open_fds"] > 0
    assert any(name.startswith("python_info{") for name in samples)
    assert 'python_gc_collections_total{generation="0"}' in samples
    free = shutil.disk_usage(tmp_path).free
    assert abs(samples["classifr_home_disk_free_bytes"] - free) < 200_000_000  # same filesystem, read at scrape
    assert samples["classifr_prediction_log_queue_depth"] == 0


def test_the_queue_depth_counts_what_waits_for_the_log_writer(service):
    entered, release = threading.Event(), threading.Event()

    def slow_hash() -> str:  # runs on the writer thread: holds it while we queue more
        entered.set()
        release.wait(10)
        return "1" * 64

    log = service.prediction_log
    log.log(record(image_sha256=slow_hash))
    assert entered.wait(10)
    for _ in range(3):
        log.log(record())
    try:
        assert log.queue_depth == 3
        assert _samples(service.metrics_text().decode())["classifr_prediction_log_queue_depth"] == 3
        assert service.process_stats()["log_queue_depth"] == 3
    finally:
        release.set()
    assert service.flush_prediction_log()
    assert log.queue_depth == 0


def test_request_times_reach_metrics_and_the_server_panel(service, sandal_photo):
    stats = service.process_stats()
    assert stats["caller_ms"] == {"p50": None, "p95": None, "count": 0}
    service.predict_batch([sandal_photo], origin="ui")
    for wait_s in (0.010, 0.020, 0.030):
        service.observe_request(wait_s=wait_s, work_s=0.100)
    service.observe_request(wait_s=None, work_s=0.050)  # arrival unknown: counted as work only
    samples = _samples(service.metrics_text().decode())
    assert samples['classifr_request_seconds_count{stage="wait"}'] == 3
    assert samples['classifr_request_seconds_count{stage="work"}'] == 4
    assert samples['classifr_request_seconds_sum{stage="wait"}'] == pytest.approx(0.06)
    stats = service.process_stats()
    assert stats["caller_ms"]["count"] == 4 and stats["caller_ms"]["p50"] == pytest.approx(110.0)
    assert stats["caller_ms"]["p95"] == pytest.approx(130.0)
    assert stats["server_ms"]["count"] == 1 and stats["server_ms"]["p50"] > 0
    assert stats["rss_bytes"] > 10_000_000 and stats["memory_total_bytes"] >= stats["memory_available_bytes"] > 0
    assert stats["disk_free_bytes"] > 0 and stats["cores"] >= 1 and stats["cpu_percent"] >= 0


def test_the_server_panel_shows_every_figure(service):
    from classifr.ui.monitor import server_markdown

    service.observe_request(wait_s=0.25, work_s=0.05)
    text = server_markdown(service.process_stats())
    for words in ("CPU", "RSS", "free disk", "prediction log queue", "300 / 300 ms (1 recent)", "nothing measured yet"):
        assert words in text, (words, text)


def test_cpu_share_is_measured_between_reads(tmp_path):
    clock = SimpleNamespace(now=0.0)
    health = ProcessHealth(tmp_path, clock=lambda: clock.now)
    clock.now = 1.0
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # about 0.3 s of CPU, in "1 s" of the fake clock
        pass
    assert 25 <= health.cpu_percent() <= 100
    clock.now = 1.5  # too soon to measure again: the last share is repeated
    assert 25 <= health.cpu_percent() <= 100


def test_disk_free_of_a_home_not_made_yet_reads_its_parent(tmp_path):
    assert ProcessHealth(tmp_path / "not" / "yet").disk_free_bytes() == pytest.approx(shutil.disk_usage(tmp_path).free, rel=0.01)


def test_recent_times_keep_the_last_ones_only():
    recent = RecentTimes(size=10)
    for n in range(100):
        recent.add(float(n))
    assert len(recent) == 10 and recent.percentiles(0.0, 0.5, 1.0) == [90.0, 94.0, 99.0]  # nearest rank


def test_arrival_time_is_stamped_before_the_handler_runs():
    from fastapi import FastAPI
    from starlette.middleware import Middleware
    from starlette.testclient import TestClient

    app = FastAPI(middleware=[Middleware(ArrivalTime)])

    @app.get("/slow")
    def slow(request: Request) -> dict:
        time.sleep(0.05)
        return {"waited": waited_s(SimpleNamespace(request=request)), "client": client_of(SimpleNamespace(request=request))}

    answer = TestClient(app).get("/slow").json()
    assert 0.05 <= answer["waited"] < 5 and answer["client"] == "testclient"
    assert waited_s(None) is None and client_of(None) is None


# --- the operator log --------------------------------------------------------------------------


def _request(host: str = CLIENT) -> gr.Request:
    scope = {"type": "http", "method": "POST", "path": "/gradio_api/queue/join", "headers": [], "client": (host, 50000),
             "state": {ARRIVED: time.perf_counter()}}
    return gr.Request(request=Request(scope))


def test_an_expected_error_is_one_line_with_the_client_and_no_traceback(caplog):
    @shows_errors
    def classify(path: str, request: gr.Request):
        raise InvalidImageError(f"{path}: not an image")

    caplog.set_level(logging.INFO)
    with pytest.raises(gr.Error) as raised:
        classify("cat.txt", _request())
    assert raised.value.message == "cat.txt: not an image"
    assert raised.value.print_exception is False  # Gradio prints no traceback for it
    lines = [r for r in caplog.records if r.name == "classifr.ui.errors"]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert lines[0].getMessage() == f"classify refused for {CLIENT}: cat.txt: not an image"


def test_a_handlers_own_gr_error_is_one_line_too(caplog):
    @shows_errors
    def store(row: dict | None, request: gr.Request | None = None):
        raise gr.Error("Pick a prediction in the review queue first.")

    caplog.set_level(logging.INFO)
    with pytest.raises(gr.Error) as raised:
        store(None, request=_request("198.51.100.2"))
    assert raised.value.print_exception is False
    lines = [r for r in caplog.records if r.name == "classifr.ui.errors"]
    assert [r.getMessage() for r in lines] == ["store refused for 198.51.100.2: Pick a prediction in the review queue first."]
    assert lines[0].exc_info is None


def test_without_a_request_the_client_is_unknown(caplog):
    @shows_errors
    def promote(ref: str):
        raise ClassifrError(f"unknown model version {ref!r}")

    caplog.set_level(logging.INFO)
    with pytest.raises(gr.Error):
        promote("v9")
    assert [r.getMessage() for r in caplog.records if r.name == "classifr.ui.errors"] == [
        "promote refused for an unknown address: unknown model version 'v9'"
    ]


def test_a_bug_keeps_its_traceback_logged_once_with_the_client(caplog):
    @shows_errors
    def explain(path: str, request: gr.Request):
        raise RuntimeError("tensor shapes do not match")

    caplog.set_level(logging.INFO)
    with pytest.raises(gr.Error) as raised:
        explain("cat.jpg", _request())
    assert isinstance(raised.value.__cause__, RuntimeError) and raised.value.print_exception is False
    lines = [r for r in caplog.records if r.name == "classifr.ui.errors"]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR
    assert lines[0].getMessage() == f"explain failed for {CLIENT}"
    assert lines[0].exc_info is not None and lines[0].exc_info[0] is RuntimeError
