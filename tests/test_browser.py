"""A real headless Chromium opens the app, uploads a photo and reads the predicted label."""

from __future__ import annotations

import os
import shutil

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: apt-get install chromium (see .ci/run)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture
def page(running_app):
    """A fresh page of the running app in Debian's headless Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(running_app["url"], wait_until="domcontentloaded")
            yield page
        finally:
            browser.close()


def test_upload_a_photo_and_see_the_label(page, sandal_photo, tmp_path):
    from playwright.sync_api import expect

    page.locator("#classify-image input[type=file]").set_input_files(str(sandal_photo))
    expect(page.locator("#classify-label")).to_contain_text("sandal", timeout=60_000)
    expect(page.locator("#classify-status")).to_contain_text("v1")
    page.screenshot(path=str(tmp_path / "classify.png"), full_page=True)


def test_the_heatmap_comes_with_how_far_to_trust_it(page, sandal_photo):
    """The explanation of the new photo appears first, then its faithfulness line (docs/explanations.md);
    choosing GradCAM++ and explaining again gives that method's map and its own line."""
    from playwright.sync_api import expect

    page.locator("#classify-image input[type=file]").set_input_files(str(sandal_photo))
    expect(page.locator("#explain-caption")).to_contain_text("Grad-CAM (fast) for sandal", timeout=90_000)
    trust = page.locator("#explain-trust")
    expect(trust).to_contain_text("How far to trust this map:", timeout=60_000)
    expect(trust).to_contain_text("the probability of 'sandal' from")
    expect(trust).to_contain_text("deletion AUC")
    first = trust.inner_text()

    page.locator("#explain-method input").click()
    page.get_by_role("option", name="GradCAM++ (fast)").click()
    page.locator("#explain-button").click()
    expect(page.locator("#explain-caption")).to_contain_text("GradCAM++ (fast) for sandal", timeout=60_000)
    expect(trust).not_to_have_text(first, timeout=60_000)  # GradCAM++'s own map, its own numbers
    expect(trust).to_contain_text("How far to trust this map:")


def test_correct_a_prediction_in_the_browser(page, running_app, clothing_dir, tmp_path):
    """Upload a photo, pick 'New category…', name it, press Correct: the row and image are on disk."""
    import json

    from playwright.sync_api import expect

    photo = sorted((clothing_dir / "test" / "hat").glob("*.jpg"))[1]
    page.locator("#classify-image input[type=file]").set_input_files(str(photo))
    expect(page.locator("#classify-status")).to_contain_text("v1", timeout=60_000)
    expect(page.locator("#feedback-notice")).to_contain_text("stores this image")
    choice = page.locator("#feedback-label input")
    choice.click()
    choice.fill("New category")
    page.get_by_role("option", name="New category…").click()
    page.locator("#feedback-new textarea, #feedback-new input").first.fill("bucket hat")
    page.locator("#feedback-correct").click()
    # A new category is asked about first, naming the near-duplicate "bucket" (an ImageNet label).
    expect(page.locator("#feedback-status")).to_contain_text("Create the new category", timeout=30_000)
    expect(page.locator("#feedback-status")).to_contain_text("Similar labels already exist: bucket")
    assert "bucket hat" not in _dataset_labels(running_app["home"])  # nothing stored before the answer
    page.locator("#feedback-create").click()
    expect(page.locator("#feedback-status")).to_contain_text("Thank you, stored", timeout=30_000)
    page.screenshot(path=str(tmp_path / "corrected.png"), full_page=True)
    rows = [json.loads(line) for line in (running_app["home"] / "dataset" / "metadata.jsonl").read_text().splitlines()]
    row = next(r for r in rows if r["label"] == "bucket hat")
    assert row["source"] == "correction" and row["model_version"] == "v1"
    assert (running_app["home"] / "dataset" / row["file_name"]).read_bytes() == photo.read_bytes()


def _dataset_labels(home) -> set[str]:
    """Labels of the shared app's dataset rows and categories (other tests of this app add theirs)."""
    import json

    found = set()
    for name in ("metadata.jsonl", "categories.jsonl"):
        path = home / "dataset" / name
        if path.exists():
            found |= {json.loads(line).get("label") or json.loads(line).get("name") for line in path.read_text().splitlines()}
    return found


def _logged_ids(home) -> list[str]:
    import sqlite3

    path = home / "monitoring" / "predictions.sqlite"
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM predictions")]


def test_each_photo_is_predicted_and_logged_once(page, running_app, clothing_dir):
    """An upload, a photo replacing it, an example's click: one row each; removing the photo: none."""
    import time

    from playwright.sync_api import expect

    home = running_app["home"]
    before = set(_logged_ids(home))

    def rows_after(expected: int) -> int:
        deadline = time.monotonic() + 60  # the first prediction may wait for the model; the log is written off the request path
        while len(set(_logged_ids(home)) - before) < expected and time.monotonic() < deadline:
            time.sleep(0.25)
        time.sleep(3)  # a second prediction of the same photo would follow within this
        return len(set(_logged_ids(home)) - before)

    for n, photo in enumerate(sorted((clothing_dir / "test" / "pants").glob("*.jpg"))[:2], start=1):
        page.locator("#classify-image input[type=file]").set_input_files(str(photo))
        assert rows_after(n) == n
    page.locator("#classify-examples button, #classify-examples td").first.click()
    assert rows_after(3) == 3
    page.locator("#classify-image button[aria-label='Remove Image']").click()
    expect(page.locator("#classify-status")).to_have_text("", timeout=10_000)
    assert rows_after(3) == 3


def test_monitor_and_model_tabs_after_a_prediction(page, running_app, sandal_photo, tmp_path):
    """Classify a photo, refresh the Monitor tab until v1 has a row, then read the Model tab's card."""
    import time

    from playwright.sync_api import expect

    page.locator("#classify-image input[type=file]").set_input_files(str(sandal_photo))
    expect(page.locator("#classify-status")).to_contain_text("v1", timeout=60_000)

    page.get_by_role("tab", name="Monitor").click()
    v1_row = page.locator("#monitor-summary").get_by_role("row").filter(
        has=page.get_by_role("gridcell", name="v1", exact=True)
    )
    deadline = time.monotonic() + 20  # the app writes its log off the request path: refresh until it shows
    while True:
        page.locator("#monitor-refresh").click()
        try:
            expect(v1_row.first).to_be_visible(timeout=2_000)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
    expect(v1_row.first).to_contain_text("production")
    expect(page.locator("#monitor-alerts")).to_contain_text("v1")
    assert page.locator("#monitor-alerts").inner_text().strip()
    # The Server panel: the app's CPU, memory, disk and the classification just made, as the caller saw it.
    page.locator("#monitor-server-refresh").click()
    server = page.locator("#monitor-server")
    expect(server).to_contain_text("free disk (project home)", timeout=15_000)
    expect(server).to_contain_text("recent")
    page.screenshot(path=str(tmp_path / "monitor.png"), full_page=True)

    page.get_by_role("tab", name="Model").click()
    card = page.locator("#model-card")
    expect(card).to_contain_text("tf_efficientnet_lite0", timeout=15_000)
    expect(card).to_contain_text("4,652,008")
    page.screenshot(path=str(tmp_path / "model.png"), full_page=True)

    # A benchmark report written now (as `classifr benchmark` writes it) shows under the card after Refresh.
    _write_benchmark_report(running_app["home"] / "benchmarks" / "20261202-120000-quick")
    page.get_by_text("Benchmarks: backbones, strategies and baselines compared").click()
    page.locator("#benchmark-refresh").click()
    expect(page.locator("#benchmark-report")).to_contain_text("Recommendation", timeout=15_000)
    expect(page.locator("#benchmark-report")).to_contain_text("head lite0")
    expect(page.locator("#benchmark-plots img").first).to_be_visible(timeout=15_000)
    page.screenshot(path=str(tmp_path / "benchmarks.png"), full_page=True)


def _write_benchmark_report(folder):
    """A two-run report through the real report writer (the runs' numbers are made up: this checks the tab)."""
    from study.report import write_report

    labels = ["hat", "shoes"]
    run = {"family": "backbone", "strategy": "head", "features": "embeddings", "backbone": "lite0",
           "hyperparameters": {}, "macro_f1": 0.9, "per_class_f1": {"hat": 0.9, "shoes": 0.9}, "train_seconds": 30.0,
           "train_images_per_second": 20.0, "latency_ms_batch1": 25.0, "latency_ms_batch32": 20.0,
           "parameters": 3_374_851, "checkpoint_bytes": 13_800_000, "history": [], "confusion": [[9, 1], [1, 9]]}
    runs = [{**run, "name": "head lite0", "accuracy": 0.9},
            {**run, "name": "svm pixels", "family": "classic", "strategy": "svm", "accuracy": 0.6, "latency_ms_batch1": 5.0,
             "confusion": [[6, 4], [4, 6]]}]
    study = {"dataset": "clothing", "preset": "quick", "labels": labels, "train_images": 40, "eval_images": 20, "seed": 0,
             "machine": "test", "started": "2026-12-02T12:00:00+00:00", "seconds": 60.0, "probe": None}
    write_report(folder, study, runs)
