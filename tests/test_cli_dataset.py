"""`classifr dataset ...` on a fresh project dataset and real photos, run in this process through
`classifr.cli.main` (tests/test_cli.py runs the real entry point once as a subprocess).

Commands that need the serving model's labels run on a home whose registry is the real bootstrapped
v1; the label checks run on a home without any version (no known labels), where they answer the same.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.test_cli import run_cli


@pytest.fixture
def home(fresh_home):
    return fresh_home


@pytest.mark.slow
def test_import_a_clothing_folder_then_stats(home, clothing_dir):
    """The 341 photos of clothing-small/validation: every one imported, stats count them per label."""
    done = run_cli(home, "dataset", "import", clothing_dir / "validation", "--json", "--quiet")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    files = Counter(p.parent.name for p in (clothing_dir / "validation").rglob("*.jpg"))
    assert report["added"] == sum(files.values()) == 341 and report["rejected"] == 0
    stats = json.loads(run_cli(home, "dataset", "stats", "--json").stdout)
    assert stats["total"] == 341 and stats["by_label"] == dict(sorted(files.items()))
    assert stats["by_source"] == {"import": 341}
    assert 0.10 < stats["by_split"]["test"] / 341 < 0.20
    pending = {c["name"]: c["pending"] for c in stats["categories"]}
    assert pending["hat"] is True and pending["t-shirt"] is True  # ImageNet has neither label
    assert len(pending) == 10


@pytest.mark.slow
def test_add_reports_each_file_and_fails_on_a_bad_one(home, clothing_dir, tmp_path):
    """Two real photos and a text file named .jpg: two added, one error line, exit 1."""
    photos = sorted((clothing_dir / "test" / "hat").glob("*.jpg"))[:2]
    bad = tmp_path / "notes.jpg"
    bad.write_text("hello")
    done = run_cli(home, "dataset", "add", *photos, bad, "--label", "Beanie", "--json")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    results = json.loads(done.stdout)
    assert [r["status"] for r in results] == ["added", "added", "rejected"]
    assert done.stderr.strip().splitlines() == [f"classifr: error: {results[2]['reason']}"]
    again = run_cli(home, "dataset", "add", photos[0], "--label", "beanie", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)[0]["status"] == "duplicate"
    stats = json.loads(run_cli(home, "dataset", "stats", "--json").stdout)
    assert stats["by_label"] == {"Beanie": 2} and stats["categories"][0]["pending"] is True


@pytest.mark.parametrize("label", ["../x", "a/b", "", "x" * 10_000, "bell\x07", "<img src=x onerror=alert(1)>"])
def test_a_bad_label_is_one_error_line_and_writes_nothing(tmp_path, sandal_photo, label):
    home = tmp_path / "home"
    done = run_cli(home, "dataset", "add", sandal_photo, "--label", label)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "label" in done.stderr or "category" in done.stderr
    assert not (home / "dataset" / "metadata.jsonl").exists()
    assert not (home / "dataset" / "images").exists()


@pytest.mark.slow
def test_a_model_label_keeps_its_spelling_and_is_not_pending(home, sandal_photo):
    done = run_cli(home, "dataset", "add", sandal_photo, "--label", "SANDAL", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["label"] == "sandal"
    stats = json.loads(run_cli(home, "dataset", "stats", "--json").stdout)
    assert stats["categories"] == [
        {"name": "sandal", "pending": False, "total": 1, "by_source": {"upload": 1}, "by_split": stats["categories"][0]["by_split"],
         "held_out": stats["categories"][0]["by_split"].get("test", 0)}  # one photo: held out only by the hash share
    ]


def test_import_of_a_missing_source_is_one_line(tmp_path):
    done = run_cli(tmp_path / "home", "dataset", "import", tmp_path / "nowhere")
    assert done.returncode == 1 and "Traceback" not in done.stderr and "nowhere" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
