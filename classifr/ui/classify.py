"""The Classify tab: an image in, the top labels, their probabilities and the serving version out."""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr

from classifr.images import ImageLimits, describe_limits
from classifr.service import ClassifrService, PredictionResult
from classifr.ui.components import ImageFileInput

logger = logging.getLogger(__name__)


def _label_value(result: PredictionResult) -> dict[str, float] | None:
    if not result.ok:
        return None
    return {p.label: p.score for p in result.predictions}


def _status(result: PredictionResult) -> str:
    if not result.ok:
        return f"**Could not classify this image:** {result.error}"
    top = result.predictions[0]
    return f"**{top.label}** ({top.score:.1%}) · model version `{result.version}`"


def make_predict(service: ClassifrService):
    """The batched `predict` event: lists in, one list per output component out.

    A bad image yields an error message for that caller only; raising would fail every request
    that happens to share its batch.
    """

    def predict(paths: list[str | None]) -> tuple[list, list, list]:
        present = [p for p in paths if p]
        names = [Path(p).name for p in present]
        results = iter(service.predict_batch(present, names=names))
        labels, payloads, statuses = [], [], []
        for path in paths:
            if not path:
                labels.append(None)
                payloads.append(None)
                statuses.append("")
                continue
            result = next(results)
            labels.append(_label_value(result))
            payloads.append(result.to_json())
            statuses.append(_status(result))
            if not result.ok:
                logger.info("rejected upload %s: %s", result.image, result.error)
        return labels, payloads, statuses

    return predict


def build_classify_tab(service: ClassifrService, examples: list[str]) -> None:
    limits: ImageLimits = service.limits
    with gr.Row():
        with gr.Column():
            image = ImageFileInput(
                type="filepath",
                image_mode=None,
                label="Image",
                sources=["upload", "webcam", "clipboard"],
                elem_id="classify-image",
                height=360,
            )
            classify = gr.Button("Classify", variant="primary", elem_id="classify-button")
            gr.Markdown(f"Accepted: {describe_limits(limits)}.")
            if examples:
                gr.Examples(examples=examples, inputs=image, label="Examples")
        with gr.Column():
            status = gr.Markdown(elem_id="classify-status")
            label = gr.Label(num_top_classes=service.settings.top_k, label="Top labels", elem_id="classify-label")
            with gr.Accordion("Raw result (JSON)", open=False):
                payload = gr.JSON(label="Result", elem_id="classify-json")
    gr.on(
        triggers=[image.change, classify.click],
        fn=make_predict(service),
        inputs=image,
        outputs=[label, payload, status],
        api_name="predict",
        batch=True,
        max_batch_size=service.settings.max_batch_size,
        # One batch at a time: the forward pass already uses every core; more would oversubscribe.
        concurrency_limit=1,
        concurrency_id="model",
    )
