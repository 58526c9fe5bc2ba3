"""'Is this right?': contributors confirm or correct a prediction, into the project dataset.

`ProjectDatasetCallback` is Gradio's flagging boundary over the project dataset, used the way
Gradio's Blocks flagging is: `setup(components, flagging_dir)` once when the panel is built, then
`flag(flag_data, flag_option=..., username=...)` for every Confirm and Correct. Gradio 5+ has no
Hub dataset saver, and ours writes where everything else of the project lives (CLASSIFR_HOME/dataset,
synced to the Hub by classifr.data.hub_sync) through `ClassifrService.record_feedback`, so
`flagging_dir` is only recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.components import Component
from gradio.flagging import FlaggingCallback

from classifr.app.service import ClassifrService
from classifr.core.errors import ClassifrError
from classifr.core.text import escape_markdown as inert
from classifr.data.dataset import NEW_CATEGORY, AddResult
from classifr.ui.errors import shows_errors
from classifr.ui.privacy import contribution_note
from classifr.ui.storing import paused_notice

logger = logging.getLogger(__name__)

CONFIRM, CORRECT = "confirm", "correct"


class ProjectDatasetCallback(FlaggingCallback):
    """Flags (image path, prediction payload, label) into the project dataset.

    `flag_option` is "confirm" (store the model's own top label) or "correct" (store `label`).
    The prediction payload is the `predict` result the contributor saw, or its id; only its id is
    trusted, and what the model said comes from the server's prediction log. Without one, the
    serving model predicts again.
    """

    def __init__(self, service: ClassifrService) -> None:
        self.service = service
        self.components: list[Component] = []
        self.flagging_dir: str | None = None

    def setup(self, components: Sequence[Component], flagging_dir: str | None = None) -> None:
        if len(components) != 3:
            raise ValueError(f"expected the image, prediction and label components, got {len(components)}")
        self.components = list(components)
        self.flagging_dir = flagging_dir

    def flag(
        self,
        flag_data: list[Any],
        flag_option: str | None = None,
        username: str | None = None,
        *,
        on_result: Callable[[AddResult], None] | None = None,
    ) -> int:
        """Store one confirmation or correction; the number of rows in the project dataset after it.

        `on_result` gets what was stored (added or a duplicate); ClassifrError says why when nothing was.
        """
        result = self._store(flag_data, flag_option, username)
        if on_result is not None:
            on_result(result)
        return self.service.dataset_stats()["total"]

    def _store(self, flag_data: Sequence[Any], flag_option: str | None, username: str | None) -> AddResult:
        image, prediction, label = flag_data
        if not image or not isinstance(image, str):
            raise ClassifrError("there is no image to store: classify an image first")
        if flag_option == CONFIRM:
            label = None  # the server's record says which label the model gave
        elif flag_option != CORRECT:
            raise ClassifrError(f"flag option must be {CONFIRM!r} or {CORRECT!r}, got {flag_option!r}")
        elif not label or label == NEW_CATEGORY:
            raise ClassifrError("choose the right label, or type the name of the new category")
        # `prediction` is whatever the browser or API caller sent back: the service reads only its
        # id and checks the rest against the prediction log (docs/api.md, "Feedback").
        result = self.service.record_feedback(
            image, label, prediction=prediction, contributor=username, name=Path(image).name
        )
        if not result.ok:
            raise ClassifrError(f"not stored: {result.reason}")
        return result


def describe(result: AddResult) -> str:
    """One Markdown line for the contributor about what was stored."""
    stored = "Already in the dataset" if result.status == "duplicate" else "Thank you, stored"
    text = f"**{stored}:** labelled *{inert(result.label)}*."
    if result.conflicts:
        others = ", ".join(inert(label) for label in result.conflicts)
        text += f" Note: this image was also labelled {others}; a maintainer will review the conflict."
    return text


def username_of(request: gr.Request | None, profile: gr.OAuthProfile | None = None) -> str | None:
    """The signed-in user: Gradio auth (`request.username`) or "Sign in with Hugging Face" on a Space."""
    if profile is not None:
        return profile.username
    return getattr(request, "username", None) if request is not None else None


def top_of(payload: Any) -> tuple[str | None, float | None]:
    """The top label and score of a predict result. The payload comes back from the browser, so it
    is only displayed, and only when it has the predict result's shape."""
    predictions = payload.get("predictions") if isinstance(payload, dict) else None
    first = predictions[0] if isinstance(predictions, list) and predictions else None
    if not isinstance(first, dict) or not isinstance(first.get("label"), str):
        return None, None
    score = first.get("score")
    return first["label"], float(score) if isinstance(score, (int, float)) else None


def choices_after(service: ClassifrService, payload: Any):
    """After a prediction: the labels to choose from, as they are now (categories created since
    start included), and the buttons (label, Confirm, Correct, and the hidden create button).

    A confident prediction is selected and Confirm, naming it, is the main action (a kiosk user only
    has to press it). Under CLASSIFR_GUESS_BELOW nothing is selected and Correct is the main
    action: the contributor picks or types the right label (docs/features.md, "Is this right?")."""
    top, score = top_of(payload)
    choices = [NEW_CATEGORY, *service.label_choices()]
    hide_create = gr.update(visible=False)
    if top is not None and score is not None and score >= service.settings.guess_below:
        confirm = gr.update(value=f"Confirm: it is {top}", interactive=True, variant="primary")
        return gr.update(choices=choices, value=top), confirm, gr.update(variant="secondary"), hide_create
    confirm = gr.update(value=f"Yes, it is {top}" if top else "Confirm", interactive=top is not None, variant="secondary")
    return gr.update(choices=choices, value=None), confirm, gr.update(variant="primary"), hide_create


def new_label_question(check: dict[str, Any]) -> str:
    """Markdown asking before `check["label"]` becomes a new category, naming the near-duplicates
    among the known labels (`ClassifrService.check_new_label`); nothing is stored yet."""
    text = f"**Create the new category *{inert(check['label'])}*?** Nothing is stored until you confirm."
    if check["near"]:
        similar = ", ".join(f"*{inert(label)}*" for label in check["near"])
        text += f" Similar labels already exist: {similar}. Pick one of those instead if you meant it."
    return text


def storage_notice(service: ClassifrService, action: str = "Confirming or correcting stores this image") -> str:
    """Said next to every button that stores images: where they go, under which licence, what is
    removed (the wording is classifr.ui.privacy's)."""
    return contribution_note(service.settings, action)


def build_feedback_panel(service: ClassifrService, image: Component, payload: Component, predicted: Sequence[Any]) -> None:
    """The 'Is this right?' row under a prediction; `predicted`: the predict events to follow.

    The answer names the prediction shown (its id, in `payload`): no second prediction is made.
    Correct with a label that is not a known category first asks (`feedback-create` then stores);
    the `correct` API stores at once, as its caller asked (docs/api.md)."""
    callback = ProjectDatasetCallback(service)
    with gr.Group(elem_id="feedback"):
        gr.Markdown("### Is this right?")
        with gr.Row():
            label = gr.Dropdown(
                [NEW_CATEGORY, *service.label_choices()],
                value=None,
                label="The right label (type to search)",
                filterable=True,
                # Labels are checked by the dataset (named errors); API callers may name any label.
                allow_custom_value=True,
                elem_id="feedback-label",
            )
            new_name = gr.Textbox(label="New category name", visible=False, max_length=64, elem_id="feedback-new")
        with gr.Row():
            confirm = gr.Button("Confirm", variant="primary", interactive=False, elem_id="feedback-confirm")
            correct = gr.Button("Correct: store my label", elem_id="feedback-correct")
            create = gr.Button("Create it and store", variant="primary", visible=False, elem_id="feedback-create")
        gr.Markdown(storage_notice(service), elem_id="feedback-notice")
        outcome = gr.Markdown(elem_id="feedback-status")
    callback.setup([image, payload, label], str(service.settings.dataset_dir))

    def chosen(choice: str | None, typed: str | None) -> str | None:
        return typed if choice == NEW_CATEGORY else choice

    def flagged(flag_data: list[Any], flag_option: str, username: str | None) -> AddResult:
        stored: list[AddResult] = []
        total = callback.flag(flag_data, flag_option=flag_option, username=username, on_result=stored.append)
        logger.info("%s stored as %r; the project dataset has %d rows", flag_option, stored[0].label, total)
        return stored[0]

    @shows_errors
    def correct_fn(
        path: str | None, choice: str | None, typed: str | None, prediction: dict | None,
        request: gr.Request, profile: gr.OAuthProfile | None,
    ):
        result = flagged([path, prediction, chosen(choice, typed)], CORRECT, username_of(request, profile))
        return describe(result), result.to_json()

    @shows_errors
    def correct_or_ask(
        path: str | None, choice: str | None, typed: str | None, prediction: dict | None,
        request: gr.Request, profile: gr.OAuthProfile | None,
    ):
        answer = chosen(choice, typed)
        if not path:
            raise ClassifrError("there is no image to store: classify an image first")
        if not answer or answer == NEW_CATEGORY:
            raise ClassifrError("choose the right label, or type the name of the new category")
        check = service.check_new_label(answer)
        if check["existing"] is None:
            ask = gr.update(visible=True, value=f"Yes, create '{check['label']}' and store")
            return new_label_question(check), ask
        result = flagged([path, prediction, check["existing"]], CORRECT, username_of(request, profile))
        return describe(result), gr.update(visible=False)

    @shows_errors
    def confirm_fn(path: str | None, prediction: dict | None, request: gr.Request, profile: gr.OAuthProfile | None):
        return describe(flagged([path, prediction, None], CONFIRM, username_of(request, profile)))

    def created():
        return gr.update(visible=False), gr.update(choices=[NEW_CATEGORY, *service.label_choices()])

    for event in predicted:
        event.then(
            lambda p: choices_after(service, p), inputs=payload, outputs=[label, confirm, correct, create],
            api_visibility="undocumented",
        ).then(lambda: paused_notice(service), outputs=outcome, api_visibility="undocumented")  # "" unless paused
    image.clear(
        lambda: (gr.update(value=None), gr.update(value="Confirm", interactive=False, variant="primary"),
                 gr.update(variant="secondary"), gr.update(visible=False), ""),
        outputs=[label, confirm, correct, create, outcome], api_visibility="undocumented", queue=False,
    )
    # Another choice withdraws the question about creating the previous one.
    label.change(
        lambda c: (gr.update(visible=c == NEW_CATEGORY), gr.update(visible=False)), inputs=label,
        outputs=[new_name, create], api_visibility="undocumented",
    )
    new_name.change(lambda: gr.update(visible=False), outputs=create, api_visibility="undocumented", queue=False)
    hidden_result = gr.JSON(visible=False)
    teach = {"concurrency_limit": 2, "concurrency_id": "teach"}
    correct.click(
        correct_or_ask, inputs=[image, label, new_name, payload], outputs=[outcome, create],
        api_visibility="undocumented", **teach,
    )
    # The API's `correct` (docs/api.md): its caller names the label, so it stores at once.
    create.click(
        correct_fn, inputs=[image, label, new_name, payload], outputs=[outcome, hidden_result], api_name="correct", **teach
    ).success(created, outputs=[create, label], api_visibility="undocumented")
    confirm.click(confirm_fn, inputs=[image, payload], outputs=outcome, api_visibility="undocumented", **teach)
