"""The wheel holds every package and every file the packages read at run time from their own folder.

A file read through `Path(__file__)` (the dataset card template, the metric scripts evaluate loads
by path) works from a source checkout whether or not pyproject.toml declares it; only a wheel shows
that a non-editable install has it. The wheel is built the way pyproject.toml builds it, with
`pip wheel --no-deps --no-build-isolation` (offline: setuptools comes from the environment).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a real build and install: seconds

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_ROOTS = ("classifr", "training", "study")
PACKAGES = (
    "classifr", "classifr.core", "classifr.versions", "classifr.inference", "classifr.data",
    "classifr.monitoring", "classifr.app", "classifr.ui", "training", "study",
)
METRICS = ("accuracy", "f1", "precision", "recall", "confusion_matrix")
# Read at run time from the package's own folder (hub_sync.TEMPLATE_PATH, training.metrics.MODULES_DIR).
RUNTIME_FILES = (
    "classifr/data/templates/dataset_card.md",
    *(f"training/evaluate_modules/{name}/{name}.py" for name in METRICS),
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # setuptools builds in the source tree (build/, classifr.egg-info/); this extra config file puts
    # both in the temporary folder instead, so the test leaves nothing in the checkout.
    extra_config = out / "setup.cfg"
    extra_config.write_text(f"[build]\nbuild_base = {out / 'build'}\n[egg_info]\negg_base = {out}\n", encoding="utf-8")
    env = {**os.environ, "DIST_EXTRA_CONFIG": str(extra_config), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    had_build_dir = (ROOT / "build").exists()
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out / "dist"), "."],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert had_build_dir or not (ROOT / "build").exists(), "the build wrote build/ into the checkout"
    [built] = (out / "dist").glob("classifr-*.whl")
    return built


@pytest.fixture(scope="module")
def names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_the_wheel_has_every_package(names):
    missing = [p for p in PACKAGES if f"{p.replace('.', '/')}/__init__.py" not in names]
    assert missing == []


def test_the_wheel_has_every_runtime_file(names):
    assert [f for f in RUNTIME_FILES if f not in names] == []


def test_the_wheel_has_every_source_file_of_the_packages(names):
    """Any file a package may open from its folder: every module (so a folder that lost its
    __init__.py shows) and every data file (so a new one not declared as package data shows)."""
    skipped = {".pyc", ".pyi"}  # bytecode, and the stubs Gradio writes next to its components (gitignored)
    source = {
        path.relative_to(ROOT).as_posix()
        for top in PACKAGE_ROOTS
        for path in (ROOT / top).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in skipped
    }
    assert {f for f in RUNTIME_FILES if f not in source} == set()  # the list above is still true
    assert sorted(source - names) == []


def test_an_install_from_the_wheel_finds_its_runtime_files(wheel, tmp_path):
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    check = (
        "import classifr, sys\n"
        "from classifr.data.hub_sync import TEMPLATE_PATH\n"
        "from training.metrics import MODULES_DIR\n"
        "print(classifr.__file__)\n"
        "print(TEMPLATE_PATH.is_file(), TEMPLATE_PATH)\n"
        f"print(all((MODULES_DIR / n / f'{{n}}.py').is_file() for n in {METRICS!r}), MODULES_DIR)\n"
    )
    # Run outside the checkout, with the installed copy first on the path (ahead of the editable install).
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    module, template, metrics = result.stdout.splitlines()
    assert Path(module).is_relative_to(target)
    assert template == f"True {target / 'classifr/data/templates/dataset_card.md'}"
    assert metrics == f"True {target / 'training/evaluate_modules'}"
