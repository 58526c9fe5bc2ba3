"""Benchmark report folders under `CLASSIFR_HOME/benchmarks`, read for the app.

`classifr benchmark` (study.run) writes each study into its own folder: `report.md`, the
plots as PNG, `study.json` and `runs.json`. The app only reads them, and knows nothing of
training: a folder is a report when it holds a `report.md`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from classifr.core.errors import ClassifrError

logger = logging.getLogger(__name__)

REPORT_FILE = "report.md"
_IMAGE_LINK = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_NAME = re.compile(r"^[\w.-]+$")  # a folder name, never a path


@dataclass(frozen=True)
class BenchmarkReport:
    name: str
    markdown: str  # report.md with its image links replaced by their captions (the images come separately)
    images: tuple[tuple[Path, str], ...]  # (PNG, caption) in the order the report shows them


def benchmarks_folder(home: Path) -> Path:
    return Path(home) / "benchmarks"


def list_reports(home: Path) -> list[str]:
    """Report folder names, newest first (the default names start with the time)."""
    folder = benchmarks_folder(home)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and (p / REPORT_FILE).is_file()]
    return [p.name for p in sorted(found, key=lambda p: ((p / REPORT_FILE).stat().st_mtime, p.name), reverse=True)]


def read_report(home: Path, name: str) -> BenchmarkReport:
    """The report `name`; ClassifrError for a name that is not one of `list_reports`."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ClassifrError(f"not a benchmark report name: {name!r}")
    folder = benchmarks_folder(home) / name
    path = folder / REPORT_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ClassifrError(f"no benchmark report {name!r} in {benchmarks_folder(home)}: {err.strerror or err}") from None
    images = []
    for caption, link in _IMAGE_LINK.findall(text):
        image = (folder / link).resolve()
        if image.parent == folder.resolve() and image.suffix.lower() == ".png" and image.is_file():
            images.append((image, caption or image.stem))
    markdown = _IMAGE_LINK.sub(lambda m: f"*(plot: {m.group(1) or m.group(2)}, in the gallery below)*", text)
    return BenchmarkReport(name, markdown, tuple(images))
