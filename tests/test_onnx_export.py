"""ONNX export: the real v1 and tiny ViT/ConvNeXt exported, verified against PyTorch, refused when they
disagree, an int8 variant kept by the half-point rule, the `classifr export` command and the download."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from classifr.inference import onnx_export
from classifr.inference.onnx_export import (
    EXPORT_FILE,
    INT8_FILE,
    ONNX_FILE,
    OnnxExport,
    export_onnx,
    int8_decision,
    read_export,
    sample_verification_images,
    verified_onnx_path,
)
from tests.conftest import TEST_ONNX_VERIFY_IMAGES
from tests.test_cli import config_only_home, run_cli

CONTRACT_KEYS = {"format", "file", "verified", "reason", "opset", "input", "outputs", "images", "max_abs_diff",
                 "top1_agreement", "exporter", "seconds", "int8"}
INT8_KEYS = {"file", "kept", "accuracy_fp32", "accuracy_int8", "reason"}


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _clothing_photos(clothing_dir: Path, per_class: int) -> list[Path]:
    folders = sorted(p for p in (clothing_dir / "test").iterdir() if p.is_dir())
    return [photo for folder in folders for photo in sorted(folder.glob("*.jpg"))[:per_class]]


def _pixels(classifier, paths) -> np.ndarray:
    from classifr.core.images import read_image

    images = [read_image(p, min_side=classifier.min_side).image for p in paths]
    return np.ascontiguousarray(classifier.preprocess(images).numpy())


# --- the real default model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clothing_top1(default_classifier, clothing_dir):
    """100 real photos (the first 10 of each of the 10 clothing classes), decoded, and v1's served top-1
    of each: predicted once for the int8 check and the ONNX Runtime comparison."""
    photos = _clothing_photos(clothing_dir, 10)[:100]
    images = _decoded(default_classifier, photos)
    return photos, images, [p[0].label for p in default_classifier.predict(images, top_k=1)]


@pytest.fixture(scope="module")
def v1_export(default_classifier, clothing_top1, tmp_path_factory):
    """v1 exported as the bootstrap does with its production setting (200 sample-photo inputs: the one
    place the tests verify on all 200), plus an int8 check on the 100 clothing photos labelled with v1's
    own top-1 (so float32 scores 100% and int8 shows what quantization costs). Exported once for the module."""
    folder = tmp_path_factory.mktemp("v1-onnx")
    photos, _, labels = clothing_top1
    export = export_onnx(default_classifier, folder, sample_verification_images(), eval_set=(photos, labels))
    return folder, export


def _decoded(classifier, paths):
    from classifr.core.images import read_image

    return [read_image(p, min_side=classifier.min_side).image for p in paths]


@pytest.mark.slow
def test_v1_export_is_verified_and_recorded(v1_export):
    folder, export = v1_export
    assert export.verified and export.reason is None, export.reason
    assert export.images == 200 and export.top1_agreement == 1.0
    assert export.max_abs_diff <= 1e-4 and export.max_abs_diff_features <= 1e-3
    assert export.exporter == "torchscript" and export.opset >= 17
    record = json.loads((folder / EXPORT_FILE).read_text())
    assert CONTRACT_KEYS <= record.keys() and INT8_KEYS <= record["int8"].keys()
    assert record["input"] == "pixel_values" and record["outputs"] == ["logits", "features"]
    assert record["file"] == ONNX_FILE and (folder / ONNX_FILE).is_file()
    assert read_export(folder) == export and verified_onnx_path(folder) == folder / ONNX_FILE
    assert not list(folder.glob("*.partial")) and not list(folder.glob(".*"))


@pytest.mark.slow
def test_v1_graph_has_dynamic_batch_and_both_outputs(v1_export):
    import onnx

    folder, _ = v1_export
    graph = onnx.load(str(folder / ONNX_FILE)).graph

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    [pixel_values] = graph.input
    assert pixel_values.name == "pixel_values" and dims(pixel_values) == ["batch", 3, 224, 224]
    assert {o.name: dims(o) for o in graph.output} == {"logits": ["batch", 1000], "features": ["batch", 1280]}


@pytest.mark.slow
def test_v1_onnxruntime_gives_the_served_top1_and_features_on_real_photos(v1_export, default_classifier, clothing_top1, clothing_dir):
    folder, _ = v1_export
    chosen = set(_clothing_photos(clothing_dir, 5))  # 50 photos, 5 of each of 10 classes, with v1's predict() top-1
    photos, images, served = zip(*(row for row in zip(*clothing_top1) if row[0] in chosen))
    images, served = list(images), list(served)
    assert len(photos) == 50
    session = _session(folder / ONNX_FILE)
    pixels = np.ascontiguousarray(default_classifier.preprocess(images).numpy())
    logits, features = session.run(["logits", "features"], {"pixel_values": pixels})
    names = default_classifier.labels.names
    assert [names[i] for i in logits.argmax(-1)] == served
    torch_features, torch_logits = default_classifier.features_and_logits(images)
    assert features.shape == (50, 1280)
    assert np.abs(features - torch_features.numpy()).max() <= 1e-3
    assert np.abs(logits - torch_logits.numpy()).max() <= 1e-4
    for batch in (1, 7):  # batch sizes other than the traced example's
        part_logits, part_features = session.run(None, {"pixel_values": pixels[:batch]})
        assert part_logits.shape == (batch, 1000) and part_features.shape == (batch, 1280)
        assert np.abs(part_logits - logits[:batch]).max() <= 1e-4


@pytest.mark.slow
def test_v1_int8_follows_the_half_point_rule(v1_export):
    folder, export = v1_export
    int8 = export.int8
    assert int8 is not None and int8.accuracy_fp32 == 1.0  # labels are v1's own top-1: float32 ONNX agrees
    assert 0.9 <= int8.accuracy_int8 <= 1.0  # only the head is quantized (MatMul/Gemm)
    assert int8.kept == (int8.accuracy_int8 >= int8.accuracy_fp32 - 0.005)
    assert int8.kept == (folder / INT8_FILE).is_file()
    assert int8.reason is None if int8.kept else "more than 0.5 point below" in int8.reason


# --- other architectures ---------------------------------------------------------------------------


@pytest.mark.parametrize("folder_fixture", ["tiny_vit_dir", "tiny_convnext_dir"])
@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_tiny_vit_and_convnext_export_and_verify(folder_fixture, request, tmp_path, clothing_dir):
    from classifr.inference.classifier import Classifier

    classifier = Classifier.load(request.getfixturevalue(folder_fixture), version="tiny")
    photos = _clothing_photos(clothing_dir, 4)
    labels = [p[0].label for p in classifier.predict(_decoded(classifier, photos), top_k=1)]
    export = export_onnx(classifier, tmp_path, photos, eval_set=(photos, labels))
    assert export.verified, export.reason
    assert export.images == len(photos) and export.top1_agreement == 1.0 and export.max_abs_diff <= 1e-4
    assert export.int8 is not None and export.int8.accuracy_fp32 == 1.0
    assert export.int8.kept == (tmp_path / INT8_FILE).is_file()
    session = _session(tmp_path / ONNX_FILE)
    logits, features = session.run(None, {"pixel_values": _pixels(classifier, photos[:3])})
    torch_features, torch_logits = classifier.features_and_logits(_decoded(classifier, photos[:3]))
    assert logits.shape == (3, len(classifier.labels)) and features.shape == tuple(torch_features.shape)
    assert np.abs(features - torch_features.numpy()).max() <= 1e-3


@pytest.mark.slow  # the dynamo exporter traces the model: seconds even for a tiny one
def test_dynamo_exporter_is_the_fallback(tiny_convnext_dir, tmp_path, monkeypatch):
    """A torch without the TorchScript exporter: the dynamo exporter writes an equally verified graph."""
    import torch

    from classifr.inference.classifier import Classifier

    real_export = torch.onnx.export

    def no_torchscript(*args, dynamo=True, **kwargs):
        if not dynamo:
            raise RuntimeError("the TorchScript exporter was removed")
        return real_export(*args, dynamo=dynamo, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_torchscript)
    classifier = Classifier.load(tiny_convnext_dir, version="tiny")
    export = export_onnx(classifier, tmp_path, sample_verification_images(40))
    assert export.verified, export.reason
    assert export.exporter == "dynamo" and export.opset >= 18 and export.max_abs_diff <= 1e-4


# --- refusals --------------------------------------------------------------------------------------


def test_a_disagreeing_graph_is_refused_and_deleted(tiny_convnext_dir, tmp_path, monkeypatch):
    """The exported graph's head bias is nudged by 0.01: verification catches it and names the difference."""
    import onnx
    from onnx import numpy_helper

    from classifr.inference.classifier import Classifier

    real = onnx_export._export_graph

    def perturbed(classifier, path):
        result = real(classifier, path)
        model = onnx.load(str(path))
        [bias] = [t for t in model.graph.initializer if t.name.endswith("classifier.bias")]
        bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(0.01), bias.name))
        onnx.save(model, str(path))
        return result

    monkeypatch.setattr(onnx_export, "_export_graph", perturbed)
    classifier = Classifier.load(tiny_convnext_dir, version="tiny")
    export = export_onnx(classifier, tmp_path, sample_verification_images(40), eval_set=([], []))
    assert not export.verified and export.images == 40
    assert "logits differ from PyTorch by up to 0.01" in export.reason
    assert export.max_abs_diff == pytest.approx(0.01, rel=0.05) and export.int8 is None
    assert not (tmp_path / ONNX_FILE).exists() and verified_onnx_path(tmp_path) is None
    assert read_export(tmp_path) == export


def _failing_exporter(*args, **kwargs):
    raise RuntimeError("exporter exploded")


def test_an_exporter_failure_is_recorded_not_raised(tiny_vit_dir, tmp_path, monkeypatch, caplog):
    import torch

    from classifr.inference.classifier import Classifier

    monkeypatch.setattr(torch.onnx, "export", _failing_exporter)
    export = export_onnx(Classifier.load(tiny_vit_dir, version="tiny"), tmp_path, sample_verification_images(8))
    assert not export.verified and export.reason == "export failed: RuntimeError: exporter exploded"
    assert export.images == 0 and export.max_abs_diff is None and export.int8 is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [EXPORT_FILE]
    assert "served by PyTorch" in caplog.text


def test_programmer_errors_raise(tiny_vit_dir, tmp_path):
    from classifr.inference.classifier import Classifier

    with pytest.raises(FileNotFoundError, match="no such folder"):
        export_onnx(Classifier.load(tiny_vit_dir, version="tiny"), tmp_path / "missing", [])
    with pytest.raises(TypeError, match="needs a Classifier"):
        export_onnx(object(), tmp_path, [])  # type: ignore[arg-type]


def test_no_readable_image_is_not_verified(tiny_vit_dir, tmp_path):
    from classifr.inference.classifier import Classifier

    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    folder = tmp_path / "out"
    folder.mkdir()
    export = export_onnx(Classifier.load(tiny_vit_dir, version="tiny"), folder, [text])
    assert not export.verified and export.reason == "no readable verification image"


def test_read_export_absent_corrupt_and_missing_graph(tmp_path):
    assert read_export(tmp_path) is None
    (tmp_path / EXPORT_FILE).write_text('{"verified": tr')
    broken = read_export(tmp_path)
    assert broken is not None and not broken.verified and "onnx_export.json cannot be read" in broken.reason
    good = OnnxExport(verified=True, reason=None, images=3, max_abs_diff=1e-6, top1_agreement=1.0,
                      exporter="torchscript", seconds=1.0)
    (tmp_path / EXPORT_FILE).write_text(json.dumps(good.to_json()))
    missing = read_export(tmp_path)
    assert not missing.verified and missing.reason == "verified but model.onnx is missing"
    (tmp_path / ONNX_FILE).write_bytes(b"graph")
    (tmp_path / EXPORT_FILE).write_text(json.dumps({**good.to_json(), "verified": "yes"}))
    assert not read_export(tmp_path).verified  # only JSON true vouches for a graph
    (tmp_path / EXPORT_FILE).write_text(json.dumps(["verified"]))
    assert "malformed" in read_export(tmp_path).reason
    (tmp_path / EXPORT_FILE).write_text(json.dumps(good.to_json()))
    assert read_export(tmp_path) == good and verified_onnx_path(tmp_path) == tmp_path / ONNX_FILE


# --- int8 ------------------------------------------------------------------------------------------


def test_int8_rule():
    assert int8_decision(0.90, 0.90) == (True, None)
    assert int8_decision(0.90, 0.895)[0] is True  # exactly half a point below
    assert int8_decision(0.90, 0.91)[0] is True
    kept, reason = int8_decision(0.90, 0.894)
    assert not kept and reason == "int8 accuracy 89.4% is more than 0.5 point below float32 90.0%"


@pytest.mark.parametrize(("forced", "kept"), [((0.9, 0.8), False), ((0.9, 0.897), True)])
def test_int8_is_kept_or_deleted_by_the_forced_accuracy(forced, kept, tiny_convnext_dir, tmp_path, monkeypatch):
    from classifr.inference.classifier import Classifier

    monkeypatch.setattr(onnx_export, "_accuracies", lambda *args: list(forced))
    images = sample_verification_images(8)
    export = export_onnx(Classifier.load(tiny_convnext_dir, version="tiny"), tmp_path, images, eval_set=(images, ["shirt"] * 8))
    assert export.verified and export.int8 is not None
    assert (export.int8.accuracy_fp32, export.int8.accuracy_int8) == forced
    assert export.int8.kept is kept and (tmp_path / INT8_FILE).is_file() is kept
    assert (export.int8.reason is None) is kept
    if kept:
        _session(tmp_path / INT8_FILE)  # a loadable graph
    assert json.loads((tmp_path / EXPORT_FILE).read_text())["int8"]["kept"] is kept


def test_no_eval_set_or_no_quantize_means_no_int8(tiny_convnext_dir, tmp_path):
    from classifr.inference.classifier import Classifier

    classifier = Classifier.load(tiny_convnext_dir, version="tiny")
    images = sample_verification_images(8)
    assert export_onnx(classifier, tmp_path, images).int8 is None
    assert export_onnx(classifier, tmp_path, images, eval_set=(images, ["hat"] * 8), quantize=False).int8 is None
    assert json.loads((tmp_path / EXPORT_FILE).read_text())["int8"] is None and not (tmp_path / INT8_FILE).exists()


def test_sample_images_are_varied_real_photo_crops():
    images = sample_verification_images(200)
    assert len(images) == 200 and len(images[:5]) == 5
    sample = [images[i] for i in range(0, 200, 5)]
    assert len({img.size for img in sample}) >= 5 and all(img.mode == "RGB" for img in sample)
    assert len({img.tobytes() for img in sample}) == len(sample)  # crops, scales, flips, rotations: all different
    assert np.asarray(images[0]).std() > 10  # a photo, not a blank


# --- publishing --------------------------------------------------------------------------------------


def _registry_with_v1(root: Path, checkpoint: Path):
    from classifr.versions.registry import LocalRegistry

    registry = LocalRegistry(root)
    registry.publish(lambda folder: shutil.copytree(checkpoint, folder, dirs_exist_ok=True), parent=None, aliases=["production"])
    return registry


def _version_files(checkpoint: Path, png: Path, **extra):
    from PIL import Image

    from classifr.core.labels import LabelSet
    from classifr.inference.classifier import Classifier
    from training.publish import VersionFiles

    Image.new("RGB", (8, 8)).save(png)
    classifier = Classifier.load(checkpoint, version="v1")
    return VersionFiles(
        model=classifier.model, processor_source=checkpoint, labels=LabelSet(classifier.labels.names), labels_added=[],
        parent="v1", strategy="head", hyperparameters={}, metrics={"accuracy": 0.5, "macro_f1": 0.5, "num_images": 8},
        comparison={}, gate={"passed": True, "reasons": []}, datasets={}, train_counts={}, confusion_png=png, **extra,
    )


def test_publish_exports_verifies_and_checks_int8_on_the_eval_split(tiny_convnext_dir, clothing_dir, tmp_path):
    from training.publish import publish

    registry = _registry_with_v1(tmp_path / "registry", tiny_convnext_dir)
    photos = _clothing_photos(clothing_dir, 3)
    files = _version_files(tiny_convnext_dir, tmp_path / "c.png", eval_images=photos, eval_labels=["shoes"] * len(photos), onnx_int8=True)
    info = publish(registry, files, metadata={})
    folder = registry.local_path(info.version)
    export = read_export(folder)
    assert export.verified and export.images == len(photos)
    assert export.int8 is not None and export.int8.accuracy_fp32 is not None
    card = (folder / "README.md").read_text()
    assert "ONNX: verified \\(max \\|Δlogit\\|" in card and f"on {len(photos)} images" in card


def test_publish_still_publishes_when_the_export_fails(tiny_vit_dir, tmp_path, monkeypatch):
    import torch

    from training.publish import VersionFiles, publish

    registry = _registry_with_v1(tmp_path / "registry", tiny_vit_dir)
    monkeypatch.setattr(torch.onnx, "export", _failing_exporter)
    files = _version_files(tiny_vit_dir, tmp_path / "c.png")
    info = publish(registry, files, metadata={})
    assert info.version == "v2" and registry.get("candidate").version == "v2"
    folder = registry.local_path("v2")
    assert (folder / "model.safetensors").is_file() and not (folder / ONNX_FILE).exists()
    export = read_export(folder)
    assert not export.verified and "exporter exploded" in export.reason
    assert "ONNX: not verified, served by PyTorch: export failed" in (folder / "README.md").read_text()
    with pytest.raises(ValueError, match="2 eval images but 1 eval labels"):
        VersionFiles(**{**files.__dict__, "eval_images": [Path("a"), Path("b")], "eval_labels": ["x"]})


@pytest.mark.slow
def test_bootstrap_publishes_v1_even_when_the_export_fails(tmp_path, monkeypatch):
    import torch

    from classifr.app.bootstrap import ensure_default_version
    from classifr.versions.registry import LocalRegistry

    monkeypatch.setattr(torch.onnx, "export", _failing_exporter)
    registry = LocalRegistry(tmp_path / "registry")
    info = ensure_default_version(registry)
    assert info.version == "v1" and info.aliases == ("production",)
    folder = registry.local_path("v1")
    export = read_export(folder)
    assert not export.verified and "exporter exploded" in export.reason and not (folder / ONNX_FILE).exists()
    assert "**ONNX:** not verified, served by PyTorch" in (folder / "README.md").read_text()


@pytest.mark.slow
def test_bootstrapped_v1_has_a_verified_export(project_home):
    """The session's v1 is bootstrapped with TEST_ONNX_VERIFY_IMAGES verification photos (tests/conftest.py;
    200 in production, checked on v1_export above)."""
    folder = project_home / "registry" / "versions" / "v1"
    export = read_export(folder)
    assert export is not None and export.verified, export
    assert export.images == TEST_ONNX_VERIFY_IMAGES and export.max_abs_diff <= 1e-4 and export.int8 is None
    assert "**ONNX:** verified (max |Δlogit|" in (folder / "README.md").read_text()


# --- the command line (classifr.cli.main in this process: tests/test_cli.py) --------------------------


@pytest.mark.slow
def test_cli_export_v1_gives_the_served_top1(fresh_home, default_classifier, sandal_photo, tmp_path):
    out = tmp_path / "X.onnx"
    done = run_cli(fresh_home, "export", "v1", "--format", "onnx", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["out"] == str(out) and summary["verified"] is True and summary["source"] == "registry"
    assert CONTRACT_KEYS <= summary.keys() and summary["version"] == "v1"
    logits, _ = _session(out).run(None, {"pixel_values": _pixels(default_classifier, [sandal_photo])})
    assert default_classifier.labels.names[int(logits.argmax())] == "sandal"

    text = run_cli(fresh_home, "export", "production", cwd=tmp_path)  # default --out: ./v1.onnx
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("wrote v1.onnx (v1, registry): max |logit difference|")
    assert (tmp_path / "v1.onnx").read_bytes() == out.read_bytes()


def test_cli_export_bad_version_and_bad_format(tmp_path):
    """Refused before any model is loaded, so a registry whose v1 is only a config.json will do."""
    home = config_only_home(tmp_path / "home")
    done = run_cli(home, "export", "v9", "--out", tmp_path / "a.onnx")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "v9" in done.stderr
    assert not (tmp_path / "a.onnx").exists()
    bad = run_cli(home, "export", "v1", "--format", "tflite")  # argparse: SystemExit(2)
    assert bad.returncode == 2 and "invalid choice: 'tflite'" in bad.stderr
    nowhere = run_cli(home, "export", "v1", "--out", tmp_path / "no" / "such" / "x.onnx")
    assert nowhere.returncode == 2 and "--out" in nowhere.stderr


@pytest.mark.slow  # verified on the 200 sample photos, as the command does
def test_cli_exports_an_older_version_now(tiny_vit_dir, tmp_path):
    """A version published before ONNX exports: exported and verified on the sample photos, the registry untouched."""
    home = tmp_path / "home"
    _registry_with_v1(home / "registry", tiny_vit_dir)
    before = sorted(p.name for p in (home / "registry" / "versions" / "v1").iterdir())
    done = run_cli(home, "export", "v1", "--out", tmp_path / "tiny.onnx", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["source"] == "exported now" and summary["verified"] and summary["images"] == 200
    _session(tmp_path / "tiny.onnx")
    assert sorted(p.name for p in (home / "registry" / "versions" / "v1").iterdir()) == before


# --- the Model tab's download ------------------------------------------------------------------------


@pytest.mark.slow
def test_model_tab_offers_the_verified_graph_as_version_onnx(project_home, default_classifier, tiny_vit_dir, tmp_path):
    import gradio as gr

    from classifr.app.service import ClassifrService
    from classifr.core.config import Settings
    from classifr.ui.model import OnnxDownloads, build_model_tab
    from classifr.versions.registry import LocalRegistry

    root = tmp_path / "registry"
    shutil.copytree(project_home / "registry", root)
    registry = LocalRegistry(root)
    registry.publish(lambda folder: shutil.copytree(tiny_vit_dir, folder, dirs_exist_ok=True), parent="v1")  # no export
    service = ClassifrService(Settings(home=tmp_path), registry=registry, classifier=default_classifier)
    downloads = OnnxDownloads(service)
    path = Path(downloads.path(None))
    assert path.name == "v1.onnx" and path.read_bytes() == (root / "versions" / "v1" / ONNX_FILE).read_bytes()
    assert downloads.path("production") == str(path)
    assert downloads.path("v2") is None and downloads.path("v99") is None
    update = downloads.button("v1")
    assert update["visible"] is True and update["value"] == str(path) and update["label"] == "Download ONNX (v1)"
    assert downloads.button("v2")["visible"] is False
    with gr.Blocks() as demo:
        build_model_tab(service, demo)
    assert any(getattr(block, "elem_id", None) == "model-onnx-download" for block in demo.blocks.values())
