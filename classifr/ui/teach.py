"""The Teach tab: create categories and add many example photos, with a thumbnail and an outcome per file.

A typed name that is not a category yet is never stored at once: the tab asks "Create the new
category 'X'?", names near-duplicates ("cowboy hat" for "hat"), and creates it only when the
contributor confirms (docs/features.md, "Teach"). The category lists are read again when the tab
is opened and after every action, so categories created since start-up are offered.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr

from classifr.app.service import ClassifrService
from classifr.core.text import escape_markdown as inert
from classifr.data.dataset import NEW_CATEGORY, AddResult
from classifr.ui.errors import shows_errors
from classifr.ui.feedback import storage_notice, username_of
from classifr.ui.storing import paused_notice

logger = logging.getLogger(__name__)

RESULT_COLUMNS = ["photo", "outcome", "category", "details"]
CATEGORY_COLUMNS = [
    "category", "status", "photos", "for training", "held out", "imported", "uploaded", "corrections", "confirmations",
]
OUTCOMES = {"added": "added", "duplicate": "already there", "rejected": "rejected"}
NO_QUESTION: dict[str, Any] = {"label": None, "then_add": False, "shown": []}


def result_rows(results: list[AddResult]) -> list[list[str]]:
    return [[r.name, OUTCOMES.get(r.status, r.status), r.label or "", _details(r)] for r in results]


def _details(result: AddResult) -> str:
    if result.status == "rejected":
        return result.reason or ""
    if result.status == "duplicate":
        return "this photo already has this category"
    return f"also labelled {', '.join(result.conflicts)}" if result.conflicts else ""


def summary(results: list[AddResult]) -> str:
    counts = {status: sum(r.status == status for r in results) for status in OUTCOMES}
    label = next((r.label for r in results if r.label), None)
    into = f" to *{inert(label)}*" if label else ""
    return (
        f"**{counts['added']} added**{into}, {counts['duplicate']} already there, "
        f"{counts['rejected']} rejected (see the reason per file)."
    )


def chosen_label(category: str | None, new_name: str | None) -> str:
    label = new_name if category == NEW_CATEGORY else category
    if not label or not label.strip():
        raise gr.Error("Choose a category, or choose 'New category…' and type its name.")
    return label


def new_category_question(check: dict[str, Any], *, photos: int = 0) -> str:
    """The question asked before a typed name becomes a category, with its near-duplicates."""
    label = inert(check["label"])
    then = f" and add the {photos} photo{'s' if photos != 1 else ''}" if photos else ""
    text = f"**Create the new category '{label}'{then}?** It is not a category yet; nothing was stored."
    if check["near"]:
        similar = ", ".join(f"'{inert(name)}'" for name in check["near"])
        text += f"\n\n⚠️ Similar categories exist: {similar}. Choose one of them instead if it is the same thing."
    return text


def make_add_examples(service: ClassifrService):
    @shows_errors
    def add_examples(
        files: list[str] | None, category: str | None, new_name: str | None, request: gr.Request,
        profile: gr.OAuthProfile | None, progress: gr.Progress = gr.Progress(),
    ):
        if not files:
            raise gr.Error("Drop one or more images first.")
        check = service.check_new_label(chosen_label(category, new_name))
        if check["existing"] is None:
            # Nothing is stored before the contributor confirms the new category.
            question = {"label": check["label"], "then_add": True, "shown": []}
            return [], new_category_question(check, photos=len(files)), gr.skip(), gr.skip(), question
        results = _add(service, files, check["existing"], request, profile, progress)
        return (result_rows(results), summary(results), *refresh_categories(service, selected=check["existing"]),
                {**NO_QUESTION, "shown": _shown(files, results)})

    return add_examples


def _add(service: ClassifrService, files: list[str], label: str, request: gr.Request, profile: gr.OAuthProfile | None,
         progress: gr.Progress) -> list[AddResult]:
    done: list[AddResult] = []

    def tick(result: AddResult) -> None:
        done.append(result)
        progress(len(done) / len(files), desc=f"{len(done)} of {len(files)} images")

    results = service.add_examples(
        files, label, contributor=username_of(request, profile), names=[Path(f).name for f in files], on_result=tick
    )
    logger.info("add_examples: %d files for %r", len(files), label)
    return results


def _shown(files: list[str], results: list[AddResult]) -> list[tuple[str, str]]:
    """(path, caption) of each file, for the thumbnails (an unreadable file gets none)."""
    return [(path, f"{OUTCOMES.get(r.status, r.status)}: {r.name}") for path, r in zip(files, results)]


def thumbnails(service: ClassifrService, shown: list[tuple[str, str]]) -> list[tuple[Any, str]]:
    pictures = [(service.thumbnail(path), caption) for path, caption in shown]
    return [(picture, caption) for picture, caption in pictures if picture is not None]


def category_rows(service: ClassifrService) -> list[list]:
    rows = []
    for c in service.categories():
        sources = [c.by_source.get(s, 0) for s in ("import", "upload", "correction", "confirmation")]
        status = "pending" if c.pending else "known"
        # Held out as training holds out (classifr.data.split), not the rows' hash share.
        rows.append([c.name, status, c.total, c.total - c.held_out, c.held_out, *sources])
    return rows


def refresh_categories(service: ClassifrService, selected: str | None = None):
    """The categories table and the category choice, refreshed (a new category is usable at once)."""
    choices = [NEW_CATEGORY, *service.label_choices()]
    update = gr.update(choices=choices) if selected is None else gr.update(choices=choices, value=selected)
    return category_rows(service), update


def make_ask_create(service: ClassifrService):
    @shows_errors
    def ask_create(name: str | None):
        """The Create button: the question first, or the existing category selected."""
        check = service.check_new_label(name or "")
        if check["existing"] is not None:
            rows, choice = refresh_categories(service, selected=check["existing"])
            return f"*{inert(check['existing'])}* is already a category: it is selected.", rows, choice, NO_QUESTION
        return new_category_question(check), gr.skip(), gr.skip(), {"label": check["label"], "then_add": False, "shown": []}

    return ask_create


def make_create_category(service: ClassifrService):
    @shows_errors
    def create_category(name: str | None, request: gr.Request, profile: gr.OAuthProfile | None):
        category = service.create_category(name or "", contributor=username_of(request, profile))
        rows, choice = refresh_categories(service, selected=category.name)
        return f"Created the category *{inert(category.name)}*; it is pending until a model version learns it.", rows, choice

    return create_category


def make_add_after_create(service: ClassifrService):
    @shows_errors
    def add_after_create(
        question: dict[str, Any], files: list[str] | None, name: str | None, request: gr.Request,
        profile: gr.OAuthProfile | None, progress: gr.Progress = gr.Progress(),
    ):
        """After "Yes, create it" from the Add button: the files go into the category just created."""
        if not (question or {}).get("then_add") or not files:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), NO_QUESTION
        results = _add(service, files, name or "", request, profile, progress)
        return (result_rows(results), summary(results), *refresh_categories(service, selected=name),
                {**NO_QUESTION, "shown": _shown(files, results)})

    return add_after_create


def make_show_outcome(service: ClassifrService):
    def show_outcome(question: dict[str, Any]):
        """The confirmation box while a question is open; else the thumbnails, and an empty uploader."""
        question = question or NO_QUESTION
        if question["label"] is not None:
            return gr.update(visible=True), question["label"], gr.skip(), gr.skip()
        if not question["shown"]:
            return gr.update(visible=False), "", gr.skip(), gr.skip()
        return gr.update(visible=False), "", gr.update(value=thumbnails(service, question["shown"]), visible=True), None

    return show_outcome


def sync_status(service: ClassifrService) -> str:
    """One line on the Hub dataset sync, for maintainers: where, when last pushed, the last error."""
    status = service.sync_status()
    if status is None:
        return "The project dataset is kept locally (set CLASSIFR_DATASET_REPO to push it to the Hub)."
    text = f"Pushed to the Hub dataset `{status['repo_id']}` every {status['every_minutes']:g} minutes"
    text += f"; last push {status['last_push_at']}." if status["last_push_at"] else "; nothing pushed yet."
    if status["last_error"]:
        text += f" **Last push failed** ({status['last_error_at']}): {inert(status['last_error'])}"
    return text


def build_teach_tab(service: ClassifrService, demo: gr.Blocks, tab: gr.Tab | None = None) -> None:
    """The tab's components and events; `tab`: the Teach tab, whose selection refreshes the categories."""
    gr.Markdown(
        "Teach the model a category: choose one (or type a new name), drop example photos of it, "
        "and add them. Each photo is checked; duplicates and unreadable files are reported per file."
    )
    with gr.Row():
        with gr.Column():
            category = gr.Dropdown(
                [NEW_CATEGORY, *service.label_choices()], value=None, label="Category (type to search)",
                filterable=True, allow_custom_value=True, elem_id="teach-category",
            )
            new_name = gr.Textbox(label="New category name", max_length=64, visible=False, elem_id="teach-new-name")
            create = gr.Button("Create category", visible=False, elem_id="teach-create")
            # No file_types filter: every dropped file gets a result row, with the reason when refused.
            files = gr.File(label="Example photos", file_count="multiple", elem_id="teach-files")
            add = gr.Button("Add to the dataset", variant="primary", elem_id="teach-add")
            gr.Markdown(storage_notice(service, "Adding stores these images"))
            paused = gr.Markdown(elem_id="teach-storage")
        with gr.Column():
            status = gr.Markdown(elem_id="teach-status")
            with gr.Group(visible=False, elem_id="teach-confirm") as confirm_box:
                confirm_name = gr.Textbox(label="New category", interactive=False, elem_id="teach-confirm-name")
                with gr.Row():
                    confirm = gr.Button("Yes, create it", variant="primary", elem_id="teach-confirm-yes")
                    cancel = gr.Button("No", elem_id="teach-confirm-no")
            # Small tiles, as many per row as fit: a gallery stretches few photos to its whole width otherwise.
            thumbs = gr.Gallery(
                label="The photos of the last upload", columns=5, fit_columns=False, height=240, object_fit="contain",
                visible=False, elem_id="teach-thumbnails",
            )
            results = gr.Dataframe(
                headers=RESULT_COLUMNS, label="Per file", interactive=False, wrap=True,
                column_widths=["35%", "15%", "20%", "30%"], elem_id="teach-results",
            )
    gr.Markdown(
        "**Project categories.** *Pending*: the serving model does not know the category yet; retraining adds it. "
        "*Held out*: photos kept aside to measure the next trained version, never learned from."
    )
    categories = gr.Dataframe(
        headers=CATEGORY_COLUMNS, label="Project categories", interactive=False, wrap=True, elem_id="teach-categories",
    )
    question = gr.State(NO_QUESTION)
    hidden = dict(api_visibility="undocumented")
    close_question = (lambda: (gr.update(visible=False), NO_QUESTION))
    category.change(
        lambda c: (gr.update(visible=c == NEW_CATEGORY), gr.update(visible=c == NEW_CATEGORY)),
        inputs=category, outputs=[new_name, create], **hidden,
    )
    # Only the contributor's own edits close an open question: .change also fires on the updates below.
    category.input(close_question, outputs=[confirm_box, question], **hidden)
    new_name.input(close_question, outputs=[confirm_box, question], **hidden)
    teach = dict(concurrency_limit=1, concurrency_id="teach-uploads")
    show_outcome = make_show_outcome(service)
    outcome = dict(inputs=question, outputs=[confirm_box, confirm_name, thumbs, files], **hidden)
    add.click(
        make_add_examples(service), inputs=[files, category, new_name], outputs=[results, status, categories, category, question],
        api_name="add_examples", **teach,
    ).then(show_outcome, **outcome).then(lambda: paused_notice(service), outputs=paused, **hidden)
    create.click(make_ask_create(service), inputs=new_name, outputs=[status, categories, category, question], **hidden).then(
        show_outcome, **outcome
    )
    # The API's create_category is the confirmation itself: its caller named the category on purpose.
    confirm.click(
        make_create_category(service), inputs=confirm_name, outputs=[status, categories, category],
        api_name="create_category", **teach,
    ).success(
        make_add_after_create(service), inputs=[question, files, confirm_name],
        outputs=[results, status, categories, category, question], **teach, **hidden,
    ).then(show_outcome, **outcome).then(lambda: paused_notice(service), outputs=paused, **hidden)
    cancel.click(lambda: ("Nothing was created.", gr.update(visible=False), NO_QUESTION),
                 outputs=[status, confirm_box, question], **hidden)
    sync = gr.Markdown(elem_id="teach-sync")
    demo.load(lambda: refresh_categories(service), outputs=[categories, category], **hidden)
    if tab is not None:
        tab.select(lambda: refresh_categories(service), outputs=[categories, category], **hidden)
    demo.load(lambda: sync_status(service), outputs=sync, **hidden)
    demo.load(lambda: paused_notice(service), outputs=paused, **hidden)
