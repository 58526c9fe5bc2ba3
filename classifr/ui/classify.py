"""The Classify tab: an image in, the top labels, their probabilities and the serving version out.

A photo is predicted, and logged, once when it arrives: an upload, a webcam capture or a paste
fires the image's `upload` event once, and an example's click loads it and then predicts. The
explanation and the "Is this right?" answer reuse that prediction (its id), so one photo is one
row of the prediction log (docs/features.md, "Classify").
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import gradio as gr

from classifr.app.service import ClassifrService, PredictionResult
from classifr.core.errors import ClassifrError
from classifr.core.images import ImageLimits, describe_limits
from classifr.core.text import escape_markdown as inert
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


def _status(result: PredictionResult, guess_below: float) -> str:
    """The line above the scores: the top label as the answer, or as a guess when its score is
    under CLASSIFR_GUESS_BELOW (docs/settings.md), so a 6% label never reads like a verdict."""
    if not result.ok:
        return f"**Could not classify this image:** {result.error}"
    top = result.predictions[0]
    if top.score < guess_below:
        return f"Not sure — maybe *{inert(top.label)}* ({top.score:.1%}) · model version `{result.version}`"
    return f"**{inert(top.label)}** ({top.score:.1%}) · model version `{result.version}`"


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
            statuses.append(_status(result, service.settings.guess_below))
            if not result.ok:
                logger.info("rejected upload %s from %s: %s", result.image, caller, result.error)
        service.observe_request(wait_s=waited, work_s=time.perf_counter() - started)
        return labels, payloads, statuses

    return predict


EXPLAIN_METHODS = [
    ("Grad-CAM (fast)", "gradcam"),
    ("GradCAM++ (fast)", "gradcam++"),
    ("Integrated Gradients (about 2 s)", "ig"),
    ("Occlusion (about 2 s)", "occlusion"),
]
METHOD_NAMES = {value: name for name, value in EXPLAIN_METHODS}
DISPLAY_SIDE = 1024  # explanations are rendered at most this large for the page


def targets_of(payload: dict | None):
    """After a prediction: offer its labels as explanation targets, the top one selected; the
    previous photo's stage grid and trust line are cleared."""
    labels = [p["label"] for p in (payload or {}).get("predictions", [])]
    return gr.update(choices=labels, value=labels[0] if labels else None), None, ""


def make_explain(service: ClassifrService):
    @shows_errors
    def explain(path: str | None, method: str, target: str | None):
        if not path:
            return None, "", None
        result = service.explain(path, method=method, target=target or None, max_side=DISPLAY_SIDE, name=Path(path).name)
        e = result.explanation
        delta = f", convergence delta {e.convergence_delta:+.3f}" if e.convergence_delta is not None else ""
        caption = (
            f"{METHOD_NAMES[method]} for **{e.target}** ({e.score:.1%}) · "
            f"{e.settings}{delta} · {e.seconds:.2f} s · model `{result.version}`. Bright = evidence for the label; "
            "the dimmed border lies outside what the model sees."
        )
        # The map's trust line comes from a second event, so that it never delays the map itself;
        # `result` goes to this visitor's session state for it (not to API callers).
        return result.picture, caption, result

    return explain


def make_trust(service: ClassifrService):
    """The faithfulness line under a heatmap (docs/explanations.md): what removing what the map
    points at does to the label's probability."""

    def trust(path: str | None, result) -> str:
        if not path or result is None:
            return ""
        try:
            score = service.faithfulness(path, result, name=Path(path).name)
        except ClassifrError as err:
            return f"*Not measured: {err}*"
        return (
            f"**How far to trust this map:** {score.sentence()} "
            f"(deletion AUC {score.deletion_auc:.2f}, lower is better; insertion AUC {score.insertion_auc:.2f}, "
            f"higher is better; {score.seconds:.2f} s)"
        )

    return trust


def make_explain_layers(service: ClassifrService):
    @shows_errors
    def explain_layers(path: str | None):
        if not path:
            return None
        return service.explain_layers(path, name=Path(path).name).picture

    return explain_layers


def build_classify_tab(service: ClassifrService, examples: list[str]) -> None:
    limits: ImageLimits = service.limits
    example_clicks = None
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
            gr.Markdown(f"Accepted: {describe_limits(limits)}.")
            gr.Markdown(classify_note(service.settings), elem_id="classify-privacy")
            if examples:
                example_clicks = gr.Examples(examples=examples, inputs=image, label="Examples", elem_id="classify-examples")
        with gr.Column():
            status = gr.Markdown(elem_id="classify-status")
            # No large heading: the status line above says whether the top label is an answer or a guess.
            label = gr.Label(
                num_top_classes=service.settings.top_k, label="Top labels", show_heading=False, elem_id="classify-label"
            )
            with gr.Accordion("Raw result (JSON)", open=False):
                payload = gr.JSON(label="Result", elem_id="classify-json")
    feedback_slot = gr.Column()  # filled below, once the predict events exist
    with gr.Accordion("Why? What the model looked at", open=True):
        with gr.Row():
            method = gr.Dropdown(EXPLAIN_METHODS, value="gradcam", label="Method", elem_id="explain-method")
            target = gr.Dropdown([], label="Label to explain", allow_custom_value=True, elem_id="explain-target")
            explain_button = gr.Button("Explain", elem_id="explain-button")
        explanation = gr.Image(label="Explanation", type="pil", interactive=False, elem_id="explain-image")
        caption = gr.Markdown(elem_id="explain-caption")
        trust = gr.Markdown(elem_id="explain-trust")
        explained = gr.State(None)  # this visitor's last explanation, for its trust line
    with gr.Accordion("How each stage of the network sees this image", open=False):
        layers_button = gr.Button("Show the stages", elem_id="layers-button")
        layers = gr.Image(
            label="Mean activation per stage, shallow to deep", type="pil", interactive=False, elem_id="layers-image"
        )
    explain = make_explain(service)
    # Explanations are their own queued events: they never hold up the predict queue.
    explain_queue = {"concurrency_limit": 1, "concurrency_id": "explain"}
    predict_event = {
        "fn": make_predict(service),
        "inputs": image,
        "outputs": [label, payload, status],
        "batch": True,
        "max_batch_size": service.settings.max_batch_size,
        # One batch at a time: the forward pass already uses every core; more would oversubscribe.
        "concurrency_limit": 1,
        "concurrency_id": "model",
    }
    # `upload` fires once per new photo (file, webcam, paste); `change` fired twice when a photo
    # replaced another, and on clearing (docs/features.md, "Classify").
    predicted = [image.upload(api_name="predict", **predict_event)]
    if example_clicks is not None:
        # An example's click sets the image without an upload: predict once it is loaded.
        predicted.append(example_clicks.load_input_event.then(api_visibility="undocumented", **predict_event))
    with feedback_slot:
        build_feedback_panel(service, image, payload, predicted)
    trust_event = {"fn": make_trust(service), "inputs": [image, explained], "outputs": trust,
                   "api_visibility": "undocumented", **explain_queue}
    explain_outputs = [explanation, caption, explained]
    for event in predicted:
        event.then(targets_of, inputs=payload, outputs=[target, layers, trust], api_visibility="undocumented").then(
            explain, inputs=[image, method, target], outputs=explain_outputs, api_visibility="undocumented",
            **explain_queue,
        ).then(**trust_event)
    image.clear(
        lambda: (None, None, "", gr.update(choices=[], value=None), None, "", None, None, ""),
        outputs=[label, payload, status, target, explanation, caption, layers, explained, trust],
        api_visibility="undocumented",
        queue=False,
    )
    explain_button.click(
        explain, inputs=[image, method, target], outputs=explain_outputs, api_name="explain", **explain_queue
    ).then(**trust_event)
    layers_button.click(
        make_explain_layers(service), inputs=image, outputs=layers, api_name="explain_layers", **explain_queue
    )
