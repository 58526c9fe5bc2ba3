"""Monitoring through the running app: predictions via gradio_client reach the prediction log that
`classifr monitor` reads, `/metrics` answers in the Prometheus format, the Monitor API reports them."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from gradio_client import Client, handle_file

from tests.test_cli import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(running_app):
    return Client(running_app["url"], verbose=False)


def _monitor(home) -> dict:
    done = run_cli(home, "monitor", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _count(home) -> int:
    return _monitor(home)["by_version"].get("v1", {}).get("predictions", 0)


def _settled_count(home) -> int:
    if not (home / "monitoring" / "predictions.sqlite").is_file():
        return 0
    previous, current = -1, _count(home)
    while current != previous:
        time.sleep(1.0)
        previous, current = current, _count(home)
    return current


def _wait_for(condition, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def test_twenty_predictions_through_the_api_are_counted_by_classifr_monitor(running_app, client, clothing_dir):
    home = running_app["home"]
    before = _settled_count(home)  # earlier tests' predictions may still be on their way to the log
    photos = sorted((clothing_dir / "test").rglob("*.jpg"))[:20]
    for photo in photos:
        client.predict(handle_file(str(photo)), api_name="/predict")
    # The app writes its log off the request path, within a moment.
    assert _wait_for(lambda: _count(home) == before + 20), f"expected {before + 20}, got {_count(home)}"
    row = _monitor(home)["by_version"]["v1"]
    assert row["by_source"]["api"] >= 20 and row["latency_ms"]["p95"] >= row["latency_ms"]["p50"] > 0
    assert row["drift"]["statistic"] == "PSI of top-1 confidence"


def test_metrics_answers_in_the_prometheus_text_format(running_app, client, sandal_photo):
    client.predict(handle_file(str(sandal_photo)), api_name="/predict")
    with urllib.request.urlopen(running_app["url"] + "metrics", timeout=10) as response:
        body = response.read().decode()
        content_type = response.headers["Content-Type"]
    assert content_type.startswith("text/plain") and "version=" in content_type
    assert "# TYPE classifr_prediction_latency_seconds histogram" in body
    assert 'classifr_predictions_total{label="sandal",version="v1"}' in body
    assert 'classifr_serving_version{variant="production",version="v1"} 1.0' in body
    ok = [line for line in body.splitlines() if line.startswith('classifr_prediction_requests_total{source="api",status="ok"}')]
    assert ok and float(ok[0].split()[-1]) >= 1
    # The process's health, and the predict event timed from its arrival (the ArrivalTime middleware).
    samples = dict(line.rsplit(" ", 1) for line in body.splitlines() if line and not line.startswith("#"))
    assert float(samples["process_resident_memory_bytes"]) > 50_000_000 and float(samples["process_cpu_seconds_total"]) > 0
    assert float(samples["classifr_home_disk_free_bytes"]) > 0 and "classifr_prediction_log_queue_depth" in samples
    assert float(samples['classifr_request_seconds_count{stage="wait"}']) >= 1
    assert float(samples['classifr_request_seconds_count{stage="work"}']) >= 1


def test_the_monitor_api_shows_corrections_and_refuses_the_canary_without_a_password(running_app, client, sandal_photo):
    _, payload, _ = client.predict(handle_file(str(sandal_photo)), api_name="/predict")
    client.predict(handle_file(str(sandal_photo)), "clog", "", payload, api_name="/correct")

    def corrected() -> dict | None:
        outputs = client.predict("24h", "all versions", "", api_name="/monitor")  # no password: the numbers only
        summary = next(o for o in outputs if isinstance(o, dict) and "by_version" in o)
        pairs = {(row["predicted"], row["true"]) for row in summary["corrections"]}
        return summary if ("sandal", "clog") in pairs else None  # other tests correct other photos

    summary = _wait_for(corrected)
    assert summary, "the correction did not reach the monitor"
    assert summary["by_version"]["v1"]["corrected"] >= 1
    with pytest.raises(Exception, match="Maintainer actions are off"):
        client.predict("", 20, api_name="/set_canary")


def test_cli_monitor_errors_are_one_line(tmp_path):
    done = run_cli(tmp_path / "empty-home", "monitor")
    assert done.returncode != 0 and done.stderr.strip().startswith("classifr: error: no prediction log yet")
    done = run_cli(tmp_path, "monitor", "--window", "fortnight")
    assert done.returncode == 2 and "unknown time window 'fortnight'" in done.stderr


def test_expected_errors_reach_the_server_log_as_one_line_with_the_client(running_app, client, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    _, payload, _ = client.predict(handle_file(str(broken)), api_name="/predict")
    assert "error" in payload
    with pytest.raises(Exception, match="Maintainer actions are off"):
        client.predict("a guess", 20, api_name="/set_canary")

    def logged() -> list[str]:
        lines = running_app["log"].read_text(errors="replace").splitlines()
        return [n for n, line in enumerate(lines) if "set_share refused for 127.0.0.1: Maintainer actions are off" in line]

    assert _wait_for(logged, timeout=10), "the refusal was not logged with the client"
    lines = running_app["log"].read_text(errors="replace").splitlines()
    assert any("rejected upload broken.jpg from 127.0.0.1" in line for line in lines)
    after = lines[logged()[-1] + 1:][:3]
    assert not any(line.startswith("Traceback") for line in after), after
    assert "a guess" not in "\n".join(lines)
