"""Verified versions: checksums written at publish and checked on load, the promotion checks (load,
finite scores on a probe image, ONNX graph against the weights), the production follower surviving
bad versions, and /health's "degraded" while the served model gives non-finite scores.

Every version here is the tiny random ViT (tests/conftest.py), published through the real registry.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from classifr.app.project import open_local_registry, open_service
from classifr.core.config import Settings
from classifr.core.errors import ClassifrError, ModelLoadError
from classifr.inference.classifier import Classifier, NonFiniteScoresError
from classifr.inference.onnx_backend import load_classifier
from classifr.inference.version_check import VersionCheckError
from classifr.versions.folder import CHECKSUMS_FILE, CorruptVersionError, verify_checksums
from tests.test_cli import run_cli

WEIGHTS = "model.safetensors"


def _settings(home: Path, **overrides) -> Settings:
    return Settings(home=home, num_threads=1, **overrides)


@pytest.fixture
def home(tmp_path: Path, tiny_default_version) -> Path:
    """A CLASSIFR_HOME whose registry holds the tiny ViT as v1 (production)."""
    home = tmp_path / "home"
    open_local_registry(home / "registry", default_version=tiny_default_version)
    return home


def _copy_of(source: Path, then: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
    """A registry writer: the files of `source`, then `then(folder)` (checksums are the registry's, after it)."""

    def write(folder: Path) -> None:
        shutil.copytree(source, folder, dirs_exist_ok=True)
        if then is not None:
            then(folder)

    return write


def _scaled_weights(factor: float) -> Callable[[Path], None]:
    def scale(folder: Path) -> None:
        from safetensors.torch import load_file, save_file

        tensors = {name: tensor * factor for name, tensor in load_file(folder / WEIGHTS).items()}
        save_file(tensors, folder / WEIGHTS, metadata={"format": "pt"})

    return scale


def _publish(home: Path, write: Callable[[Path], None]) -> str:
    return open_local_registry(home / "registry").publish(write, parent="v1").version


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _version_dir(home: Path, version: str) -> Path:
    return home / "registry" / "versions" / version


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


# --- checksums ----------------------------------------------------------------------------------------


def test_publish_writes_a_checksum_of_every_file_and_a_changed_byte_is_refused(home, tiny_vit_dir):
    v2 = _publish(home, _copy_of(tiny_vit_dir))
    folder = _version_dir(home, v2)
    record = json.loads((folder / CHECKSUMS_FILE).read_text())
    files = {p.name for p in folder.iterdir() if p.name != CHECKSUMS_FILE}
    assert record["algorithm"] == "sha256" and set(record["files"]) == files
    assert {WEIGHTS, "config.json", "classifr_version.json"} <= files
    assert verify_checksums(folder, name=v2) is True

    _flip_a_byte(folder / WEIGHTS)
    with pytest.raises(CorruptVersionError, match=f"{v2} is corrupt: {WEIGHTS} differs from its checksum"):
        load_classifier(folder, version=v2, num_threads=1)
    service = open_service(_settings(home))
    with pytest.raises(VersionCheckError, match=WEIGHTS) as refused:
        service.promote(v2)
    assert "\n" not in str(refused.value)
    assert service.serving_version == "v1" and service.registry.resolve("production") == "v1"


def test_a_missing_file_is_named(home, tiny_vit_dir):
    v2 = _publish(home, _copy_of(tiny_vit_dir))
    (_version_dir(home, v2) / "preprocessor_config.json").unlink()
    with pytest.raises(CorruptVersionError, match="preprocessor_config.json is missing"):
        verify_checksums(_version_dir(home, v2), name=v2)


def test_a_version_from_an_older_build_loads_with_a_warning_and_its_card_says_so(home, tiny_vit_dir, caplog):
    from classifr.versions.overview import describe_version

    v2 = _publish(home, _copy_of(tiny_vit_dir))
    folder = _version_dir(home, v2)
    (folder / CHECKSUMS_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="classifr.versions.folder"):
        classifier = load_classifier(folder, version=v2, num_threads=1)
    assert classifier.predict([Image.new("RGB", (40, 40), "teal")])[0]
    assert [r.getMessage() for r in caplog.records] == [
        f"{v2} has no {CHECKSUMS_FILE} (published by an older build, or not a registry version): its files are not verified"
    ]
    notes = describe_version(open_local_registry(home / "registry"), v2).notes
    assert any("not verified" in note for note in notes)
    assert not any("not verified" in note for note in describe_version(open_local_registry(home / "registry"), "v1").notes)


def test_the_hub_registry_publishes_checksums_and_its_download_verifies(tmp_path, tiny_default_version):
    from classifr.versions.registry import HubRegistry
    from tests.fake_hub import FakeHfApi

    registry = HubRegistry("team/models", hf_api=FakeHfApi(), cache_dir=tmp_path / "cache")
    registry.publish(tiny_default_version.write, parent=None, aliases=["production"])
    registry.publish(tiny_default_version.write, parent="v1")
    for version in ("v1", "v2"):
        folder = registry.local_path(version)
        assert verify_checksums(folder, name=version) is True
        listed = set(json.loads((folder / CHECKSUMS_FILE).read_text())["files"])
        assert WEIGHTS in listed and "classifr_version.json" in listed and ".gitattributes" not in listed


# --- a truncated weights file -------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_weights_are_one_line_errors_with_and_without_checksums(home, tiny_vit_dir):
    v2 = _publish(home, _copy_of(tiny_vit_dir))
    folder = _version_dir(home, v2)
    _truncate(folder / WEIGHTS)
    with pytest.raises(VersionCheckError, match=f"{v2} is corrupt: {WEIGHTS} differs"):
        open_service(_settings(home)).promote(v2)
    (folder / CHECKSUMS_FILE).unlink()  # as an older build left it: the load itself must say so
    with pytest.raises(ModelLoadError, match=f"its weights \\({WEIGHTS}\\) are damaged") as damaged:
        Classifier.load(folder, version=v2)
    assert "\n" not in str(damaged.value)


def test_a_truncated_production_version_at_start_fails_health_and_the_cli_in_one_line(home, tiny_vit_dir, tmp_path):
    v2 = _publish(home, _copy_of(tiny_vit_dir))
    open_local_registry(home / "registry").promote(v2)  # another process promoted it, unchecked
    _truncate(_version_dir(home, v2) / WEIGHTS)
    service = open_service(_settings(home), load_in_background=True)
    _wait_for(lambda: service.health()["status"] != "loading", "the load to finish")
    health = service.health()
    assert health["status"] == "failed" and WEIGHTS in health["reason"] and v2 in health["reason"]
    photo = tmp_path / "teal.png"
    Image.new("RGB", (40, 40), "teal").save(photo)
    done = run_cli(home, "predict", photo)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"classifr: error: {v2} is corrupt: {WEIGHTS} differs from its checksum in {CHECKSUMS_FILE}"]


# --- NaN weights ---------------------------------------------------------------------------------------


def test_a_nan_version_is_refused_by_the_service_and_the_cli(home, tiny_vit_dir):
    v2 = _publish(home, _copy_of(tiny_vit_dir, then=_scaled_weights(float("nan"))))
    assert verify_checksums(_version_dir(home, v2), name=v2)  # its files are intact: the weights are the problem
    service = open_service(_settings(home))
    with pytest.raises(VersionCheckError, match=f"{v2} gives non-finite scores on a probe image"):
        service.promote(v2)
    assert service.serving_version == "v1"
    done = run_cli(home, "promote", v2)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"classifr: error: {v2} gives non-finite scores on a probe image: its weights are damaged"]
    assert open_local_registry(home / "registry").resolve("production") == "v1"


def test_rollback_to_a_version_that_fails_its_checks_is_refused(home, tiny_vit_dir):
    registry = open_local_registry(home / "registry")
    bad = _publish(home, _copy_of(tiny_vit_dir, then=_scaled_weights(float("nan"))))
    good = _publish(home, _copy_of(tiny_vit_dir))
    registry.promote(bad)  # unchecked, by another process
    registry.promote(good)
    service = open_service(_settings(home))
    with pytest.raises(VersionCheckError, match="non-finite"):
        service.rollback()
    assert registry.resolve("production") == good and service.serving_version == good
    done = run_cli(home, "rollback")
    assert done.returncode == 1 and "non-finite" in done.stderr and registry.resolve("production") == good


def test_a_nan_version_served_anyway_is_degraded_with_a_clear_error_until_switched(home, tiny_vit_dir):
    from classifr.ui.app import add_health_route

    v2 = _publish(home, _copy_of(tiny_vit_dir, then=_scaled_weights(float("nan"))))
    open_local_registry(home / "registry").promote(v2)  # the alias edited by another process
    service = open_service(_settings(home))
    assert service.serving_version == v2 and service.health()["status"] == "ok"  # nothing predicted yet
    with pytest.raises(NonFiniteScoresError, match=f"model {v2} gave non-finite scores"):
        service.predict(Image.new("RGB", (40, 40), "teal"))
    health = service.health()
    assert (health["status"], health["version"], health["reason"]) == ("degraded", v2, f"model {v2} gave non-finite scores")

    routes: dict[str, Callable] = {}
    # What add_health_route needs of gr.Blocks: its FastAPI app's add_api_route.
    demo = SimpleNamespace(app=SimpleNamespace(add_api_route=lambda path, endpoint, **_: routes.update({path: endpoint})))
    add_health_route(demo, service)
    assert routes["/health"]().status_code == 503
    service.promote("v1")
    assert service.health()["status"] == "ok" and service.predict(Image.new("RGB", (40, 40), "teal")).version == "v1"


# --- the ONNX graph against the weights ----------------------------------------------------------------


def _export(folder: Path) -> None:
    from classifr.inference.onnx_export import export_version, sample_verification_images

    export = export_version(folder, version="new", images=sample_verification_images(8), quantize=False)
    assert export.verified, export.reason


def _nudge_the_head(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / WEIGHTS)
    tensors["classifier.bias"] = tensors["classifier.bias"] + 0.5
    save_file(tensors, folder / WEIGHTS, metadata={"format": "pt"})


def test_an_onnx_graph_that_disagrees_with_the_weights_is_refused(home, tiny_vit_dir):
    service = open_service(_settings(home))
    agreeing = _publish(home, _copy_of(tiny_vit_dir, then=_export))
    stale = _publish(home, _copy_of(tiny_vit_dir, then=lambda folder: (_export(folder), _nudge_the_head(folder))))
    with pytest.raises(VersionCheckError, match=f"the ONNX graph of {stale} disagrees with its weights: logits differ"):
        service.promote(stale)
    assert service.serving_version == "v1"
    service.promote(agreeing)
    assert (service.serving_version, service.serving_backend) == (agreeing, "onnx")


# --- the production follower ---------------------------------------------------------------------------


def test_the_follower_survives_a_crash_and_a_corrupt_version_and_follows_the_next_good_one(home, tiny_vit_dir, caplog):
    registry = open_local_registry(home / "registry")
    crashing = _publish(home, _copy_of(tiny_vit_dir))
    good = _publish(home, _copy_of(tiny_vit_dir))
    corrupt = _publish(home, _copy_of(tiny_vit_dir))
    _flip_a_byte(_version_dir(home, corrupt) / WEIGHTS)
    service = open_service(_settings(home))
    loads: list[str] = []
    checks = threading.Semaphore(0)
    real_load, real_resolve = service._load, service.registry.resolve

    def load(folder: Path, version: str):
        loads.append(version)
        if version == crashing:
            raise RuntimeError("injected: the disk went away")
        return real_load(folder, version)

    def resolve(ref: str) -> str:
        checks.release()  # one per check of `production` (and of `candidate`: none here)
        return real_resolve(ref)

    service._load, service.registry.resolve = load, resolve

    def follow_checks(count: int) -> None:
        for _ in range(count):
            assert checks.acquire(timeout=20), "the follower stopped checking"

    stop = service.follow_production(0.02)
    try:
        with caplog.at_level(logging.WARNING, logger="classifr.app.service"):
            registry.promote(crashing)
            _wait_for(lambda: crashing in loads, f"the follower to try {crashing}")
            follow_checks(5)
            assert loads.count(crashing) == 1 and service.serving_version == "v1"  # remembered: no reload
            assert service.health()["refused"] == {"version": crashing, "reason": "injected: the disk went away"}

            registry.promote(good)
            _wait_for(lambda: service.serving_version == good, f"the follower to serve {good}")

            registry.promote(corrupt)
            _wait_for(lambda: corrupt in loads, f"the follower to try {corrupt}")
            follow_checks(5)
            assert loads.count(corrupt) == 1 and service.serving_version == good
            assert service.health()["status"] == "ok" and "is corrupt" in service.health()["refused"]["reason"]

            registry.promote("v1")
            _wait_for(lambda: service.serving_version == "v1", "the follower to serve v1 again")
        failures = [r for r in caplog.records if "could not follow the production version" in r.getMessage()]
        assert len(failures) == 2  # one line per bad version, however many checks followed
        crash, corrupted = failures
        assert crash.exc_info is not None and "RuntimeError" in crash.getMessage()  # a bug: with its traceback
        assert corrupted.exc_info is None and f"{corrupt} is corrupt: {WEIGHTS}" in corrupted.getMessage()
    finally:
        stop.set()
    assert isinstance(service.health(), dict) and "refused" not in service.health()


def test_refresh_refuses_a_bad_production_once_and_keeps_serving(home, tiny_vit_dir):
    v2 = _publish(home, _copy_of(tiny_vit_dir, then=_scaled_weights(float("nan"))))
    service = open_service(_settings(home))
    open_local_registry(home / "registry").promote(v2)
    with pytest.raises(ClassifrError, match="non-finite"):
        service.refresh()
    assert service.refresh() == "v1"  # known bad: skipped without a second load or error
    assert service.predict(Image.new("RGB", (40, 40), "teal")).version == "v1"


def test_training_promotes_only_a_version_that_passes_the_checks(home, tiny_vit_dir):
    from training.train import _promote_checked

    registry = open_local_registry(home / "registry")
    bad = _publish(home, _copy_of(tiny_vit_dir, then=_scaled_weights(float("inf"))))
    good = _publish(home, _copy_of(tiny_vit_dir))
    promoted, warnings = _promote_checked(registry, bad, _settings(home))
    assert not promoted and warnings == [f"not promoted: {bad} gives non-finite scores on a probe image: its weights are damaged"]
    assert registry.resolve("production") == "v1"
    assert _promote_checked(registry, good, _settings(home)) == (True, []) and registry.resolve("production") == good
