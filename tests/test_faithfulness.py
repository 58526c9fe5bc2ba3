"""Faithfulness of explanations (docs/features.md, "Faithfulness"): deletion and insertion curves on
the real default model and a real photo, the randomisation check, and the numbers in the service,
the CLI's --json and the API's JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from classifr.core.errors import ClassifrError
from classifr.inference.explain import Explainer
from classifr.inference.faithfulness import (
    FRACTIONS,
    Faithfulness,
    captum_infidelity,
    measure,
    randomized_rank_correlation,
)


@pytest.fixture(scope="module")
def explainer(default_classifier):
    return Explainer(default_classifier)


@pytest.fixture(scope="module")
def sandal(sandal_photo):
    return Image.open(sandal_photo).convert("RGB")


@pytest.fixture(scope="module")
def gradcam(explainer, sandal):
    explanation = explainer.explain(sandal, method="gradcam")
    pixels = explainer.classifier.preprocess([sandal]).contiguous()
    return explanation, pixels


@pytest.mark.slow
def test_curves_start_and_end_at_the_intact_probability(explainer, gradcam):
    explanation, pixels = gradcam
    measured = measure(explainer, pixels, explanation.heatmap, explanation.target_index)
    assert len(measured.deletion) == len(measured.insertion) == len(FRACTIONS) == 11
    assert all(0.0 <= p <= 1.0 for p in measured.deletion + measured.insertion)
    # Nothing removed, or everything revealed, is the image itself.
    assert measured.score == pytest.approx(explanation.score, abs=1e-4)
    assert measured.deletion[0] == pytest.approx(explanation.score, abs=1e-4)
    assert measured.insertion[-1] == pytest.approx(explanation.score, abs=1e-4)
    # Everything removed and nothing revealed are both the blurred baseline.
    assert measured.deletion[-1] == pytest.approx(measured.insertion[0], abs=1e-4)
    assert measured.after_removal == measured.deletion[1]
    assert measured.target == "sandal" and 0.0 <= measured.deletion_auc <= 1.0 and 0.0 <= measured.insertion_auc <= 1.0


@pytest.mark.slow
def test_a_map_on_the_object_deletes_faster_than_its_inverse(explainer, gradcam):
    explanation, pixels = gradcam
    on_object = measure(explainer, pixels, explanation.heatmap, explanation.target_index)
    inverted = measure(explainer, pixels, 1.0 - explanation.heatmap, explanation.target_index)
    assert on_object.deletion_auc < inverted.deletion_auc
    assert on_object.insertion_auc > inverted.insertion_auc


def test_the_sentence_names_the_label_and_both_percentages():
    def faithfulness(score: float, after: float) -> Faithfulness:
        return Faithfulness(
            target="sandal", score=score, after_removal=after, deletion=(score, after), insertion=(after, score),
            deletion_auc=0.2, insertion_auc=0.6, seconds=0.1,
        )

    assert faithfulness(0.9, 0.12).sentence() == (
        "Removing the 10% of the image this map points at drops the probability of 'sandal' from 90% to 12%."
    )
    small = faithfulness(0.9, 0.85).sentence()
    assert "only from 90% to 85%" in small and "may not show what the model used" in small
    assert "raises the probability of 'sandal' from 20% to 30%" in faithfulness(0.2, 0.3).sentence()
    assert json.loads(json.dumps(faithfulness(0.9, 0.12).to_json()))["sentence"].startswith("Removing the 10%")


@pytest.mark.slow
def test_the_measured_sentence_names_the_label_and_both_percentages(explainer, gradcam):
    explanation, pixels = gradcam
    measured = measure(explainer, pixels, explanation.heatmap, explanation.target_index)
    sentence = measured.sentence()
    assert "'sandal'" in sentence
    assert f"from {measured.score:.0%} to {measured.after_removal:.0%}" in sentence


def test_a_heatmap_of_another_shape_is_refused_naming_both(tiny_vit_dir, sandal):
    from classifr.inference.classifier import Classifier

    tiny = Explainer(Classifier.load(tiny_vit_dir, version="tiny-vit"))
    pixels = tiny.classifier.preprocess([sandal]).contiguous()  # 32 x 32
    with pytest.raises(ClassifrError, match=r"\(7, 7\).*\(32, 32\)"):
        measure(tiny, pixels, np.zeros((7, 7), np.float32), 0)


@pytest.mark.slow
def test_randomising_the_top_layers_changes_a_copy_not_the_original(explainer, sandal, gradcam):
    explanation, _ = gradcam
    weights_before = {name: value.clone() for name, value in explainer.model.state_dict().items()}
    correlation = randomized_rank_correlation(explainer, sandal, "gradcam", None)
    assert -1.0 <= correlation <= 1.0
    assert correlation < 0.9  # Grad-CAM reads the re-initialised stage: its map must change
    after = explainer.explain(sandal, method="gradcam")
    assert np.array_equal(after.heatmap, explanation.heatmap) and after.score == explanation.score
    assert all(torch.equal(value, weights_before[name]) for name, value in explainer.model.state_dict().items())


@pytest.mark.slow
def test_captum_infidelity_is_a_finite_number(explainer, gradcam):
    explanation, pixels = gradcam
    assert np.isfinite(captum_infidelity(explainer, pixels, explanation.heatmap, explanation.target_index))


# --- the service, the CLI and the API ----------------------------------------------------------


def test_the_service_measures_its_own_explanation_and_refuses_another_versions(maintained_service, sandal_photo):
    import dataclasses

    result = maintained_service.explain(sandal_photo, method="occlusion")
    measured = maintained_service.faithfulness(sandal_photo, result)
    assert measured.target == result.explanation.target
    assert measured.score == pytest.approx(result.explanation.score, abs=1e-4)
    assert len(measured.deletion) == 11

    stale = dataclasses.replace(result, version="v0")
    with pytest.raises(ClassifrError, match="the model changed since this explanation"):
        maintained_service.faithfulness(sandal_photo, stale)
    layers = maintained_service.explain_layers(sandal_photo)
    with pytest.raises(ClassifrError, match="no heatmap"):
        maintained_service.faithfulness(sandal_photo, layers)


def test_cli_explain_json_adds_the_faithfulness_and_the_text_its_sentence(tmp_path, tiny_default_version, sandal_photo):
    from classifr.app.project import open_service
    from classifr.core.config import Settings
    from tests.test_cli import run_cli

    home = tmp_path / "home"
    open_service(Settings(home=home, num_threads=1, backend="torch"), default_version=tiny_default_version).close()
    out = tmp_path / "why.png"
    done = run_cli(home, "explain", sandal_photo, "--method", "gradcam", "--out", out, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    faithfulness = summary["faithfulness"]
    assert faithfulness["target"] == summary["target"] and len(faithfulness["deletion"]) == 11
    assert faithfulness["sentence"].startswith("Removing the 10% of the image")

    text = run_cli(home, "explain", sandal_photo, "--method", "gradcam", "--out", out)
    assert text.returncode == 0 and text.stdout.splitlines()[-1].startswith("Removing the 10% of the image")
    layers = run_cli(home, "explain", sandal_photo, "--method", "layers", "--out", out, "--json")
    assert layers.returncode == 0 and "faithfulness" not in json.loads(layers.stdout)


def test_api_json_explanation_carries_the_faithfulness(tiny_api, sandal_photo):
    answer = tiny_api.post("/explanations?method=gradcam&format=json", content=sandal_photo.read_bytes())
    png = tiny_api.post("/explanations?method=gradcam", content=sandal_photo.read_bytes())
    assert answer.status_code == 200, answer.text
    details = answer.json()
    assert details["faithfulness"]["target"] == details["target"]
    assert details["faithfulness"]["deletion"][0] == pytest.approx(details["score"], abs=1e-4)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
