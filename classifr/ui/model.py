"""The Model tab: the card of the serving version (or any other): architecture, labels, data, metrics, lineage.

Read-only and public: the API `model_card` takes a version ("" for the serving one) and returns
the card's Markdown, the confusion matrix and the full overview as JSON.
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr
from PIL import Image

from classifr.errors import ClassifrError
from classifr.model_overview import ModelOverview, describe_model, describe_version, render_markdown
from classifr.service import ClassifrService

logger = logging.getLogger(__name__)


def version_choices(service: ClassifrService) -> list[tuple[str, str]]:
    """(shown, value) pairs, newest first, e.g. ("v3 · production · serving", "v3")."""
    serving = service.serving_version
    if service.registry is None:
        return [(f"{serving} · serving", serving)]
    choices = []
    for info in reversed(service.list_versions()):
        tags = list(info.aliases) + (["serving"] if info.version == serving else [])
        choices.append((" · ".join([info.version, *tags]), info.version))
    return choices


def overview_of(service: ClassifrService, ref: str | None) -> ModelOverview:
    """The overview of `ref` (default: the serving version), with the project's pending labels."""
    classifier = service.classifier
    repo = service.settings.dataset_repo
    if service.registry is None:
        return describe_model(classifier, dataset=service.dataset, dataset_repo=repo)
    return describe_version(
        service.registry, ref or classifier.version, classifier=classifier, dataset=service.dataset, dataset_repo=repo
    )


def make_model_card(service: ClassifrService):
    def model_card(version: str | None) -> tuple[str, Image.Image | None, dict[str, Any]]:
        try:
            overview = overview_of(service, version)
        except ClassifrError as err:  # an unknown version, a broken registry record
            raise gr.Error(str(err)) from None
        return render_markdown(overview), _picture(overview), overview.to_json()

    return model_card


def _picture(overview: ModelOverview) -> Image.Image | None:
    """The confusion matrix as a picture (a PIL image: the registry may lie outside Gradio's allowed paths)."""
    if overview.confusion_matrix is None:
        return None
    try:
        with Image.open(overview.confusion_matrix) as image:
            return image.convert("RGB")
    except OSError as err:
        logger.warning("cannot open %s: %s", overview.confusion_matrix, err)
        return None


def build_model_tab(service: ClassifrService, demo: gr.Blocks) -> None:
    with gr.Row():
        version = gr.Dropdown(
            choices=version_choices(service), value=service.serving_version, label="Version",
            interactive=service.registry is not None, elem_id="model-version", scale=3,
            # Versions published after start-up must be accepted too; unknown ones get a readable error.
            allow_custom_value=True,
        )
        refresh = gr.Button("Refresh", scale=1)
    card = gr.Markdown(elem_id="model-card")
    with gr.Accordion("Confusion matrix (held-out test split)", open=False):
        confusion = gr.Image(
            label="Confusion matrix", type="pil", format="png", interactive=False, buttons=["download", "fullscreen"],
            placeholder="No confusion matrix: this version was not evaluated by Classifr.",
        )
    with gr.Accordion("Full overview (JSON)", open=False):
        payload = gr.JSON(label="Overview")
    model_card = make_model_card(service)
    outputs = [card, confusion, payload]

    def choices(selected: str | None) -> dict:
        options = version_choices(service)
        values = {value for _, value in options}
        return gr.update(choices=options, value=selected if selected in values else service.serving_version)

    def on_load() -> tuple[dict, str, Image.Image | None, dict[str, Any]]:
        return (choices(None), *model_card(None))

    refresh.click(choices, inputs=version, outputs=version, api_visibility="undocumented").then(
        model_card, inputs=version, outputs=outputs, api_name="model_card"
    )
    version.input(model_card, inputs=version, outputs=outputs, api_visibility="undocumented")
    demo.load(on_load, outputs=[version, *outputs], api_visibility="undocumented")
