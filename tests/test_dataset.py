"""The project dataset on real photos and real files: dedup, conflicts, categories, safe writes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from classifr.core.errors import ClassifrError, LabelError
from classifr.core.images import metadata_free_encoding, read_image
from classifr.data.dataset import (
    Example,
    Feedback,
    ProjectDataset,
    normalize_contributor,
    split_of,
)
from tests.conftest import REPO_ROOT


@pytest.fixture
def dataset(tmp_path) -> ProjectDataset:
    return ProjectDataset(tmp_path / "dataset")


@pytest.fixture(scope="module")
def photos(clothing_dir) -> list[Path]:
    return sorted((clothing_dir / "train").rglob("*.jpg"))


def _lines(dataset: ProjectDataset) -> list[dict]:
    return [json.loads(line) for line in dataset.metadata_path.read_text().splitlines()]


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_an_added_photo_is_stored_once_by_hash_with_a_full_row(dataset, photos):
    photo = photos[0]
    result = dataset.add(Example(photo, "dress"), source="upload", contributor="ada")
    assert result.status == "added" and result.split in ("train", "test")
    [row] = _lines(dataset)
    assert row["file_name"] == f"images/{result.sha256[:2]}/{result.sha256}.jpg"
    # The photo without metadata (docs/privacy.md; this one has none: kept as it is), named by its hash.
    stored = (dataset.root / row["file_name"]).read_bytes()
    assert stored == metadata_free_encoding(read_image(photo))[0] and hashlib.sha256(stored).hexdigest() == result.sha256
    assert row["label"] == "dress" and row["source"] == "upload" and row["contributor"] == "ada"
    assert row["split"] == split_of(row["sha256"])
    assert row["predicted_label"] is None and row["score"] is None and row["model_version"] is None
    assert row["created_at"].endswith("+00:00")


def test_same_image_same_label_twice_is_one_row(dataset, photos):
    first = dataset.add(Example(photos[0], "dress"), source="upload")
    again = dataset.add(Example(photos[0].read_bytes(), "DRESS"), source="upload")  # bytes, other case
    assert (first.status, again.status) == ("added", "duplicate")
    assert again.label == "dress" and len(_lines(dataset)) == 1


def test_same_image_other_label_is_kept_and_reported_as_a_conflict(dataset, photos):
    dataset.add(Example(photos[0], "dress"), source="upload")
    second = dataset.add(Example(photos[0], "skirt"), source="upload")
    assert second.status == "added" and second.conflicts == ("dress",)
    assert len(_lines(dataset)) == 2 and len(list((dataset.root / "images").rglob("*.jpg"))) == 1
    assert dataset.conflicts() == [{"sha256": second.sha256, "labels": ["dress", "skirt"]}]
    assert dataset.stats()["images"] == 1 and dataset.stats()["total"] == 2


def test_a_correction_records_what_the_model_said(dataset, photos):
    feedback = Feedback(predicted_label="sandal", score=0.42, model_version="v1")
    result = dataset.add(Example(photos[0], "shoes", feedback=feedback), source="correction")
    row = _lines(dataset)[0]
    assert result.status == "added"
    assert (row["source"], row["predicted_label"], row["score"], row["model_version"]) == ("correction", "sandal", 0.42, "v1")


def test_feedback_without_the_prediction_or_with_a_bad_score_is_refused(dataset, photos):
    assert dataset.add(Example(photos[0], "shoes"), source="correction").status == "rejected"
    with pytest.raises(ClassifrError, match="probability"):
        Feedback(predicted_label="sandal", score=1.5, model_version="v1")
    with pytest.raises(ClassifrError, match="source must be one of"):
        dataset.add(Example(photos[0], "shoes"), source="scraped")
    assert not dataset.metadata_path.exists()


def test_in_memory_images_are_stored_as_png_named_by_their_bytes(dataset):
    red = Image.new("RGB", (40, 30), (255, 0, 0))
    first = dataset.add(Example(red, "red"), source="upload")
    again = dataset.add(Example(red.copy(), "red"), source="upload")
    assert first.status == "added" and again.status == "duplicate"
    [row] = _lines(dataset)
    assert row["file_name"].endswith(".png")
    assert Image.open(dataset.root / row["file_name"]).size == (40, 30)


@pytest.mark.parametrize(
    "label",
    ["../x", "a/b", "a\\b", "", "   ", "x" * 10_000, "tab\there", "new\nline", "<script>alert(1)</script>", "..",
     "New category…"],
    ids=["dotdot-slash", "slash", "backslash", "empty", "blank", "10k-chars", "tab", "newline", "html", "dotdot",
         "ui-sentinel"],
)
def test_bad_labels_are_refused_and_nothing_is_written(dataset, photos, tmp_path, label):
    before = _files_under(tmp_path)
    result = dataset.add(Example(photos[0], label), source="upload")
    assert result.status == "rejected" and result.reason
    with pytest.raises(LabelError):
        dataset.create_category(label)
    # Only the lock file and the empty temp folder exist; no image, row or category was written.
    assert {p.name for p in _files_under(tmp_path) - before} <= {".lock"}
    assert not dataset.metadata_path.exists() and not dataset.categories_path.exists()


def test_unreadable_images_are_refused_with_the_reason_and_the_rest_go_in(dataset, photos, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    truncated = tmp_path / "half.jpg"
    truncated.write_bytes(photos[1].read_bytes()[:3000])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    results = dataset.add_many(
        [Example(text, "hat"), Example(truncated, "hat"), Example(empty, "hat"), Example(photos[2], "hat")],
        source="upload",
    )
    assert [r.status for r in results] == ["rejected", "rejected", "rejected", "added"]
    assert "notes.jpg" in results[0].reason and "half.jpg" in results[1].reason and "empty" in results[2].reason
    assert len(_lines(dataset)) == 1 and len(list((dataset.root / "images").rglob("*.*"))) == 1


def test_huge_images_are_refused_before_decoding(tmp_path):
    from classifr.core.images import ImageLimits

    dataset = ProjectDataset(tmp_path / "dataset", limits=ImageLimits(max_pixels=10_000))
    big = tmp_path / "big.png"
    Image.new("RGB", (200, 200)).save(big)
    result = dataset.add(Example(big, "big"), source="upload")
    assert result.status == "rejected" and "the limit is 10,000" in result.reason
    assert not dataset.metadata_path.exists()


def test_categories_are_unique_ignoring_case_and_pending_until_the_model_knows_them(dataset, photos):
    created = dataset.create_category("  Beanie ", contributor="ada")
    assert created.name == "Beanie"
    with pytest.raises(LabelError, match="already exists as 'Beanie'"):
        dataset.create_category("beanie")
    with pytest.raises(LabelError, match="already exists as 'sandal'"):
        dataset.create_category("Sandal", known=["sandal", "dress"])
    dataset.add(Example(photos[0], "beanie"), source="upload")  # the existing spelling is used
    dataset.add(Example(photos[1], "Sandal"), source="upload", known=["sandal"])
    stats = {c.name: c for c in dataset.categories(known=["sandal"])}
    assert set(stats) == {"Beanie", "sandal"}
    assert stats["Beanie"].pending and stats["Beanie"].total == 1 and stats["Beanie"].by_source == {"upload": 1}
    assert not stats["sandal"].pending


def test_stats_have_the_design_shape(dataset, photos):
    dataset.add_many([Example(p, p.parent.name) for p in photos[:20]], source="import")
    stats = dataset.stats()
    assert {"total", "by_label", "by_source", "by_split"} <= stats.keys()
    assert stats["total"] == 20 and sum(stats["by_label"].values()) == 20
    assert stats["by_source"] == {"import": 20} and sum(stats["by_split"].values()) == 20


def test_contributor_names_are_checked():
    assert normalize_contributor(None) == "anonymous" and normalize_contributor("  ") == "anonymous"
    assert normalize_contributor(" ada ") == "ada"
    with pytest.raises(ClassifrError, match="control characters"):
        normalize_contributor("eve\x00")


def test_split_is_about_85_15_and_fixed_by_the_hash(photos):
    import hashlib

    splits = [split_of(hashlib.sha256(p.read_bytes()).hexdigest()) for p in photos[:1000]]
    assert 0.11 < splits.count("test") / len(splits) < 0.19


def test_a_second_instance_sees_what_the_first_wrote(dataset, photos):
    other = ProjectDataset(dataset.root)
    dataset.add(Example(photos[0], "dress"), source="upload")
    assert other.add(Example(photos[0], "dress"), source="upload").status == "duplicate"
    other.create_category("beanie")
    with pytest.raises(LabelError):
        dataset.create_category("Beanie")


def test_a_torn_last_line_is_cut_off_before_the_next_append(dataset, photos):
    """A crash in the middle of a row write leaves half a line; the next writer removes it."""
    dataset.add(Example(photos[0], "dress"), source="upload")
    with open(dataset.metadata_path, "ab") as out:
        out.write(b'{"file_name": "images/zz/half')
    reopened = ProjectDataset(dataset.root)
    assert len(reopened.rows()) == 1  # the torn line is not a row
    reopened.add(Example(photos[1], "dress"), source="upload")
    assert len(_lines(reopened)) == 2  # every line parses


def test_an_image_without_a_row_is_harmless_and_reused(dataset, photos):
    """A crash after the image write but before its row: the image is stored again by the next add."""
    first = dataset.add(Example(photos[0], "dress"), source="upload")
    dataset.metadata_path.unlink()
    reopened = ProjectDataset(dataset.root)
    assert reopened.rows() == []
    again = reopened.add(Example(photos[0], "dress"), source="upload")
    assert again.status == "added" and again.sha256 == first.sha256


ADD_SCRIPT = """
import sys
from pathlib import Path
from classifr.data.dataset import Example, ProjectDataset
root, label, *paths = sys.argv[1:]
dataset = ProjectDataset(Path(root))
for path in paths:  # one add per image: 50 separate lock round trips per process
    result = dataset.add(Example(Path(path), label), source="upload")
    assert result.status == "added", result
"""


@pytest.mark.slow  # 400 adds, each with its fsyncs, from 8 fresh interpreters: seconds
def test_eight_processes_adding_fifty_each_give_exactly_400_rows(dataset, photos):
    """8 processes x 50 single adds at once on one folder: 400 rows, 400 readable images, no torn line."""
    chosen = photos[:400]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", ADD_SCRIPT, str(dataset.root), f"worker-{n}", *map(str, chosen[n * 50 : (n + 1) * 50])],
            cwd=REPO_ROOT,
        )
        for n in range(8)
    ]
    assert [p.wait(timeout=300) for p in processes] == [0] * 8
    lines = _lines(dataset)
    assert len(lines) == 400 and len({line["sha256"] for line in lines}) == 400
    assert {line["label"] for line in lines} == {f"worker-{n}" for n in range(8)}
    for line in lines:
        with Image.open(dataset.root / line["file_name"]) as img:
            img.load()
    assert ProjectDataset(dataset.root).stats()["total"] == 400


KILL_SCRIPT = """
import sys
from pathlib import Path
from classifr.data.dataset import Example, ProjectDataset
root, *paths = sys.argv[1:]
ProjectDataset(Path(root)).add_many([Example(Path(p), Path(p).parent.name) for p in paths], source="import")
"""


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_a_writer_killed_mid_import_leaves_only_complete_rows_with_their_images(dataset, photos):
    """SIGKILL a process while it imports; every row left points at a complete, readable image."""
    process = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(dataset.root), *map(str, photos[:1500])], cwd=REPO_ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not dataset.metadata_path.exists() or dataset.metadata_path.stat().st_size < 20_000):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    survivor = ProjectDataset(dataset.root)
    rows = survivor.rows()
    assert 0 < len(rows) < 1500
    for row in rows:
        with Image.open(dataset.root / row.file_name) as img:
            img.load()
    survivor.add(Example(photos[1600], "dress"), source="upload")
    assert len(_lines(survivor)) == len(rows) + 1


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_load_dataset_reads_the_folder_back_with_the_same_counts(dataset, photos, tmp_path):
    import datasets

    dataset.add_many([Example(p, p.parent.name) for p in photos[:60]], source="import")
    feedback = Feedback(predicted_label="sandal", score=0.9, model_version="v1")
    dataset.add(Example(photos[0], "skirt", feedback=feedback), source="correction")  # a conflict row too
    loaded = datasets.load_dataset("imagefolder", data_dir=str(dataset.root), cache_dir=str(tmp_path / "cache"))["train"]
    stats = dataset.stats()
    assert loaded.num_rows == stats["total"] == 61
    from collections import Counter

    assert dict(Counter(loaded["label"])) == stats["by_label"]
    assert dict(Counter(loaded["source"])) == stats["by_source"]
    assert loaded[0]["image"].size[0] > 0
