"""Durable records on a real full disk (a small tmpfs mounted as root) and with injected failures:
nothing acknowledged is lost, no record is torn, the app keeps predicting (docs/storage.md)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from classifr.core import storage
from classifr.core.storage import StorageError, StorageState, append_whole, storage_error, write_file_atomically
from classifr.data.dataset import Example, ProjectDataset
from tests.conftest import REPO_ROOT

PHOTOS_PER_WRITER = 12


@pytest.fixture(scope="module")
def photos(clothing_dir) -> list[Path]:
    return sorted((clothing_dir / "train").rglob("*.jpg"))


@pytest.fixture
def small_disk(tmp_path) -> Callable[[int], Path]:
    """`small_disk(kib)`: a new tmpfs of that size under tmp_path, unmounted afterwards. Skips
    where mounting is not permitted (not root, or a container without CAP_SYS_ADMIN)."""
    mounted: list[Path] = []

    def mount(kib: int) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip() or done.returncode}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Write a file until the disk is full; the file, to delete when space should come back."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as err:
        assert err.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def lines_on_disk(dataset: ProjectDataset) -> list[dict]:
    data = dataset.metadata_path.read_bytes() if dataset.metadata_path.exists() else b""
    assert not data or data.endswith(b"\n"), f"torn last record: {data[-80:]!r}"
    return [json.loads(line) for line in data.splitlines()]  # every line parses


def assert_one_line_disk_full(reason: str | None) -> None:
    assert reason and "\n" not in reason and reason.startswith("disk full: "), reason


def load_with_datasets(root: Path, cache: Path):
    import datasets

    return datasets.load_dataset("imagefolder", data_dir=str(root), cache_dir=str(cache))["train"]


# --- the storage helpers -------------------------------------------------------------------------


def test_an_append_that_fails_halfway_is_cut_back_and_says_disk_full(tmp_path, monkeypatch):
    path = tmp_path / "records.jsonl"
    append_whole(path, b'{"n": 1}\n', what="this record")
    real_write = os.write
    calls = []

    def half_then_full(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))  # a short write
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(storage.os, "write", half_then_full)
    with pytest.raises(StorageError) as raised:
        append_whole(path, b'{"n": 2, "padding": "' + b"x" * 200 + b'"}\n', what="this record")
    monkeypatch.undo()
    assert str(raised.value) == "disk full: this record was not stored" and raised.value.pauses
    assert calls[1] == calls[0] - calls[0] // 2  # the rest of the short write was tried
    assert path.read_bytes() == b'{"n": 1}\n'  # cut back: no partial record


def test_short_writes_are_continued_until_the_record_is_whole(tmp_path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(storage.os, "write", lambda fd, data: real_write(fd, bytes(data[: max(1, len(data) // 3)])))
    payload = b"".join(b'{"n": %d}\n' % n for n in range(100))
    size = append_whole(tmp_path / "a.jsonl", payload, what="rows")
    write_file_atomically(tmp_path / "b.bin", payload, tmp_path / "tmp", what="a file")
    assert size == len(payload) and (tmp_path / "a.jsonl").read_bytes() == payload
    assert (tmp_path / "b.bin").read_bytes() == payload and list((tmp_path / "tmp").iterdir()) == []


def test_an_atomic_write_that_fails_leaves_no_file_and_no_temporary(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(storage.os, "write", full)
    with pytest.raises(StorageError, match="^disk full: this photo was not stored$"):
        write_file_atomically(tmp_path / "images" / "a.jpg", b"x" * 1000, tmp_path / ".tmp", what="this photo")
    assert not (tmp_path / "images" / "a.jpg").exists() and list((tmp_path / ".tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("code", "start"),
    [(errno.ENOSPC, "disk full: "), (errno.EDQUOT, "disk full: "), (errno.EACCES, "permission denied: "),
     (errno.EROFS, "permission denied: "), (errno.EFBIG, "file size limit reached: "), (errno.EIO, "I/O error: ")],
)  # fmt: skip
def test_storage_errors_are_one_line_by_errno(code, start):
    error = storage_error(OSError(code, os.strerror(code), "/srv/home/dataset/metadata.jsonl"), "this photo")
    assert str(error).startswith(start + "this photo was not stored") and "\n" not in str(error)
    assert "/srv" not in str(error) and error.pauses and error.errno == code


def test_sqlite_disk_full_is_a_storage_error_and_other_sqlite_errors_are_not():
    import sqlite3

    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL
    assert str(storage_error(full, "a batch of predictions")) == "disk full: a batch of predictions was not stored"
    syntax = sqlite3.OperationalError("no such table: x")
    syntax.sqlite_errorcode = sqlite3.SQLITE_ERROR
    assert storage_error(syntax, "x") is None


def test_storing_resumes_when_space_comes_back(small_disk):
    disk = small_disk(512)
    state = StorageState(disk, "the project dataset")
    filler = fill(disk)
    assert state.failed(storage_error(OSError(errno.ENOSPC, "full"), "this photo")) is True
    assert state.failed(storage_error(OSError(errno.ENOSPC, "full"), "this photo")) is False  # logged once
    assert state.problem() == "disk full: the project dataset cannot be written"
    filler.unlink()
    assert state.problem() is None and not state.paused


@pytest.mark.slow  # a fresh interpreter: over 0.25 s
def test_a_file_size_limit_in_a_real_process_tears_no_record(tmp_path, photos):
    """RLIMIT_FSIZE: the kernel gives a short write, then EFBIG; the row is cut back, not torn."""
    dataset = ProjectDataset(tmp_path / "dataset")
    dataset.add_many([Example(p, "dress") for p in photos[:3]], source="upload")
    before = dataset.metadata_path.read_bytes()
    script = (
        "import io, json, resource, sys\n"
        "from PIL import Image\n"
        "from classifr.data.dataset import Example, ProjectDataset\n"
        "dataset = ProjectDataset(sys.argv[1])\n"
        "limit = dataset.metadata_path.stat().st_size + 100\n"  # a row is about 300 bytes
        "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))\n"
        "image = io.BytesIO(); Image.new('RGB', (32, 32), (200, 30, 30)).save(image, format='PNG')\n"
        "print(json.dumps(dataset.add(Example(image.getvalue(), 'dress', name='red.png'), source='upload').to_json()))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(dataset.root)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "rejected" and result["reason"].startswith("file size limit reached: this photo was not stored")
    assert dataset.metadata_path.read_bytes() == before  # no partial row
    assert ProjectDataset(dataset.root).stats()["total"] == 3
    assert list((dataset.root / ".tmp").iterdir()) == []


# --- the dataset on a real full disk ------------------------------------------------------------


@pytest.mark.slow  # 96 photos from 8 threads onto a tmpfs, then load_dataset: about 3 s
def test_filling_the_disk_while_eight_writers_contribute_loses_no_acknowledged_photo(small_disk, photos, tmp_path):
    disk = small_disk(1536)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * 400_000)  # freed at the end: space coming back
    dataset = ProjectDataset(disk / "dataset")
    results: dict[Path, object] = {}
    errors: list[BaseException] = []

    def contribute(writer: int) -> None:
        mine = photos[writer * PHOTOS_PER_WRITER : (writer + 1) * PHOTOS_PER_WRITER]
        try:
            for start in range(0, len(mine), 3):  # small requests, as the Teach tab sends them
                batch = mine[start : start + 3]
                for path, result in zip(batch, dataset.add_many([Example(p, f"worker-{writer}") for p in batch], source="upload")):
                    results[path] = result
        except BaseException as err:  # add_many must never raise for a full disk
            errors.append(err)

    threads = [threading.Thread(target=contribute, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == [] and len(results) == 8 * PHOTOS_PER_WRITER
    added = {path: r for path, r in results.items() if r.status == "added"}
    rejected = {path: r for path, r in results.items() if r.status == "rejected"}
    assert added and rejected, "the disk should have filled part way"
    for r in rejected.values():
        assert_one_line_disk_full(r.reason)

    rows = {row["sha256"]: row for row in lines_on_disk(dataset)}
    assert len(rows) == len(added)
    for path, r in added.items():  # every acknowledged photo is whole, with its row
        row = rows[r.sha256]
        stored = (dataset.root / row["file_name"]).read_bytes()
        assert hashlib.sha256(stored).hexdigest() == r.sha256 and row["label"] == r.label
    assert list((dataset.root / ".tmp").iterdir()) == []
    assert dataset.storage.paused
    assert load_with_datasets(dataset.root, tmp_path / "cache").num_rows == len(added)

    filler.unlink()
    path = next(iter(rejected))
    retry = dataset.add(Example(path, "worker-retry"), source="upload")
    assert retry.status == "added", retry  # not "already in the dataset"
    assert not dataset.storage.paused
    assert len(lines_on_disk(ProjectDataset(dataset.root))) == len(added) + 1


def test_a_full_disk_rejects_only_the_photos_that_do_not_fit(small_disk, photos):
    disk = small_disk(512)
    dataset = ProjectDataset(disk / "dataset")
    filler = fill(disk)
    os.truncate(filler, max(0, filler.stat().st_size - 70_000))  # room for about two photos
    results = dataset.add_many([Example(p, "dress") for p in photos[:6]], source="upload")
    statuses = [r.status for r in results]
    assert "added" in statuses and "rejected" in statuses
    assert statuses.index("rejected") > statuses.index("added")
    for r in results:
        if r.status == "rejected":
            assert_one_line_disk_full(r.reason)
    assert len(lines_on_disk(dataset)) == statuses.count("added")
    assert list((dataset.root / ".tmp").iterdir()) == []


# --- injected ENOSPC at each file of an add ----------------------------------------------------


def _enospc_when(monkeypatch, target: Callable[[str, bytes], bool]) -> None:
    """os.write raises ENOSPC when `target(path of the fd, data)` says so (a real syscall otherwise)."""
    real_write = os.write

    def write(fd, data):
        if target(os.readlink(f"/proc/self/fd/{fd}"), bytes(data)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(storage.os, "write", write)


@pytest.mark.parametrize("where", ["image", "row", "category"])
def test_disk_full_on_one_file_rejects_only_that_photo_with_one_line(tmp_path, photos, monkeypatch, where):
    dataset = ProjectDataset(tmp_path / "dataset")
    first, second, third = photos[:3]
    # The hash of the bytes the dataset stores (which may differ from the file's: metadata removed).
    second_sha = ProjectDataset(tmp_path / "scratch").add(Example(second, "x"), source="upload").sha256
    dataset.create_category("dress")
    label = "beanie" if where == "category" else "dress"  # a new category only for the second photo
    targets = {
        "image": lambda path, data: f"/.tmp/{second_sha}" in path,
        "row": lambda path, data: path.endswith("/metadata.jsonl") and second_sha.encode() in data,
        "category": lambda path, data: path.endswith("/categories.jsonl"),
    }
    _enospc_when(monkeypatch, targets[where])
    results = dataset.add_many([Example(first, "dress"), Example(second, label), Example(third, "dress")], source="upload")
    monkeypatch.undo()
    assert [r.status for r in results] == ["added", "rejected", "added"]
    what = "the category 'beanie'" if where == "category" else "this photo"
    assert results[1].reason == f"disk full: {what} was not stored"
    assert len(lines_on_disk(dataset)) == 2 and list((dataset.root / ".tmp").iterdir()) == []
    assert not list((dataset.root / "images").glob(f"*/{second_sha}.*")), "no image without its row"
    assert dataset.storage.paused is False  # the third photo's row was stored after the failure
    retry = dataset.add(Example(second, label), source="upload")
    assert retry.status == "added" and retry.sha256 == second_sha  # not "already in the dataset"
    assert len(lines_on_disk(ProjectDataset(dataset.root))) == 3


# --- the check at opening ----------------------------------------------------------------------


def test_a_torn_tail_from_an_older_build_is_quarantined_and_reported(tmp_path, photos):
    dataset = ProjectDataset(tmp_path / "dataset")
    dataset.add_many([Example(p, "dress") for p in photos[:4]], source="upload")
    dataset.create_category("beanie")
    torn_row, torn_category = b'{"file_name": "images/ab/abcdef.jpg", "lab', b'{"name": "sca'
    with open(dataset.metadata_path, "ab") as out:
        out.write(torn_row)
    with open(dataset.categories_path, "ab") as out:
        out.write(torn_category)
    (dataset.root / ".tmp" / "leftover.jpg.123.tmp").write_bytes(b"")

    reopened = ProjectDataset(dataset.root)
    assert len(reopened.repairs) == 3, reopened.repairs
    assert reopened.repairs[0] == "removed 1 leftover temporary files"
    assert reopened.repairs[1].startswith("metadata.jsonl: moved a torn last line (42 bytes) to .quarantine/")
    quarantined = {p.name.split(".")[0]: p.read_bytes() for p in (dataset.root / ".quarantine").iterdir()}
    assert quarantined == {"metadata": torn_row, "categories": torn_category}
    assert dataset.metadata_path.read_bytes().endswith(b"\n") and len(lines_on_disk(reopened)) == 4
    assert [c.name for c in reopened.categories()] == ["beanie", "dress"]
    assert list((dataset.root / ".tmp").iterdir()) == []
    assert ProjectDataset(dataset.root).repairs == ()  # repaired once


@pytest.mark.slow  # load_dataset: over 0.25 s
def test_after_the_repair_the_dataset_loads_with_datasets(tmp_path, photos):
    dataset = ProjectDataset(tmp_path / "dataset")
    dataset.add_many([Example(p, "dress") for p in photos[:4]], source="upload")
    with open(dataset.metadata_path, "ab") as out:
        out.write(b'{"file_name": "images/ab/abc')
    ProjectDataset(dataset.root)
    assert load_with_datasets(dataset.root, tmp_path / "cache").num_rows == 4


def test_unreadable_whole_lines_are_reported(tmp_path, photos):
    dataset = ProjectDataset(tmp_path / "dataset")
    dataset.add(Example(photos[0], "dress"), source="upload")
    with open(dataset.metadata_path, "ab") as out:
        out.write(b"not json\n[1, 2]\n")
    reopened = ProjectDataset(dataset.root)
    assert reopened.repairs == ("metadata.jsonl: 2 unreadable lines skipped",)
    assert len(reopened.rows()) == 1


def test_the_quarantine_is_not_pushed_to_the_hub():
    from huggingface_hub.utils import filter_repo_objects

    from classifr.data.hub_sync import IGNORE_PATTERNS

    names = [".quarantine/metadata.jsonl.20250101T000000.000000Z.torn", "metadata.jsonl", "images/ab/ab.jpg"]
    assert list(filter_repo_objects(names, ignore_patterns=IGNORE_PATTERNS)) == ["metadata.jsonl", "images/ab/ab.jpg"]


# --- the app and the CLI on a full disk --------------------------------------------------------


@pytest.mark.slow  # a tiny model, loaded twice
def test_the_app_starts_and_predicts_on_a_full_disk_and_resumes_storing(small_disk, tiny_default_version, photos):
    from classifr.app.project import open_service
    from classifr.core.config import Settings

    disk = small_disk(8192)
    settings = Settings(home=disk / "home", num_threads=1, backend="torch")
    open_service(settings, default_version=tiny_default_version).close()  # v1 published while there was room
    for path in (disk / "home" / "monitoring").iterdir():
        path.unlink()  # the log must be created on the full disk
    filler = fill(disk)

    service = open_service(settings, default_version=tiny_default_version)
    try:
        assert service.predict(photos[0]).ok
        assert service.flush_prediction_log() and service.prediction_log.failed == 1  # dropped, counted
        status = service.health()["storage"]
        assert status["paused"] and status["reason"] == "disk full: the prediction log cannot be written"
        [rejected] = service.add_examples([photos[1]], "dress")
        assert_one_line_disk_full(rejected.reason)

        filler.unlink()
        assert service.storage_status()["paused"] is False  # space is back
        served = service.predict(photos[2])
        assert served.ok and service.flush_prediction_log()
        assert not service.storage_status()["paused"]
        import sqlite3

        with sqlite3.connect(settings.prediction_log_path) as conn:
            ids = [row[0] for row in conn.execute("SELECT id FROM predictions")]
        assert ids == [served.id]  # writing resumed by itself
        [added] = service.add_examples([photos[1]], "dress")
        assert added.status == "added"
    finally:
        service.close()


@pytest.mark.slow  # the real command line, in a fresh interpreter
def test_the_cli_on_a_full_disk_says_one_line_and_exits_1(small_disk, tiny_vit_dir, photos):
    disk = small_disk(1024)
    env = {**os.environ, "CLASSIFR_HOME": str(disk / "home"), "CLASSIFR_MODEL": str(tiny_vit_dir)}
    fill(disk)
    done = subprocess.run(
        [sys.executable, "-m", "classifr", "dataset", "add", "--label", "dress", str(photos[0])],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("classifr: error: disk full: "), done.stderr


def test_an_oserror_that_reaches_the_cli_is_one_line(monkeypatch, capsys):
    from classifr import cli

    def full(args, settings):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/somewhere/file")

    monkeypatch.setitem(cli.COMMANDS, "versions", full)
    assert cli.main(["versions"]) == 1
    assert capsys.readouterr().err == "classifr: error: disk full: the result was not stored\n"


@pytest.mark.slow  # imports the training script (torch)
def test_a_training_runs_progress_keeps_whole_lines_and_survives_a_full_disk(tmp_path, monkeypatch, caplog):
    from training.train import _progress_writer

    path = tmp_path / "progress.jsonl"
    write = _progress_writer(path)
    write("embedding", 0.25)

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(storage.os, "write", full)
    write("embedding", 0.5)  # logged, not raised: the run goes on
    monkeypatch.undo()
    assert path.read_text() == '{"stage": "embedding", "fraction": 0.25}\n'
    assert "disk full: the training progress was not stored" in caplog.text


def test_the_ui_line_says_storing_is_paused_and_why_and_nothing_otherwise():
    from types import SimpleNamespace

    from classifr.ui.storing import paused_notice

    def service(paused, reason=None):
        return SimpleNamespace(storage_status=lambda: {"paused": paused, "reason": reason, "free_bytes": 0, "repairs": []})

    line = paused_notice(service(True, "disk full: the project dataset cannot be written"))
    assert line.startswith("**Storing is paused** (disk full: the project dataset cannot be written)")
    assert "Predictions still work" in line and "\n" not in line
    assert paused_notice(service(False)) == ""
