"""The app's view of benchmark reports: listing, reading, and refusing names that are paths."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from PIL import Image

from classifr.versions.study_reports import list_reports, read_report
from classifr.core.errors import ClassifrError
from classifr.ui.study import NO_REPORT, make_benchmark_report

REPORT = """# Benchmark

| run | accuracy |
|---|---|
| head lite0 | 91.0% |

Recommendation: choose head lite0.

![Accuracy against training time](accuracy_vs_train_time.png)
![escape](../secret.png)
![missing](nowhere.png)
"""


def _report(home, name: str, mtime: float) -> None:
    folder = home / "benchmarks" / name
    folder.mkdir(parents=True)
    (folder / "report.md").write_text(REPORT, encoding="utf-8")
    Image.new("RGB", (40, 30), "red").save(folder / "accuracy_vs_train_time.png")
    os.utime(folder / "report.md", (mtime, mtime))


def test_reports_are_listed_newest_first_and_read_with_their_plots(tmp_path):
    assert list_reports(tmp_path) == []
    _report(tmp_path, "20261201-100000-quick", 1_000)
    _report(tmp_path, "20261202-100000-quick", 2_000)
    (tmp_path / "benchmarks" / "not-a-report").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "benchmarks" / "secret.png")
    assert list_reports(tmp_path) == ["20261202-100000-quick", "20261201-100000-quick"]

    report = read_report(tmp_path, "20261202-100000-quick")
    assert [(path.name, caption) for path, caption in report.images] == [
        ("accuracy_vs_train_time.png", "Accuracy against training time")]  # no escape, no missing file
    assert "| head lite0 | 91.0% |" in report.markdown and "](" not in report.markdown


@pytest.mark.parametrize("name", ["../benchmarks", "a/b", "", "nope"])
def test_a_name_that_is_a_path_or_unknown_is_refused(tmp_path, name):
    _report(tmp_path, "20261202-100000-quick", 2_000)
    with pytest.raises(ClassifrError):
        read_report(tmp_path, name)


def test_the_model_tab_api_shows_the_newest_report_or_says_how_to_make_one(tmp_path):
    service = SimpleNamespace(study_reports=lambda: list_reports(tmp_path), study_report=lambda name: read_report(tmp_path, name))
    benchmark_report = make_benchmark_report(service)
    assert benchmark_report(None) == (NO_REPORT, [])
    _report(tmp_path, "20261202-100000-quick", 2_000)
    markdown, plots = benchmark_report("")
    assert "head lite0" in markdown
    assert [(image.size, caption) for image, caption in plots] == [((40, 30), "Accuracy against training time")]
