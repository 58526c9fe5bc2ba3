"""The composition root (classifr.app.project): one function opens a project, the default version injectable."""

from __future__ import annotations

import json

import pytest

from classifr.app.project import open_registry, open_service
from classifr.cli import main
from classifr.core.config import Settings


def test_a_project_opens_on_an_injected_tiny_default_version(tmp_path, tiny_default_version, sandal_photo):
    settings = Settings(home=tmp_path / "home", num_threads=1, backend="torch")
    service = open_service(settings, default_version=tiny_default_version)
    try:
        result = service.predict(sandal_photo)
        assert result.version == "v1" and {p.label for p in result.predictions} <= {"cat", "dog", "bird"}
        assert [v.version for v in service.list_versions()] == ["v1"]
        info = service.list_versions()[0]
        assert info.aliases == ("production",) and info.metadata == {"source": "tests: tiny random ViT"}
        config = json.loads((service.registry.local_path("v1") / "config.json").read_text())
        assert config["model_type"] == "vit"  # the injected model, not the embedded EfficientNet
    finally:
        service.close()


def test_open_registry_without_a_default_leaves_an_empty_home_empty(tmp_path):
    registry = open_registry(Settings(home=tmp_path / "home"))
    assert registry.is_empty() and registry.list_versions() == []


def test_a_second_open_builds_nothing(tmp_path, tiny_default_version):
    settings = Settings(home=tmp_path / "home")
    first = open_registry(settings, default_version=tiny_default_version)
    calls = []
    spy = type(tiny_default_version)(write=lambda folder: calls.append(folder), metadata={})
    again = open_registry(settings, default_version=spy)
    assert calls == [] and [v.version for v in again.list_versions()] == [v.version for v in first.list_versions()] == ["v1"]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["versions", "--json"], []),
        (["dataset", "stats", "--json"], None),
    ],
)
def test_read_only_commands_on_an_empty_home_build_nothing(tmp_path, monkeypatch, capsys, argv, expected):
    home = tmp_path / "home"
    monkeypatch.setenv("CLASSIFR_HOME", str(home))
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    if expected is not None:
        assert out == expected
    else:
        assert out["total"] == 0 and out["by_label"] == {}
    assert not (home / "registry" / "versions").exists() or not any((home / "registry" / "versions").iterdir())


def test_versions_on_an_empty_home_says_there_is_none_yet(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLASSIFR_HOME", str(tmp_path / "home"))
    assert main(["versions"]) == 0
    assert "no model version yet" in capsys.readouterr().out


def test_monitor_on_an_empty_home_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLASSIFR_HOME", str(tmp_path / "home"))
    assert main(["monitor", "--json"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("classifr: error: no prediction log yet") and len(err.strip().splitlines()) == 1


def _model_state(service) -> dict:
    """health() without its "storage" entry (tests/test_storage.py checks that one)."""
    return {key: value for key, value in service.health().items() if key != "storage"}


def _pending_service(tmp_path, tiny_vit_dir, load):
    from classifr.app.loading import PendingModel
    from classifr.app.service import ClassifrService

    pending = PendingModel(tiny_vit_dir, version="v1", load=load).start()
    settings = Settings(home=tmp_path / "home", num_threads=1, backend="torch")
    return ClassifrService(settings, registry=None, classifier=pending, prediction_log=None)


def test_the_service_answers_while_its_model_loads_and_health_says_so(tmp_path, tiny_vit_dir, sandal_photo):
    import threading

    from classifr.inference.classifier import Classifier

    gate = threading.Event()

    def load():
        gate.wait(30)
        return Classifier.load(tiny_vit_dir, version="v1")

    service = _pending_service(tmp_path, tiny_vit_dir, load)
    # Known before the load: what the UI is built from.
    assert _model_state(service) == {"status": "loading", "version": "v1"}
    assert service.serving_version == "v1" and service.known_labels() == ["cat", "dog", "bird"]
    gate.set()
    result = service.predict(sandal_photo)  # waits for the load instead of failing
    assert result.version == "v1" and len(result.predictions) == 3
    assert _model_state(service) == {"status": "ok", "version": "v1"}


def test_a_model_that_fails_to_load_is_reported_in_health_and_predict(tmp_path, tiny_vit_dir, sandal_photo):
    from classifr.core.errors import ClassifrError

    def load():
        raise OSError("model.safetensors: Input/output error")

    service = _pending_service(tmp_path, tiny_vit_dir, load)
    with pytest.raises(ClassifrError, match="could not be loaded: model.safetensors: Input/output error"):
        service.predict(sandal_photo)
    assert _model_state(service) == {"status": "failed", "version": "v1", "reason": "model.safetensors: Input/output error"}
