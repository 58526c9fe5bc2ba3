"""The UI and the HTTP API talk to ClassifrService only through its public methods (and plain `service.settings`).

Read from the source with `ast`, so no Gradio app is built: every attribute read on a name called
`service` (or `self.service`, `context.service`) in classifr/ui/ and classifr/api/ must be public and must not be one of the parts the
service holds (registry, prediction log, dataset, sync, Hub client, metrics).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

UI = REPO_ROOT / "classifr" / "ui"
API = REPO_ROOT / "classifr" / "api"
PARTS = {"registry", "prediction_log", "dataset", "sync", "hf_api", "metrics"}
VALUES = {"settings", "limits"}  # plain configuration the service is built with: fine to read


def _service_attributes(path: Path) -> list[tuple[int, str]]:
    """(line, attribute) for every `service.X` and `self.service.X` in one module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id == "service":
            found.append((node.lineno, node.attr))
        elif isinstance(owner, ast.Attribute) and owner.attr == "service" and isinstance(owner.value, ast.Name):
            found.append((node.lineno, node.attr))
    return sorted(found)


@pytest.mark.parametrize("path", sorted(UI.glob("*.py")) + sorted(API.glob("*.py")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_ui_modules_use_only_the_public_service(path: Path):
    used = _service_attributes(path)
    wrong = [f"{path.name}:{line}: service.{name}" for line, name in used if name in PARTS or name.startswith("_")]
    assert not wrong, "the UI must call ClassifrService's public methods, not what it holds:\n" + "\n".join(wrong)


def test_the_check_sees_what_it_should(tmp_path: Path):
    module = tmp_path / "sample.py"
    module.write_text(
        "def f(service, self):\n"
        "    service.registry.resolve('v1')\n"
        "    self.service._lock\n"
        "    service.settings.home\n"
        "    service.model_card('v1')\n"
    )
    assert _service_attributes(module) == [(2, "registry"), (3, "_lock"), (4, "settings"), (5, "model_card")]


def test_every_service_method_the_ui_calls_exists():
    from classifr.app.service import ClassifrService

    missing = sorted(
        f"{path.name}:{line}: service.{name}"
        for path in UI.glob("*.py")
        for line, name in _service_attributes(path)
        if name not in VALUES and not hasattr(ClassifrService, name)
    )
    assert not missing, "\n".join(missing)
