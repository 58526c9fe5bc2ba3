"""`classifr versions import`: any Transformers image-classification checkpoint as a new version.

Tiny random ViT and ConvNeXt checkpoints (tests/conftest.py), real clothing photos, and the
in-memory Hub of tests/fake_hub.py; nothing reaches the network.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from unittest import mock

import pytest

from classifr.core.config import Settings
from classifr.versions import folder as version_folder
from classifr.app.checkpoints import CheckpointImportError, import_checkpoint
from classifr.versions.registry import LocalRegistry
from tests.fake_hub import FakeHfApi
from tests.test_cli import run_cli

VERIFY_IMAGES = 8  # ONNX verification photos: the tiny models need no more to show agreement


def _import(registry, source, **kwargs):
    return import_checkpoint(registry, source, cache_dir=kwargs.pop("cache_dir", None) or Path(registry.root) / "hub-cache",
                             verify_images=VERIFY_IMAGES, **kwargs)


def _hub_with(checkpoint: Path, repo_id: str, extra: dict[str, bytes] | None = None) -> tuple[FakeHfApi, str]:
    """A fake Hub holding `checkpoint`'s files (plus `extra`) in one commit; returns it and the commit."""
    from huggingface_hub import CommitOperationAdd

    hub = FakeHfApi()
    hub.create_repo(repo_id)
    files = {path.name: path.read_bytes() for path in checkpoint.iterdir() if path.is_file()} | (extra or {})
    commit = hub.create_commit(repo_id, [CommitOperationAdd(name, data) for name, data in files.items()],
                               commit_message="add the checkpoint")
    return hub, commit.oid


@pytest.fixture
def vit_with_card(tmp_path, tiny_vit_dir) -> Path:
    folder = tmp_path / "vit-with-card"
    shutil.copytree(tiny_vit_dir, folder)
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n\n# Tiny ViT\n\nA cat, dog and bird model.\n")
    return folder


def test_folder_import_of_a_vit_keeps_labels_processor_and_card(tmp_path, vit_with_card):
    registry = LocalRegistry(tmp_path / "registry")
    info = _import(registry, vit_with_card)
    assert [v.version for v in registry.list_versions()] == [info.version] and info.aliases == ()
    assert info.parent is None and info.num_labels == 3
    assert info.metadata == {
        "source": str(vit_with_card.resolve()), "revision": None, "imported": True,
        "architecture": "ViTForImageClassification",
        "weights_sha256": version_folder.weights_checksum(vit_with_card),
    }
    folder = registry.local_path(info.version)
    assert json.loads((folder / "config.json").read_text())["id2label"] == {"0": "cat", "1": "dog", "2": "bird"}
    assert (folder / "preprocessor_config.json").read_bytes() == (vit_with_card / "preprocessor_config.json").read_bytes()
    assert (folder / "model.safetensors").read_bytes() == (vit_with_card / "model.safetensors").read_bytes()
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0\n---\n")  # its front matter still first
    assert "A cat, dog and bird model." in card
    assert f"Imported into Classifr from `{vit_with_card.resolve()}` at no revision (a local folder)" in card


def test_folder_import_of_a_convnext_without_a_card_gets_one(tmp_path, tiny_convnext_dir):
    registry = LocalRegistry(tmp_path / "registry")
    info = _import(registry, tiny_convnext_dir)
    assert info.num_labels == 4 and info.metadata["architecture"] == "ConvNextForImageClassification"
    folder = registry.local_path(info.version)
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor["crop_pct"] == 0.875 and processor["size"] == {"shortest_edge": 64}
    card = (folder / "README.md").read_text()
    assert "Imported into Classifr from" in card and "shirt, pants, shoes, hat" in card
    assert "without a model card" in card


def test_hub_import_downloads_only_what_a_version_needs_and_records_the_commit(tmp_path, tiny_vit_dir):
    from huggingface_hub import CommitOperationAdd

    hub, first = _hub_with(tiny_vit_dir, "acme/tiny-vit", extra={"README.md": b"# Tiny ViT on the Hub\n",
                                                              "flax_model.msgpack": b"not needed"})
    hub.create_tag("acme/tiny-vit", tag="v1.0", revision=first)
    hub.create_commit("acme/tiny-vit", [CommitOperationAdd("README.md", b"# changed later\n")], commit_message="later")
    registry = LocalRegistry(tmp_path / "registry")
    info = _import(registry, "acme/tiny-vit", revision="v1.0", hub=hub)
    assert info.metadata["source"] == "acme/tiny-vit" and info.metadata["revision"] == first
    [download] = hub.calls_to("snapshot_download")
    assert download["revision"] == "v1.0" and "flax_model.msgpack" not in download["allow_patterns"]
    folder = registry.local_path(info.version)
    assert not (folder / "flax_model.msgpack").exists()
    card = (folder / "README.md").read_text()
    assert "# Tiny ViT on the Hub" in card and "changed later" not in card
    assert f"from `acme/tiny-vit` at revision `{first}`" in card


def test_versions_import_json_through_the_cli(own_home, tiny_vit_dir):
    hub, commit = _hub_with(tiny_vit_dir, "acme/tiny-vit")
    with mock.patch("classifr.app.checkpoints.HfApi", return_value=hub):
        done = run_cli(own_home, "versions", "import", "acme/tiny-vit", "--revision", "main", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert {k: result[k] for k in ("version", "source", "revision", "num_labels")} == {
        "version": "v2", "source": "acme/tiny-vit", "revision": commit, "num_labels": 3}
    before = run_cli(own_home, "versions", "--json", "import", str(tiny_vit_dir))  # --json before the action too
    assert before.returncode == 0 and json.loads(before.stdout)["version"] == "v3", before.stderr
    text = run_cli(own_home, "versions", "import", str(tiny_vit_dir))
    assert text.returncode == 0, text.stderr
    assert "imported" in text.stdout and "classifr promote v4" in text.stdout and "classifr train --parent v4" in text.stdout
    listed = run_cli(own_home, "versions", "--json")  # listing is as before, the imports included
    versions = json.loads(listed.stdout)
    assert [v["version"] for v in versions] == ["v1", "v2", "v3", "v4"]
    assert versions[0]["aliases"] == ["production"] and all(v["aliases"] == [] for v in versions[1:])
    promoted = run_cli(own_home, "promote", "v2")  # the app's promotion checks pass on an import
    assert promoted.returncode == 0 and "production is now v2" in promoted.stdout, promoted.stderr


def _bert_folder(folder: Path) -> Path:
    """A tiny text classifier: a config with labels that is not an image model."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8,
                        id2label={0: "spam", 1: "ham"}, label2id={"spam": 0, "ham": 1})
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def _damaged_folder(folder: Path, tiny_vit_dir: Path) -> Path:
    shutil.copytree(tiny_vit_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated mid-file
    return folder


def _duplicate_labels_folder(folder: Path, tiny_vit_dir: Path) -> Path:
    shutil.copytree(tiny_vit_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "cat", "1": "Cat", "2": "bird"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_bad_sources_are_one_line_errors_and_publish_nothing(own_home, tmp_path, tiny_vit_dir):
    hub, _ = _hub_with(tiny_vit_dir, "acme/tiny-vit")
    cases = [  # (arguments, what the error says)
        ([str(tmp_path / "no-such-folder")], "does not exist"),
        ([str(_bert_folder(tmp_path / "bert"))], "could not load image classifier"),
        ([str(_damaged_folder(tmp_path / "damaged", tiny_vit_dir))], "damaged"),
        ([str(_duplicate_labels_folder(tmp_path / "duplicates", tiny_vit_dir))], "duplicate label"),
        (["acme/no-such-model"], "neither a folder nor a Hub model"),
        (["acme/tiny-vit", "--revision", "no-such-branch"], "has no revision 'no-such-branch'"),
        ([str(tiny_vit_dir), "--revision", "main"], "--revision applies to Hub ids only"),
    ]
    for arguments, message in cases:
        with mock.patch("classifr.app.checkpoints.HfApi", return_value=hub):
            done = run_cli(own_home, "versions", "import", *arguments)
        assert done.returncode == 1, (arguments, done.stdout)
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, (arguments, done.stderr)
        assert message in done.stderr, (arguments, done.stderr)
    # Offline (the tests set HF_HUB_OFFLINE=1) with the real client and nothing cached.
    offline = run_cli(own_home, "versions", "import", "acme/tiny-vit")
    assert offline.returncode == 1 and "offline" in offline.stderr and len(offline.stderr.strip().splitlines()) == 1
    assert [v.version for v in LocalRegistry(own_home / "registry").list_versions()] == ["v1"]
    assert not list((own_home / "registry").glob(".staging/*"))  # no half version left behind


def test_import_error_names_the_source(tmp_path):
    with pytest.raises(CheckpointImportError, match="no-such"):
        _import(LocalRegistry(tmp_path / "registry"), str(tmp_path / "no-such"))


@pytest.mark.parametrize("checkpoint", ["tiny_vit_dir", "tiny_convnext_dir"])
def test_an_imported_version_serves_explains_exports_and_shows_its_source(own_home, clothing_dir, request, checkpoint):
    from classifr.app.project import open_local_registry, open_service
    from classifr.inference.onnx_export import read_export
    from classifr.versions.overview import describe_version

    source = request.getfixturevalue(checkpoint)
    hub, commit = _hub_with(source, "acme/tiny")
    registry = open_local_registry(own_home / "registry")
    info = _import(registry, "acme/tiny", hub=hub, cache_dir=own_home / "cache" / "hub")
    folder = registry.local_path(info.version)
    export = read_export(folder)
    assert export is not None and export.verified, export
    registry.promote(info.version)

    settings = Settings(home=own_home, num_threads=1)
    service = open_service(settings)
    try:
        photo = next((clothing_dir / "test" / "shoes").glob("*.jpg"))
        [result] = service.predict_batch([photo], top_k=2, origin="cli")
        assert result.ok and result.version == info.version
        assert {p.label for p in result.predictions} <= set(service.classifier.labels)
        explained = service.explain(photo, method="gradcam")
        assert explained.version == info.version and explained.picture.size[0] > 0
    finally:
        service.close()

    overview = describe_version(registry, info.version)
    assert overview.source is not None and "acme/tiny" in overview.source and commit in overview.source


def test_a_timm_wrapper_folder_imports_with_its_preprocessing_in_its_config(tmp_path, project_home):
    v1 = project_home / "registry" / "versions" / "v1"  # the embedded Lite0, as a plain checkpoint folder
    registry = LocalRegistry(tmp_path / "registry")
    info = _import(registry, v1)
    assert info.num_labels == 1000 and info.metadata["architecture"] == "tf_efficientnet_lite0"
    folder = registry.local_path(info.version)
    assert not (folder / "preprocessor_config.json").exists()  # a timm wrapper keeps it in config.json
    assert json.loads((folder / "config.json").read_text())["pretrained_cfg"]["input_size"] == [3, 224, 224]
    assert "EfficientNet" in (folder / "README.md").read_text()  # v1's own card kept
