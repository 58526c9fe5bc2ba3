"""The Teach and Train tabs on a tiny project: new categories only after confirmation, version
choices from the registry, the comparison after a promote, outcome lines the poll never rewrites."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import _free_port

PASSWORD = "correct horse battery staple"

# What the trainer records for a version (docs/retraining.md, "Metrics a version records").
V2_METRICS = {
    "metrics": {
        "accuracy": 0.9, "macro_f1": 0.8, "num_images": 20,
        "per_class": {"cat": {"f1": 0.95, "support": 12}, "dog": {"f1": 0.9, "support": 5}, "hat": {"f1": 0.5, "support": 3}},
    },
    "held_out": {"total": 20, "per_label": {"cat": 12, "dog": 5, "hat": 3}, "min_per_label": 5,
                 "too_few": [{"label": "hat", "held_out": 3, "images": 15, "add": 10}]},
    "comparison": {"num_images": 20, "churn": 0.1, "num_shared": 17, "shared_accuracy_new": 0.94,
                   "old_labels": {"num_images": 17, "parent_right": 15, "forgotten": 1, "forgetting": 1 / 15,
                                  "accuracy_restricted": 0.94, "accuracy_parent": 0.88}},
    "gate": {"passed": False, "reasons": ["hat has 3 held-out photos: too few to measure it"], "warnings": [],
             "summary": ["Forgetting: 1 of 15 photos its parent got right (6.7%).", "hat has 3 held-out photos: too few to measure it"]},
}


def _settings(home: Path):
    from classifr.core.config import Settings

    return Settings.from_env({
        "CLASSIFR_HOME": str(home), "GRADIO_SERVER_PORT": str(_free_port()), "CLASSIFR_ADMIN_PASSWORD": PASSWORD,
        "CLASSIFR_NUM_THREADS": os.environ["CLASSIFR_NUM_THREADS"],
    })


def _tiny_project(home: Path, tiny_default_version, tiny_vit_dir: Path) -> None:
    """v1 (the tiny ViT, no metrics) in production; v2 (the same weights, with metrics) as candidate."""
    from classifr.app.project import open_registry

    registry = open_registry(_settings(home), default_version=tiny_default_version)

    def write(folder: Path) -> None:
        shutil.copytree(tiny_vit_dir, folder, dirs_exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps(V2_METRICS))

    registry.publish(write, parent="v1", aliases=["candidate"])


@pytest.fixture
def tiny_service(tmp_path, tiny_default_version, tiny_vit_dir):
    from classifr.app.project import open_service

    _tiny_project(tmp_path, tiny_default_version, tiny_vit_dir)
    service = open_service(_settings(tmp_path))
    yield service
    service.close()


@pytest.fixture(scope="module")
def tiny_app(tmp_path_factory, tiny_default_version, tiny_vit_dir):
    """The app (the same serve() as `python app.py`) on the tiny project, with a maintainer password."""
    from gradio_client import Client

    from classifr.ui.app import serve

    home = tmp_path_factory.mktemp("tiny-app")
    _tiny_project(home, tiny_default_version, tiny_vit_dir)
    demo = serve(_settings(home), block=False)
    try:
        yield {"client": Client(demo.local_url, verbose=False), "home": home}
    finally:
        demo.close()


def _labels_on_disk(home: Path) -> set[str]:
    dataset = home / "dataset"
    rows = [json.loads(line) for name in ("metadata.jsonl", "categories.jsonl") if (dataset / name).exists()
            for line in (dataset / name).read_text().splitlines()]
    return {row.get("label") or row.get("name") for row in rows}


@pytest.mark.slow  # the app's start-up: about 10 s
def test_a_typed_new_category_is_asked_about_and_stored_only_once_created(tiny_app, clothing_dir):
    from gradio_client import handle_file

    client, home = tiny_app["client"], tiny_app["home"]
    client.predict("cowboy hat", api_name="/create_category")
    photos = [handle_file(str(p)) for p in sorted((clothing_dir / "validation" / "hat").glob("*.jpg"))[:2]]
    table, status, _, _ = client.predict(photos, "Hat", "", api_name="/add_examples")
    assert "Create the new category 'Hat'" in status and "'cowboy hat'" in status, status
    assert "hat" not in {label.casefold() for label in _labels_on_disk(home)} and not table["data"]
    created, _, _ = client.predict("Hat", api_name="/create_category")
    assert "Created the category *Hat*" in created
    table, status, categories, _ = client.predict(photos, "hat", "", api_name="/add_examples")  # any case
    assert [row[1:3] for row in table["data"]] == [["added", "Hat"], ["added", "Hat"]] and "2 added" in status
    hat = next(row for row in categories["data"] if row[0] == "Hat")
    assert hat[1] == "pending" and hat[2] == 2


def test_version_choices_and_rollback_come_from_the_registry(tiny_service):
    from classifr.ui.train import rollback_button, version_choices

    choices = version_choices(tiny_service)
    assert choices["choices"] == [("v2 · candidate · 3 labels", "v2"), ("v1 · production · 3 labels", "v1")]
    assert choices["value"] == "v2" and version_choices(tiny_service, "v1")["value"] == "v1"
    assert rollback_button(tiny_service)["interactive"] is False
    tiny_service.promote("v2")
    assert version_choices(tiny_service)["value"] is None  # the candidate is production now: nothing to suggest
    assert rollback_button(tiny_service) == {"__type__": "update", "value": "Roll back production to v1", "interactive": True}


def test_the_comparison_is_candidate_against_production_then_previous_production_after_a_promote(tiny_service):
    from classifr.ui.train import comparison_notes, comparison_table

    table = comparison_table(tiny_service)
    assert table["headers"] == ["measure", "production (v1)", "candidate (v2)"]
    rows = {row[0]: row[1:] for row in table["data"]}
    assert rows["accuracy on held-out photos"] == ["n/a", "90.0% on 20 photos"]  # v1 records none
    assert rows["accuracy among its parent's labels"][1] == "94.0% on 17 photos"
    assert rows["forgotten: photos its parent got right, now wrong"][1] == "1 of 15 (6.7%)"
    assert rows["hat: F1"] == ["n/a", "50.0% on 3 photos"] and rows["promotion check"] == ["n/a", "not passed"]
    notes = comparison_notes(tiny_service)
    assert "Promotion check of v2: not passed" in notes and "**hat**: 3 held-out photos, add at least 10 more" in notes
    tiny_service.promote("v2")
    assert comparison_table(tiny_service)["headers"] == ["measure", "previous production (v1)", "production (v2)"]
    tiny_service.rollback()
    assert comparison_table(tiny_service)["headers"] == ["measure", "production (v1)", "candidate (v2)"]


@pytest.mark.slow  # the app's start-up: about 10 s
def test_promote_through_the_app_names_the_versions_compared(tiny_app):
    client = tiny_app["client"]
    message, table = client.predict(PASSWORD, "v2", api_name="/promote")
    try:
        assert "Production is now **v2**" in message
        assert table["headers"] == ["measure", "previous production (v1)", "production (v2)"]
        status, again = client.predict(api_name="/training_status")
        assert status == "No training run yet." and again["headers"] == table["headers"]
    finally:
        client.predict(PASSWORD, api_name="/rollback")


def test_only_maintainer_actions_write_the_outcome_line(tiny_service):
    """The poll, page load, tab selection and Refresh write the run's status, never the outcome of the
    last action: "Production is now v2" stays until the maintainer acts again."""
    from classifr.ui.app import build_app

    config = build_app(tiny_service).config
    ids = {c["props"].get("elem_id"): c["id"] for c in config["components"] if c["props"].get("elem_id")}
    events = {d["id"]: d for d in config["dependencies"]}

    def triggers(event: dict) -> set[tuple]:
        """What starts an event: its own targets, or those of the event it follows (.then, .success)."""
        if event.get("trigger_after") is not None:
            return triggers(events[event["trigger_after"]])
        return {tuple(target) for target in event["targets"]}

    actions = {(ids[name], "click") for name in ("train-promote", "train-rollback", "train-start")}
    writers = [triggers(d) for d in config["dependencies"] if ids["train-outcome"] in d["outputs"]]
    assert len(writers) == 3 and all(started <= actions for started in writers), writers
    status_writers = set().union(*(triggers(d) for d in config["dependencies"] if ids["train-status"] in d["outputs"]))
    assert {event for _, event in status_writers} >= {"tick", "load", "select", "click"}  # the poll still updates the status


def test_a_maintainer_action_error_stays_on_screen_until_closed():
    import gradio as gr

    from classifr.ui.train import lasting

    @lasting
    def refuse():
        raise gr.Error("Wrong maintainer password")

    with pytest.raises(gr.Error) as caught:
        refuse()
    assert caught.value.duration is None  # Gradio's default: gone after 10 s


def test_the_epochs_of_a_run_show_as_a_table_and_a_status_line():
    from classifr.app.jobs import JobState
    from classifr.ui.train import describe_job, epoch_summary, epoch_table

    epochs = [
        {"epoch": 1, "train_loss": 0.9, "eval_accuracy": 0.8, "learning_rate": 1e-4, "images_per_second": 21.6,
         "peak_memory_mb": 1843.2, "cpu_percent": 95.5, "gpu_percent": None, "gpu_peak_memory_mb": None},
        {"epoch": 3, "train_loss": 0.4, "eval_accuracy": 0.9, "images_per_second": 24.2, "peak_memory_mb": 1945.6,
         "cpu_percent": 96.4, "gpu_percent": None},
    ]
    assert epoch_table(epochs) == {
        "headers": ["epoch", "train loss", "eval accuracy", "images/s", "peak memory", "CPU %"],
        "data": [["1", "0.9000", "80.0%", "21.6", "1.8 GB", "96"], ["3", "0.4000", "90.0%", "24.2", "1.9 GB", "96"]],
    }
    assert epoch_summary(epochs) == "epoch 3 · 24 images/s · 1.9 GB · CPU 96%"
    assert epoch_summary([{"epoch": 2, "images_per_second": 300.0, "gpu_percent": 87.0, "peak_memory_mb": 900}]) == (
        "epoch 2 · 300 images/s · 900 MB · GPU 87%"
    )
    running = JobState(status="running", stage="fine-tuning", fraction=0.78, epochs=epochs)
    assert describe_job(running) == "**Training…** fine-tuning (78%) · epoch 3 · 24 images/s · 1.9 GB · CPU 96%"
    assert describe_job(JobState(status="running", stage="embedding", fraction=0.3)) == "**Training…** embedding (30%)"
    assert epoch_table([]) == {"headers": ["epoch"], "data": []} and epoch_summary([]) == ""


def test_the_poll_and_refresh_update_the_epoch_table(tiny_service):
    from classifr.ui.app import build_app

    config = build_app(tiny_service).config
    table = next(c["id"] for c in config["components"] if c["props"].get("elem_id") == "train-epochs")
    writers = [d for d in config["dependencies"] if table in d["outputs"]]
    assert len(writers) == 4  # the poll's tick, page load, tab selection, and after Refresh


@pytest.mark.slow
@pytest.mark.browser
def test_teach_then_promote_in_the_browser(tiny_app, clothing_dir, tmp_path):
    """Chromium: a typed category is asked about before it exists; the photos come back as
    thumbnails and the uploader empties; the promote message outlives reopening the Train tab."""
    from playwright.sync_api import expect, sync_playwright

    from tests.test_browser import CHROMIUM_ARGS, _chromium

    photos = [str(p) for p in sorted((clothing_dir / "validation" / "hat").glob("*.jpg"))[2:4]]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(tiny_app["client"].src, wait_until="domcontentloaded")
            page.get_by_role("tab", name="Teach").click()
            choice = page.locator("#teach-category input")
            choice.fill("bucket hat")
            choice.press("Enter")
            page.locator("#teach-files input[type=file]").set_input_files(photos)
            page.locator("#teach-add").click()
            expect(page.locator("#teach-status")).to_contain_text("Create the new category 'bucket hat'", timeout=30_000)
            expect(page.locator("#teach-confirm-yes")).to_be_visible()
            assert "bucket hat" not in _labels_on_disk(tiny_app["home"])
            page.screenshot(path=str(tmp_path / "teach-question.png"), full_page=True)
            page.locator("#teach-confirm-yes").click()
            expect(page.locator("#teach-status")).to_contain_text("2 added", timeout=30_000)
            expect(page.locator("#teach-thumbnails img")).to_have_count(2)
            expect(page.locator("#teach-confirm-yes")).to_be_hidden()
            assert "bucket hat" in _labels_on_disk(tiny_app["home"])
            page.screenshot(path=str(tmp_path / "teach-added.png"), full_page=True)

            page.get_by_role("tab", name="Train").click()
            page.locator("#train-password input").fill(PASSWORD)
            expect(page.locator("#train-version input")).to_have_value("v2 · candidate · 3 labels")
            page.locator("#train-promote").click()
            expect(page.locator("#train-outcome")).to_contain_text("Production is now v2", timeout=30_000)
            expect(page.locator("#train-comparison")).to_contain_text("previous production (v1)")
            page.get_by_role("tab", name="Teach").click()
            page.get_by_role("tab", name="Train").click()  # reopening refreshes the status and the lists
            page.wait_for_timeout(3_000)
            expect(page.locator("#train-outcome")).to_contain_text("Production is now v2")
            expect(page.locator("#train-rollback")).to_have_text("Roll back production to v1")
            page.screenshot(path=str(tmp_path / "train-promoted.png"), full_page=True)
            page.locator("#train-rollback").click()
            expect(page.locator("#train-outcome")).to_contain_text("Production is now v1", timeout=30_000)
        finally:
            browser.close()
    print("screenshots:", tmp_path)
