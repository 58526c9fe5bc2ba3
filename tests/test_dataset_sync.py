"""Syncing the project dataset to a Hub dataset repo (the in-memory fake Hub) and its dataset card.

Real photos from clothing-small; every scheduler runs with a 60-minute interval and is pushed by
hand (`push_now`), so no test depends on timing, and every one is stopped by the fixture.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import logging
import math
import os
import re
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path

import pytest
import yaml
from huggingface_hub import DatasetCard
from huggingface_hub.errors import HfHubHTTPError

from classifr.core.config import Settings
from classifr.core.errors import ClassifrError
from classifr.data import hub_sync
from classifr.data.dataset import Example, Feedback, ProjectDataset, Row
from classifr.data.hub_sync import COLUMNS, DatasetSync, DatasetSyncError, open_sync, render_card, write_card
from tests import fake_hub
from tests.fake_hub import FakeHfApi

REPO = "team/classifr-data"
HOSTILE = ('a|b', '*x*', 'say "hi" & \'bye\'', "www.example.com")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


@pytest.fixture(scope="module")
def photos(clothing_dir: Path) -> list[Path]:
    return sorted((clothing_dir / "train").rglob("*.jpg"))[::97][:12]


@pytest.fixture
def dataset(tmp_path: Path, photos: list[Path]) -> ProjectDataset:
    project = ProjectDataset(tmp_path / "dataset")
    project.add_many([Example(p, "dress") for p in photos[:2]], source="upload", contributor="grace-hopper")
    project.add_many([Example(p, "hat") for p in photos[2:4]], source="upload")
    return project


@pytest.fixture
def fake() -> Iterator[FakeHfApi]:
    hub = FakeHfApi()
    yield hub
    hub.close()


@pytest.fixture
def start(fake: FakeHfApi) -> Iterator[Callable[..., DatasetSync]]:
    """start(dataset, **overrides) -> a running DatasetSync on the fake Hub, stopped at teardown."""
    threads_before = set(threading.enumerate())
    syncs: list[DatasetSync] = []

    def start_sync(dataset: ProjectDataset, **overrides) -> DatasetSync:
        options = {"repo_id": REPO, "token": None, "every_minutes": 60, "license": "cc-by-4.0", "hf_api": fake}
        sync = DatasetSync.start(dataset, **{**options, **overrides})
        syncs.append(sync)
        return sync

    try:
        yield start_sync
    finally:
        for sync in syncs:
            sync.stop(final_push=False)
        fake.close()
        assert set(threading.enumerate()) <= threads_before, "a sync left a thread running"


def commits(fake: FakeHfApi) -> list[dict]:
    return [call for call in fake.calls_to("create_commit") if call["repo_id"] == REPO]


def pushed_paths(call: dict) -> set[str]:
    return {operation.path_in_repo for operation in call["operations"]}


def image_files(dataset: ProjectDataset) -> set[str]:
    return {row.file_name for row in dataset.rows()}


def hub_files(fake: FakeHfApi) -> dict[str, bytes]:
    return fake.files_at(REPO, "main", repo_type="dataset")


def table(text: str, heading: str) -> list[list[str]]:
    """The body rows of the first Markdown table after `heading`, as cells (still escaped)."""
    lines = text.split(f"\n{heading}\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = list(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))
    return [[cell.strip() for cell in _CELL_SPLIT.split(row)[1:-1]] for row in rows[2:]]


def unescape(cell: str) -> str:
    return re.sub(r"\\(.)", r"\1", cell)


# --- pushing ---------------------------------------------------------------------------------


def test_first_push_uploads_data_card_and_every_image_but_no_sidecar(dataset, fake, start):
    (dataset.root / ".lock").touch()
    (dataset.root / ".tmp" / "half-written.jpg").write_bytes(b"partial")
    (dataset.root / "stray.tmp").write_bytes(b"temporary")
    for forbidden in (".git/HEAD", ".cache/huggingface/download/x.lock", "images/.git/config"):  # the Hub refuses these
        (dataset.root / forbidden).parent.mkdir(parents=True, exist_ok=True)
        (dataset.root / forbidden).write_bytes(b"not data")

    sync = start(dataset)
    assert sync.push_now() is None  # start() already pushed everything; push_now waits for it

    [call] = commits(fake)
    assert call["repo_type"] == "dataset"
    assert pushed_paths(call) == {"metadata.jsonl", "categories.jsonl", "README.md"} | image_files(dataset)
    files = hub_files(fake)
    assert files["metadata.jsonl"] == dataset.metadata_path.read_bytes()
    assert all(files[name] == (dataset.root / name).read_bytes() for name in image_files(dataset))
    assert fake.calls_to("create_repo") == [{"repo_id": REPO, "repo_type": "dataset", "exist_ok": True}]
    assert REPO in fake.dataset_repos and REPO not in fake.repos  # kept apart from model repos
    status = sync.status()
    assert status["repo_id"] == REPO and status["running"] and status["commits"] == 1 and status["failures"] == 0
    assert status["files_uploaded"] == 7 and status["last_error"] is None and status["last_push_at"]


def test_second_push_uploads_only_new_and_changed_files(dataset, fake, start, photos):
    sync = start(dataset)
    sync.push_now()
    results = dataset.add_many([Example(p, "dress") for p in photos[4:6]], source="upload")

    info = sync.push_now()

    assert info is not None and len(commits(fake)) == 2
    new_images = {f"images/{r.sha256[:2]}/{r.sha256}.jpg" for r in results}
    assert pushed_paths(commits(fake)[-1]) == {"metadata.jsonl", "README.md"} | new_images  # same categories
    assert hub_files(fake)["metadata.jsonl"] == dataset.metadata_path.read_bytes()
    assert sync.status()["files_uploaded"] == 7 + 4 and sync.status()["last_commit"] == info.oid


def test_a_push_with_nothing_new_makes_no_commit(dataset, fake, start):
    sync = start(dataset)
    sync.push_now()
    card_mtime = (dataset.root / "README.md").stat().st_mtime_ns

    assert sync.push_now() is None and sync.push_now() is None
    assert len(commits(fake)) == 1
    assert (dataset.root / "README.md").stat().st_mtime_ns == card_mtime  # the unchanged card is not rewritten


def test_a_new_category_uploads_categories_jsonl(dataset, fake, start):
    sync = start(dataset)
    sync.push_now()
    dataset.create_category("scarf", contributor="ada")
    sync.push_now()
    assert pushed_paths(commits(fake)[-1]) == {"categories.jsonl", "README.md"}


def test_a_row_appended_while_a_push_uploads_is_pushed_next_time(dataset, fake, start, photos):
    """A row written just after its listing, in the same timestamp tick (so the file's mtime does
    not move), must still reach the Hub. The tick is simulated by restoring the mtime."""
    sync = start(dataset)
    sync.push_now()
    dataset.add(Example(photos[4], "dress"), source="upload")
    listed_mtime = dataset.metadata_path.stat().st_mtime_ns

    def write_during_upload(**_: object) -> None:
        fake.before.pop("create_commit")
        dataset.add(Example(photos[5], "dress"), source="upload")
        os.utime(dataset.metadata_path, ns=(listed_mtime, listed_mtime))

    fake.before["create_commit"] = write_during_upload
    sync.push_now()
    assert hub_files(fake)["metadata.jsonl"] != dataset.metadata_path.read_bytes()  # the late row is not in it yet

    sync.push_now()
    assert hub_files(fake)["metadata.jsonl"] == dataset.metadata_path.read_bytes()


def test_a_restarted_sync_does_not_upload_images_the_hub_has(dataset, fake, start, photos):
    first = start(dataset)
    first.push_now()
    first.stop()
    dataset.add(Example(photos[4], "hat"), source="upload")

    second = start(dataset)
    second.push_now()

    [_, restart_commit] = commits(fake)
    new_image = dataset.rows()[-1].file_name
    assert pushed_paths(restart_commit) == {"metadata.jsonl", "categories.jsonl", "README.md", new_image}
    assert set(hub_files(fake)) >= image_files(dataset)


# --- failures --------------------------------------------------------------------------------


def _fail_with_500(**_: object) -> None:
    raise HfHubHTTPError("500 Server Error: Internal Server Error", response=fake_hub._response(500, "POST", "/commit"))


def test_a_failed_push_is_logged_recorded_and_the_next_push_sends_it(dataset, fake, start, photos, caplog):
    sync = start(dataset)
    sync.push_now()
    dataset.add(Example(photos[4], "dress"), source="upload")
    fake.before["create_commit"] = _fail_with_500

    with caplog.at_level(logging.ERROR, logger="classifr.data.hub_sync"):
        with pytest.raises(DatasetSyncError, match=f"{REPO}.*500 Server Error"):
            sync.push_now()
    assert any(REPO in r.getMessage() and r.name == "classifr.data.hub_sync" for r in caplog.records)
    status = sync.status()
    assert status["failures"] == 1 and "500 Server Error" in status["last_error"] and status["last_error_at"]
    assert status["commits"] == 1

    del fake.before["create_commit"]
    info = sync.push_now()
    assert info is not None and dataset.rows()[-1].file_name in pushed_paths(commits(fake)[-1])
    assert hub_files(fake)["metadata.jsonl"] == dataset.metadata_path.read_bytes()
    assert sync.status()["last_error"] is None and sync.status()["failures"] == 1


def test_a_failing_scheduled_push_does_not_raise(dataset, fake, start):
    fake.before["create_commit"] = _fail_with_500
    sync = start(dataset)  # its first push runs in the background and fails
    assert isinstance(sync.scheduler.last_future.exception(timeout=30), HfHubHTTPError)
    assert sync.status()["failures"] == 1 and commits(fake)

    del fake.before["create_commit"]
    assert sync.push_now() is not None and "metadata.jsonl" in hub_files(fake)


def test_a_failure_is_logged_once(dataset, fake, start, caplog):
    sync = start(dataset)
    sync.push_now()
    dataset.create_category("scarf", contributor="ada")
    fake.before["create_commit"] = _fail_with_500

    with caplog.at_level(logging.WARNING), pytest.raises(DatasetSyncError):  # every logger, huggingface_hub's too
        sync.push_now()
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.levelno == logging.ERROR and record.name == "classifr.data.hub_sync" and REPO in record.getMessage()


def test_a_repo_that_cannot_be_created_is_a_classifr_error(dataset, fake, start):
    fake.before["create_repo"] = _fail_with_500
    with pytest.raises(DatasetSyncError, match=REPO):
        start(dataset)
    assert dataset.write_guard is nullcontext


@pytest.mark.parametrize("every", [0, 0.5, -1, True, math.nan, math.inf, 24 * 60 + 1, "10"])
def test_every_minutes_is_checked(dataset, fake, start, every):
    with pytest.raises(ClassifrError, match=re.escape(repr(every))):
        start(dataset, every_minutes=every)
    assert fake.calls == []


# --- locking and stopping --------------------------------------------------------------------


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_dataset_writes_wait_for_the_scheduler_lock(dataset, start, photos):
    sync = start(dataset)
    sync.push_now()
    rows_before = len(dataset.rows())
    writer = threading.Thread(target=dataset.add, args=(Example(photos[4], "dress"),), kwargs={"source": "upload"})

    with sync.scheduler.lock:
        writer.start()
        writer.join(timeout=0.5)
        assert writer.is_alive(), "the write did not wait for scheduler.lock"
        assert dataset.metadata_path.read_bytes().count(b"\n") == rows_before
    writer.join(timeout=30)
    assert not writer.is_alive() and len(dataset.rows()) == rows_before + 1


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_stop_pushes_pending_files_once_and_leaves_nothing_behind(dataset, fake, photos):
    threads_before = set(threading.enumerate())
    sync = DatasetSync.start(dataset, repo_id=REPO, token=None, every_minutes=60, license="cc-by-4.0", hf_api=fake)
    try:
        sync.push_now()
        dataset.add(Example(photos[4], "dress"), source="upload")
    finally:
        sync.stop()

    assert len(commits(fake)) == 2 and hub_files(fake)["metadata.jsonl"] == dataset.metadata_path.read_bytes()
    assert dataset.write_guard is nullcontext and not sync.status()["running"]
    dataset.add(Example(photos[5], "dress"), source="upload")
    assert sync.scheduler.trigger().result() is None and len(commits(fake)) == 2  # later triggers do nothing
    with pytest.raises(DatasetSyncError, match="stopped"):
        sync.push_now()
    sync.stop()  # twice is fine

    fake.close()
    assert set(threading.enumerate()) <= threads_before
    # Nothing (atexit included) holds the scheduler any more, so it cannot push at interpreter exit.
    scheduler = weakref.ref(sync.scheduler)
    del sync
    gc.collect()
    assert scheduler() is None


def test_pushes_happen_on_the_interval_without_a_trigger(dataset, fake, start, photos, monkeypatch):
    monkeypatch.setattr(hub_sync, "MIN_EVERY_MINUTES", 0.001)
    sync = start(dataset, every_minutes=0.002)  # 120 ms
    assert sync.scheduler.last_future.result(timeout=30) is not None  # the first push, queued by start()
    dataset.add(Example(photos[4], "dress"), source="upload")

    deadline = time.monotonic() + 30
    while len(commits(fake)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(commits(fake)) == 2 and dataset.rows()[-1].file_name in pushed_paths(commits(fake)[-1])
    sync.push_now()  # waits for any scheduled push still running
    assert hub_files(fake)["metadata.jsonl"] == dataset.metadata_path.read_bytes()


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_stop_waits_for_a_push_in_flight_then_pushes_what_came_meanwhile(dataset, fake, photos):
    threads_before = set(threading.enumerate())
    sync = DatasetSync.start(dataset, repo_id=REPO, token=None, every_minutes=60, license="cc-by-4.0", hf_api=fake)
    sync.push_now()
    uploading, release = threading.Event(), threading.Event()

    def slow_upload(**_: object) -> None:
        fake.before.pop("create_commit")
        uploading.set()
        assert release.wait(timeout=30)

    fake.before["create_commit"] = slow_upload
    dataset.add(Example(photos[4], "dress"), source="upload")
    in_flight = sync.scheduler.trigger()
    assert uploading.wait(timeout=30)
    dataset.add(Example(photos[5], "hat"), source="upload")  # the upload holds no lock a write needs
    stopper = threading.Thread(target=sync.stop)
    stopper.start()
    stopper.join(timeout=0.3)
    assert stopper.is_alive(), "stop() did not wait for the push in flight"

    release.set()
    stopper.join(timeout=30)
    assert not stopper.is_alive() and in_flight.result(timeout=0) is not None
    assert len(commits(fake)) == 3  # the first push, the one in flight, the final one
    assert hub_files(fake)["metadata.jsonl"] == dataset.metadata_path.read_bytes()
    assert dataset.rows()[-1].file_name in pushed_paths(commits(fake)[-1])
    assert set(threading.enumerate()) <= threads_before


def test_stop_without_a_final_push_leaves_pending_files_and_no_thread(dataset, fake, start, photos):
    sync = start(dataset)
    sync.push_now()
    dataset.add(Example(photos[4], "dress"), source="upload")

    sync.stop(final_push=False)

    assert len(commits(fake)) == 1 and not sync.status()["running"]
    assert hub_files(fake)["metadata.jsonl"] != dataset.metadata_path.read_bytes()
    assert not any(t.name.startswith("dataset-sync") for t in threading.enumerate())


def test_a_sync_never_stopped_pushes_at_interpreter_exit(dataset, fake, photos, monkeypatch):
    at_exit: list[Callable[[], None]] = []
    monkeypatch.setattr(hub_sync.atexit, "register", at_exit.append)
    monkeypatch.setattr(hub_sync.atexit, "unregister", lambda hook: at_exit.remove(hook) if hook in at_exit else None)
    sync = DatasetSync.start(dataset, repo_id=REPO, token=None, every_minutes=60, license="cc-by-4.0", hf_api=fake)
    sync.push_now()
    dataset.add(Example(photos[4], "dress"), source="upload")

    [hook] = at_exit
    hook()  # what the interpreter runs at exit

    assert len(commits(fake)) == 2 and hub_files(fake)["metadata.jsonl"] == dataset.metadata_path.read_bytes()
    assert sync.scheduler.trigger().result() is None
    sync.stop()
    assert at_exit == []


def test_only_public_huggingface_hub_api_is_used():
    """CommitScheduler's private members change between huggingface_hub releases; none is touched."""
    source = Path(hub_sync.__file__).read_text(encoding="utf-8")
    assert not re.search(r"\._(run_scheduler|scheduler_thread|push_to_hub)\b", source)
    assert not re.search(r"from huggingface_hub\._|huggingface_hub\.[a-z_.]*\._", source)  # no private module


def test_open_sync_follows_the_settings(dataset, fake, tmp_path):
    assert open_sync(Settings.from_env({"CLASSIFR_HOME": str(tmp_path)}), dataset) is None

    settings = Settings.from_env({
        "CLASSIFR_HOME": str(tmp_path), "CLASSIFR_DATASET_REPO": REPO,
        "CLASSIFR_DATASET_SYNC_MINUTES": "15", "CLASSIFR_DATASET_LICENSE": "CC0-1.0",
    })
    with pytest.raises(ClassifrError, match=f"CLASSIFR_DATASET_REPO={REPO} needs HF_TOKEN"):
        open_sync(settings, dataset)
    assert dataset.write_guard is nullcontext

    sync = open_sync(settings, dataset, hf_api=fake, known=lambda: ["dress"])
    try:
        sync.push_now()
        assert sync.status()["every_minutes"] == 15
        card = DatasetCard(hub_files(fake)["README.md"].decode())
        assert card.data.license == "cc0-1.0" and "1 of these labels is not yet known" in card.text  # hat
    finally:
        sync.stop()


# --- the card --------------------------------------------------------------------------------


def test_the_card_lists_labels_sources_contributors_and_the_licence(dataset, photos):
    added = dataset.add_many([Example(p, label) for p, label in zip(photos[4:8], HOSTILE)], source="import")
    assert all(r.status == "added" for r in added)
    feedback = Feedback(predicted_label="sandal", score=0.7, model_version="v1")
    dataset.add(Example(photos[0], "hat", feedback=feedback), source="correction", contributor="ada")  # a conflict

    card = render_card(dataset, license="cc-by-4.0", repo_id=REPO)
    text = str(card)

    stats = dataset.stats()
    labels = {unescape(cells[0]): [int(c) for c in cells[1:]] for cells in table(text, "## Labels")}
    assert all(len(cells) == 4 for cells in table(text, "## Labels"))  # a `|` in a label split no row
    assert labels == {
        c["name"]: [c["by_split"].get("train", 0), c["by_split"].get("test", 0), c["total"]] for c in stats["categories"]
    }
    assert set(labels) >= set(HOSTILE)
    assert "\\*x\\*" in text and "a\\|b" in text and "www\\.example.com" in text
    sources = {unescape(cells[0]).strip("`"): int(cells[1]) for cells in table(text, "## Sources")}
    assert sources == {"import": 4, "upload": 4, "correction": 1, "confirmation": 0, "settlement": 0}
    assert "Contributors: 2 signed-in people, plus 6 rows added anonymously" in text
    assert "Conflicts: 1 image has more than one label" in text
    assert "grace-hopper" not in text  # a count, not names
    assert "shared under the licence **cc-by-4.0**" in text
    assert 'load_dataset("team/classifr-data", split="train")' in text


def test_the_card_yaml_is_card_data_only(dataset, photos):
    dataset.add(Example(photos[4], 'x: "y" - z #'), source="upload")  # YAML syntax in a label
    card = render_card(dataset, license="cc-by-4.0", repo_id=None)

    header = yaml.safe_load(str(card).split("---\n")[1])
    assert set(header) == {"license", "task_categories", "pretty_name", "size_categories", "tags", "configs"}
    assert header["license"] == "cc-by-4.0" and header["task_categories"] == ["image-classification"]
    assert header["size_categories"] == ["n<1K"] and header["pretty_name"] == "Classifr project dataset"
    [config] = header["configs"]
    assert config["data_files"] == [{"split": "train", "path": ["metadata.jsonl", "images/**"]}]
    assert DatasetCard(str(card)).data.to_dict() == card.data.to_dict()  # reads back the same
    assert 'load_dataset("imagefolder", data_dir=' in card.text


def test_the_card_columns_are_the_metadata_columns():
    fields = [f.name for f in dataclasses.fields(Row)]
    assert [name for name, _, _ in COLUMNS] == ["image", *fields[1:]] and fields[0] == "file_name"


def test_write_card_is_atomic_and_the_folder_still_loads(dataset, photos, tmp_path):
    import datasets

    feedback = Feedback(predicted_label="sandal", score=0.7, model_version="v1")
    dataset.add(Example(photos[4], "hat", feedback=feedback), source="correction")
    path = write_card(dataset, license="cc-by-4.0", repo_id=REPO)

    assert path == dataset.root / "README.md" and "configs:" in path.read_text()
    assert list((dataset.root / ".tmp").iterdir()) == []
    stats = dataset.stats()
    as_imagefolder = datasets.load_dataset("imagefolder", data_dir=str(dataset.root), cache_dir=str(tmp_path / "c1"))
    assert as_imagefolder["train"].num_rows == stats["total"] == 5
    # The way the Hub viewer reads it: through the card's `configs`, with the columns typed.
    as_repo = datasets.load_dataset(str(dataset.root), cache_dir=str(tmp_path / "c2"))["train"]
    assert dict(Counter(as_repo["label"])) == stats["by_label"]
    assert as_repo.features["predicted_label"].dtype == "string" and as_repo.features["score"].dtype == "float64"
    assert as_repo[0]["image"].size[0] > 0
