"""The Classify tab: an image in, the top labels, their probabilities and the serving version out."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import gradio as gr

from classifr.app.service import ClassifrService, PredictionResult
from classifr.core.images import ImageLimits, describe_limits
from classifr.ui.components import ImageFileInput
from classifr.ui.errors import shows_errors
from classifr.ui.feedback import build_feedback_panel
from classifr.ui.privacy import classify_note
from classifr.ui.requests import client_of, waited_s

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


def origin_of(request: gr.Request | None) -> str:
    """"api" for gradio_client callers (it sends `x-gradio-user: api`), else "ui".

    A batched event sees only the first request of its batch, so a batch mixing both is counted
    as its first caller's origin.
    """
    headers = getattr(request, "headers", None) or {}
    return "api" if headers.get("x-gradio-user") == "api" else "ui"


def make_predict(service: ClassifrService):
    """The batched `predict` event: lists in, one list per output component out.

    A bad image yields an error message for that caller only; raising would fail every request
    that happens to share its batch.
    """

    def predict(paths: list[str | None], request: gr.Request) -> tuple[list, list, list]:
        started = time.perf_counter()
        waited = waited_s(request, now=started)  # the batch's first request: the others joined later
        present = [p for p in paths if p]
        names = [Path(p).name for p in present]
        results = iter(service.predict_batch(present, names=names, origin=origin_of(request)))
        labels, payloads, statuses = [], [], []
        caller = client_of(request) if len(paths) == 1 else f"one of {len(paths)} batched callers"
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
                logger.info("rejected upload %s from %s: %s", result.image, caller, result.error)
        service.observe_request(wait_s=waited, work_s=time.perf_counter() - started)
        return labels, payloads, statuses

    return predict


EXPLAIN_METHODS = [
    ("Grad-CAM (fast)", "gradcam"),
    ("Integrated Gradients (about 2 s)", "ig"),
    ("Occlusion (about 2 s)", "occlusion"),
]
METHOD_NAMES = {value: name for name, value in EXPLAIN_METHODS}
DISPLAY_SIDE = 1024  # explanations are rendered at most this large for the page


def targets_of(payload: dict | None):
    """After a prediction: offer its labels as explanation targets, the top one selected."""
    labels = [p["label"] for p in (payload or {}).get("predictions", [])]
    return gr.update(choices=labels, value=labels[0] if labels else None)


def make_explain(service: ClassifrService):
    @shows_errors
    def explain(path: str | None, method: str, target: str | None):
        if not path:
            return None, ""
        result = service.explain(path, method=method, target=target or None, max_side=DISPLAY_SIDE, name=Path(path).name)
        e = result.explanation
        delta = f", convergence delta {e.convergence_delta:+.3f}" if e.convergence_delta is not None else ""
        caption = (
            f"{METHOD_NAMES[method]} for **{e.target}** ({e.score:.1%}) · "
            f"{e.settings}{delta} · {e.seconds:.2f} s · model `{result.version}`. Bright = evidence for the label; "
            "the dimmed border lies outside what the model sees."
        )
        return result.picture, caption

    return explain


def make_explain_layers(service: ClassifrService):
    @shows_errors
    def explain_layers(path: str | None):
        if not path:
            return None
        return service.explain_layers(path, name=Path(path).name).picture

    return explain_layers


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
            gr.Markdown(classify_note(service.settings), elem_id="classify-privacy")
            if examples:
                gr.Examples(examples=examples, inputs=image, label="Examples")
        with gr.Column():
            status = gr.Markdown(elem_id="classify-status")
            label = gr.Label(num_top_classes=service.settings.top_k, label="Top labels", elem_id="classify-label")
            with gr.Accordion("Raw result (JSON)", open=False):
                payload = gr.JSON(label="Result", elem_id="classify-json")
    feedback_slot = gr.Column()  # filled below, once the predict event exists
    with gr.Accordion("Why? What the model looked at", open=True):
        with gr.Row():
            method = gr.Dropdown(EXPLAIN_METHODS, value="gradcam", label="Method", elem_id="explain-method")
            target = gr.Dropdown([], label="Label to explain", allow_custom_value=True, elem_id="explain-target")
            explain_button = gr.Button("Explain", elem_id="explain-button")
        explanation = gr.Image(label="Explanation", type="pil", interactive=False, elem_id="explain-image")
        caption = gr.Markdown(elem_id="explain-caption")
    with gr.Accordion("How each stage of the network sees this image", open=False):
        layers_button = gr.Button("Show the stages")
        layers = gr.Image(label="Mean activation per stage, shallow to deep", type="pil", interactive=False)
    explain = make_explain(service)
    # Explanations are their own queued events: they never hold up the predict queue.
    explain_queue = dict(concurrency_limit=1, concurrency_id="explain")
    predicted = gr.on(
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
    with feedback_slot:
        build_feedback_panel(service, image, payload, predicted)
    predicted.then(targets_of, inputs=payload, outputs=target, api_visibility="undocumented").then(
        explain, inputs=[image, method, target], outputs=[explanation, caption], api_name="explain_after_predict",
        api_visibility="undocumented", **explain_queue,
    )
    explain_button.click(explain, inputs=[image, method, target], outputs=[explanation, caption], api_name="explain", **explain_queue)
    layers_button.click(
        make_explain_layers(service), inputs=image, outputs=layers, api_name="explain_layers", **explain_queue
    )
