"""Import rules from DESIGN.md, checked in fresh interpreters."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def _modules_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=REPO_ROOT)
    return set(out.stdout.split())


@pytest.mark.parametrize("module", ["classifr.app.service", "classifr.cli", "classifr.versions.registry", "classifr.core.images", "classifr.inference.explain"])
def test_library_does_not_import_gradio_or_training(module):
    loaded = _modules_after_import(module)
    assert "gradio" not in loaded
    assert not any(name == "training" or name.startswith("training.") for name in loaded)


def test_cli_starts_without_torch():
    # `classifr --help` and argument errors must answer instantly.
    assert "torch" not in _modules_after_import("classifr.cli")


@pytest.mark.parametrize("module", ["classifr.versions.registry", "classifr.monitoring.report", "classifr.app.bootstrap"])
def test_registry_and_monitor_commands_need_no_torch(module):
    # classifr versions / promote / rollback / monitor answer in about a second, not after ~10 s of imports.
    assert "torch" not in _modules_after_import(module)
