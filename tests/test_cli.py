"""The `classifr` command, run as a user runs it (a subprocess), on the real default model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def run_cli(home, *args):
    env = {**os.environ, "CLASSIFR_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "classifr", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_predict_json_on_real_photos_and_a_bad_file(project_home, sandal_photo, tmp_path):
    """A good photo and a text file named .jpg: JSON for both, one error line, exit 1."""
    bad = tmp_path / "not-a-photo.jpg"
    bad.write_text("hello")
    done = run_cli(project_home, "predict", str(sandal_photo), str(bad), "--top-k", "3", "--json")
    assert done.returncode == 1
    good, broken = json.loads(done.stdout)
    assert good["image"] == str(sandal_photo) and good["version"] == "v1"
    assert [p["label"] for p in good["predictions"]][0] == "sandal" and len(good["predictions"]) == 3
    assert good["predictions"][0]["score"] > 0.8
    assert broken["image"] == str(bad) and "not-a-photo.jpg" in broken["error"]
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"classifr: error: {broken['error']}"]


def test_predict_text_output(project_home, sample_photos):
    done = run_cli(project_home, "predict", str(sample_photos["palace"]), str(sample_photos["daisy"]))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert "[v1]: palace" in lines[0] and "[v1]: daisy" in lines[1]


def test_missing_file_is_one_line_and_non_zero(project_home, tmp_path):
    done = run_cli(project_home, "predict", str(tmp_path / "nope.png"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "nope.png" in done.stderr


def test_versions_json_shape(project_home):
    done = run_cli(project_home, "versions", "--json")
    assert done.returncode == 0, done.stderr
    [v1] = json.loads(done.stdout)
    assert {k: v1[k] for k in ("version", "aliases", "num_labels", "parent")} == {
        "version": "v1", "aliases": ["production"], "num_labels": 1000, "parent": None}
    assert v1["created_at"].endswith("Z")


def test_unknown_version_and_bad_flags(project_home):
    done = run_cli(project_home, "promote", "v9")
    assert done.returncode == 1 and "v9" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    usage = run_cli(project_home, "predict", "x.jpg", "--top-k", "0")
    assert usage.returncode == 2 and "--top-k must be at least 1, got 0" in usage.stderr


@pytest.mark.parametrize("method", ["gradcam", "ig"])
def test_explain_writes_an_overlay_the_size_of_the_photo(project_home, sandal_photo, tmp_path, method):
    from PIL import Image

    out = tmp_path / f"{method}.png"
    done = run_cli(project_home, "explain", str(sandal_photo), "--method", method, "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["method"] == method and summary["target"] == "sandal" and summary["version"] == "v1"
    assert (summary["convergence_delta"] is not None) == (method == "ig")
    with Image.open(out) as written:
        assert written.size == Image.open(sandal_photo).size


def test_explain_layers_and_bad_requests(project_home, sandal_photo, tmp_path):
    out = tmp_path / "layers.png"
    done = run_cli(project_home, "explain", str(sandal_photo), "--method", "layers", "--out", str(out))
    assert done.returncode == 0 and out.is_file() and "layers" in done.stdout
    unknown = run_cli(project_home, "explain", str(sandal_photo), "--target", "unicorn", "--out", str(out))
    assert unknown.returncode == 1 and "unknown label 'unicorn'" in unknown.stderr and "Traceback" not in unknown.stderr
    bad_out = run_cli(project_home, "explain", str(sandal_photo), "--out", str(tmp_path / "x.gif"))
    assert bad_out.returncode == 2 and "--out must end in .png" in bad_out.stderr
