"""Anchors from served traffic: which versions' embeddings count, look-alikes of a new label left out,
and a training run that uses them."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from classifr.core.config import Settings
from classifr.data.dataset import Example
from classifr.versions.registry import LocalRegistry
from classifr.app.project import open_service
from training.anchors import look_alikes, same_backbone_versions, traffic_anchors




def _publish(registry: LocalRegistry, parent: str, strategy: str) -> str:
    source = registry.local_path("v1")

    def write(folder: Path) -> None:
        for item in source.iterdir():
            if item.is_file() and item.name != "classifr_version.json":
                shutil.copy2(item, folder / item.name)

    return registry.publish(write, parent=parent, metadata={"strategy": strategy}).version


@pytest.mark.slow  # the real default model
def test_only_versions_that_share_the_parents_backbone_count(own_home):
    registry = LocalRegistry(own_home / "registry")
    v2 = _publish(registry, "v1", "head")
    v3 = _publish(registry, v2, "full")  # a new backbone
    v4 = _publish(registry, v3, "head")
    assert same_backbone_versions(registry, v4) == [v4, v3]
    assert same_backbone_versions(registry, v2) == [v2, "v1"]
    assert same_backbone_versions(registry, "v1") == ["v1"]


def test_look_alikes_of_a_new_label_are_found_per_label():
    rng = np.random.default_rng(0)
    axis = np.eye(16, dtype=np.float32)
    hats = axis[0] + 0.1 * rng.standard_normal((20, 16)).astype(np.float32)
    shorts = axis[1] + 0.1 * rng.standard_normal((20, 16)).astype(np.float32)
    traffic = np.concatenate([
        axis[0] + 0.05 * rng.standard_normal((5, 16)),  # hats served before "hat" existed
        axis[2] + 0.1 * rng.standard_normal((30, 16)),  # other things
    ]).astype(np.float32)
    mask = look_alikes(traffic, [hats, shorts])
    assert mask[:5].all() and not mask[5:].any()
    assert not look_alikes(traffic[:0], [hats]).any() and look_alikes(traffic, [hats[:0]]).sum() == 0


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_traffic_anchors_come_from_the_log_without_new_labels_or_training_images(own_home, clothing_dir):
    settings = Settings(home=own_home, num_threads=2)
    service = open_service(settings)
    photos = sorted((clothing_dir / "validation").rglob("*.jpg"))[:12]
    results = service.predict_batch(photos)
    service.close()
    registry = service.registry
    assert traffic_anchors(settings, registry, "v1").shape == (12, 1280)
    top = results[0].predictions[0].label
    excluded = sum(r.predictions[0].label == top for r in results)
    assert len(traffic_anchors(settings, registry, "v1", exclude_labels=[top.upper()])) == 12 - excluded
    in_training = {hashlib.sha256(photos[1].read_bytes()).hexdigest()}
    assert len(traffic_anchors(settings, registry, "v1", exclude_sha256=in_training)) == 11
    v2 = _publish(registry, "v1", "full")
    assert len(traffic_anchors(settings, registry, v2)) == 0  # v1's features are not v2's


@pytest.mark.slow  # the real default model
def test_predictions_a_contributor_answered_are_not_traffic_anchors(own_home, clothing_dir):
    """An answered photo joined the dataset, re-encoded without metadata under another hash, so
    the training set's hashes cannot find it: the answer itself leaves it out."""
    settings = Settings(home=own_home, num_threads=2)
    service = open_service(settings)
    photos = sorted((clothing_dir / "validation").rglob("*.jpg"))[:3]
    results = service.predict_batch(photos)
    service.record_feedback(photos[0], None, prediction=results[0].id)
    service.close()
    assert traffic_anchors(settings, service.registry, "v1").shape == (2, 1280)


def test_no_log_gives_no_traffic_anchors(fresh_home):
    settings = Settings(home=fresh_home, num_threads=2)
    assert traffic_anchors(settings, LocalRegistry(fresh_home / "registry"), "v1").shape[0] == 0


def _hats(clothing_dir: Path, *, train: int, test: int) -> list[Path]:
    """The first hat photos (by name) that the dataset's hash split puts `train` of in train, `test` in test."""
    from classifr.data.dataset import split_of

    wanted, chosen = {"train": train, "test": test}, []
    for path in sorted((clothing_dir / "train" / "hat").glob("*.jpg")):
        split = split_of(hashlib.sha256(path.read_bytes()).hexdigest())
        if wanted[split]:
            wanted[split] -= 1
            chosen.append(path)
    assert not any(wanted.values()), wanted
    return chosen


@pytest.mark.slow
def test_a_training_run_anchors_new_labels_on_served_traffic(own_home, clothing_dir, monkeypatch):
    """Which images anchor the run is the point here, not the version's ONNX copy: its export is
    skipped (tests/test_training.py publishes with it when it adds labels to a version)."""
    from training.publish import VersionFiles
    from training.train import TrainOptions, run

    monkeypatch.setattr(VersionFiles, "_export_onnx", lambda self, folder: "not exported (test)")
    settings = Settings(home=own_home, num_threads=2)
    service = open_service(settings)
    service.predict_batch(sorted((clothing_dir / "validation" / "pants").glob("*.jpg"))[:16])
    hats = _hats(clothing_dir, train=16, test=2)
    service.dataset.add_many([Example(p, "hat") for p in hats], source="upload")
    service.close()
    with_traffic = run(settings, TrainOptions(parent="v1", promote="never", progress=False))
    without = run(settings, TrainOptions(parent="v1", promote="never", progress=False, traffic_anchors=False))
    for outcome in (with_traffic, without):
        assert outcome.labels_added == ["hat"]
        assert any("anchor images" in warning for warning in outcome.warnings)  # fewer than 200
    def metrics(outcome) -> dict:
        return json.loads((service.registry.local_path(outcome.version) / "metrics.json").read_text())

    used = metrics(with_traffic)["hyperparameters"]
    assert used["traffic_anchors"] + used["traffic_look_alikes_left_out"] == 16 and used["traffic_anchors"] >= 12
    assert metrics(without)["hyperparameters"]["traffic_anchors"] == 0
    # 18 hats: 2 in the hash share, and at least one in five held out (classifr.data.split): 3.
    assert len(metrics(with_traffic)["reference_scores"]) == with_traffic.metrics["num_images"] == 3
